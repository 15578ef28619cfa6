#include "daemons/stored/disk.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace natter {
namespace stored {

Status SyncFolder(const std::string& dir) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  bool ok = dfd >= 0 && ::fsync(dfd) == 0;
  const int error = errno;
  if (dfd >= 0) ::close(dfd);
  return ok ? Status::Ok()
            : Status(ErrorCode::kStorage, dir + ": " + std::strerror(error));
}

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool SyncData(int fd) {
  int r;
  while ((r = ::fdatasync(fd)) != 0 && errno == EINTR) {
  }
  return r == 0;
}

}  // namespace stored
}  // namespace natter
