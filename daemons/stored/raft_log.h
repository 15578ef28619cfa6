// A replica's Raft log on disk: append-only segment files in its folder
// (data-dir/raft), the way etcd's WAL is.  It holds the hard state (term,
// vote, commit), the meta of the last snapshot the log starts after, and
// the entries after it.  Every Save is one write and one fdatasync: what
// a Ready says is on disk before any of its messages go (raft.h).  Each
// entry is written once and never read back while the daemon runs (the
// node keeps its entries in memory).
//
// A segment, "<16 hex digits>.wal", is a run of frames: a u32 payload
// length and the payload's SipHash-2-4 (key all zero), both
// little-endian, then the payload, MessagePack arrays each led by its
// kind (raft_log.cc).  A segment starts with the whole state but the
// entries as it was when the segment began, so the oldest segments can go
// once compaction has passed all their entries.  A frame cut short at the
// end of the newest segment (a crash in the middle of its write, which
// was never acknowledged) is cut off at the next start; a damaged frame
// anywhere else refuses the start.
//
// A log kept in LevelDB (what stored wrote before) is converted at Open.
#ifndef NATTER_DAEMONS_STORED_RAFT_LOG_H_
#define NATTER_DAEMONS_STORED_RAFT_LOG_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <msgpack.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "daemons/stored/raft.h"

namespace natter {
namespace stored {

class RaftLog {
 public:
  // A new segment begins when the newest passes this many bytes.
  static constexpr uint64_t kSegmentBytes = 32 << 20;

  // Opens (or makes) the log in folder path and reads it back.  A log
  // that cannot be read whole is a kStorage error naming what is wrong.
  static Status Open(const std::string& path, std::unique_ptr<RaftLog>* out,
                     uint64_t segment_bytes = kSegmentBytes);
  ~RaftLog();
  RaftLog(const RaftLog&) = delete;
  RaftLog& operator=(const RaftLog&) = delete;

  // What the node restarts from.
  const raft::Restored& restored() const { return restored_; }

  // A Ready's hard state, snapshot meta and entries, in one synced write.
  // With a snapshot, every entry on disk goes first; entries replace any
  // from their first index on.  A hard state whose term and vote are what
  // the disk has is written only with entries: its commit alone is not
  // worth a sync (a restarted replica learns the commit again).
  Status Save(const raft::Ready& ready);

  // Entries up to meta.index leave the log: the state machine holds them
  // (synced) in a snapshot at meta.  Segments with nothing newer go.
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
  // Segment files on disk.
  size_t segments() const { return segments_.size(); }

 private:
  struct Segment {
    uint64_t seq = 0;
    uint64_t max_index = 0;  // no entry in it is newer (0: none is live)
  };

  struct Loading;

  RaftLog(const std::string& path, uint64_t segment_bytes)
      : path_(path), segment_bytes_(segment_bytes) {}
  Status Lock();
  Status Load();
  Status Fence();
  Status ReadSegment(size_t k, bool newest, Loading* state);
  Status StartSegment(uint64_t seq, const std::vector<raft::Entry>& entries);
  Status OpenNewest();
  Status WriteFrame();
  Status DropSegments();
  std::string SegmentPath(uint64_t seq) const;
  void PackHardState(const raft::HardState& h);
  void PackSnapshot(uint8_t kind, const raft::SnapshotMeta& m);

  std::string path_;
  uint64_t segment_bytes_;
  int lock_fd_ = -1;
  int fd_ = -1;        // the newest segment, open for appending
  uint64_t size_ = 0;  // its bytes
  std::deque<Segment> segments_;
  msgpack::sbuffer frame_;
  bool failed_ = false;  // a write failed: the tail is not known good

  raft::Restored restored_;
  raft::SnapshotMeta snapshot_;
  uint64_t last_ = 0;
  uint64_t bytes_ = 0;
  uint64_t syncs_ = 0;
  bool joining_ = false;
  raft::HardState saved_;  // as on disk
};

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_RAFT_LOG_H_
