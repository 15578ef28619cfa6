// The records a send or an ack reads, kept in memory once written or read:
// a conversation's record (c), a device's cursor (k), a user's ack mark
// (a).  Without it each such read walks LevelDB's memtable and, once the
// record has been flushed, its tables.
//
// Bounded in bytes, in two generations of half the bound each: entries
// go into the young one; when it is full it becomes the old one and the
// old one is dropped; an entry found in the old one moves to the young.
// What is read often stays, and nothing is scanned to evict.
//
// The cache holds what the database holds: Store puts a batch's records
// in only once the batch is written, and empties it whenever the database
// is opened, closed or fails to write.  Not thread-safe.
#ifndef NATTER_DAEMONS_STORED_RECORD_CACHE_H_
#define NATTER_DAEMONS_STORED_RECORD_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace natter {
namespace stored {

class RecordCache {
 public:
  // What an entry costs besides its key and value (the map's node).
  static constexpr size_t kEntryOverhead = 64;

  explicit RecordCache(size_t max_bytes) : max_bytes_(max_bytes) {}

  // Whether key is a record this cache keeps (by its prefix).
  static bool Keeps(const std::string& key);
  // The value, or false if it is not here.
  bool Get(const std::string& key, std::string* value);
  void Put(const std::string& key, const std::string& value);
  void Clear();

  size_t bytes() const { return young_bytes_ + old_bytes_; }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }

 private:
  using Map = std::unordered_map<std::string, std::string>;
  static size_t Cost(const std::string& key, const std::string& value) {
    return key.size() + value.size() + kEntryOverhead;
  }

  size_t max_bytes_;
  Map young_, old_;
  size_t young_bytes_ = 0, old_bytes_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_RECORD_CACHE_H_
