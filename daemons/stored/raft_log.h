// A replica's Raft log on disk: its own LevelDB (data-dir/raft), beside the
// shard's.  It holds the hard state (term, vote, commit), the meta of the
// last snapshot the log starts after, and the entries after it.  Every
// Save is one synced write: what a Ready says is on disk before any of
// its messages go (raft.h).
//
// Keys: "h" the hard state, "s" the snapshot meta, "e" + be64(index) an
// entry; values are MessagePack arrays.  "j" (empty): the replica joined a
// running shard, so it has no voters of its own until its leader's.
#ifndef NATTER_DAEMONS_STORED_RAFT_LOG_H_
#define NATTER_DAEMONS_STORED_RAFT_LOG_H_

#include <leveldb/db.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "daemons/stored/raft.h"

namespace natter {
namespace stored {

class RaftLog {
 public:
  // Opens (or makes) the log in folder path and reads it back.  A log
  // that cannot be read whole is a kStorage error naming what is wrong.
  static Status Open(const std::string& path, std::unique_ptr<RaftLog>* out);

  // What the node restarts from.
  const raft::Restored& restored() const { return restored_; }

  // A Ready's hard state, snapshot meta and entries, in one synced write.
  // With a snapshot, every entry on disk goes first; entries replace any
  // from their first index on.  A hard state whose term and vote are what
  // the disk has is written only with entries: its commit alone is not
  // worth a sync (a restarted replica learns the commit again).
  Status Save(const raft::Ready& ready);

  // Entries up to meta.index leave the log: the state machine holds them
  // (synced) in a snapshot at meta.
  Status Compact(const raft::SnapshotMeta& meta);

  // Marks the replica as one joining a running shard (synced): from then
  // on it never takes the shard map's replicas for its voters, even when
  // started without --join.
  Status MarkJoining();
  bool joining() const { return joining_; }

  uint64_t first_index() const { return snapshot_.index + 1; }
  uint64_t last_index() const { return last_; }
  // Bytes of entries on disk, about.
  uint64_t bytes() const { return bytes_; }
  // Synced writes, ever.
  uint64_t syncs() const { return syncs_; }

 private:
  RaftLog() = default;
  Status Load();
  Status Write(leveldb::WriteBatch* batch);

  std::unique_ptr<leveldb::DB> db_;
  raft::Restored restored_;
  raft::SnapshotMeta snapshot_;
  uint64_t last_ = 0;
  uint64_t bytes_ = 0;
  uint64_t syncs_ = 0;
  bool joining_ = false;
  raft::HardState saved_;  // as on disk
};

// An entry's value on disk, and back: a RaftEntry (common/proto.h), the
// form entries travel in between replicas too.
std::string EncodeEntry(const raft::Entry& e);
bool DecodeEntry(const std::string& bytes, raft::Entry* e);

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_RAFT_LOG_H_
