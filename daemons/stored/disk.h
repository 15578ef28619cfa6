// Small steps on files that stored makes durable itself (the Raft log's
// segments, the marks of a database swap).
#ifndef NATTER_DAEMONS_STORED_DISK_H_
#define NATTER_DAEMONS_STORED_DISK_H_

#include <cstddef>
#include <string>

#include "common/status.h"

namespace natter {
namespace stored {

// Makes the names in a folder durable (files made, moved or removed).
Status SyncFolder(const std::string& dir);

// Writes all of data to fd (a short write or EINTR goes on); false, with
// errno set, when it cannot.
bool WriteAll(int fd, const char* data, size_t size);

// fdatasync, again after EINTR; false, with errno set, when it fails.
bool SyncData(int fd);

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_DISK_H_
