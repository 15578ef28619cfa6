#include "daemons/stored/raft_log.h"

#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <leveldb/write_batch.h>

#include <vector>

#include "common/endian.h"
#include "common/proto.h"
#include "common/wire.h"
#include "daemons/stored/store.h"

namespace natter {
namespace stored {
namespace {

const char kHardStateKey[] = "h";
const char kSnapshotKey[] = "s";
const char kJoiningKey[] = "j";
const char kEntryPrefix = 'e';

struct DiskHardState {
  uint64_t term = 0;
  uint64_t vote = 0;
  uint64_t commit = 0;
  NATTER_WIRE(3, term, vote, commit)
};

struct DiskSnapshot {
  uint64_t index = 0;
  uint64_t term = 0;
  std::vector<uint64_t> voters;
  NATTER_WIRE(3, index, term, voters)
};

template <typename T>
std::string Pack(const T& value) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, value);
  return std::string(buf.data(), buf.size());
}

std::string EntryKey(uint64_t index) {
  std::string key(1, kEntryPrefix);
  PutBigEndian(&key, index);
  return key;
}

Status Storage(const std::string& what, const leveldb::Status& s) {
  return Status(ErrorCode::kStorage,
                "the raft log: " + what + ": " + s.ToString());
}

}  // namespace

std::string EncodeEntry(const raft::Entry& e) {
  return Pack(RaftEntry{e.term, e.index, static_cast<uint8_t>(e.type), e.data});
}

bool DecodeEntry(const std::string& bytes, raft::Entry* e) {
  RaftEntry d;
  if (!UnpackValue(bytes, &d) ||
      d.type > static_cast<uint8_t>(raft::EntryType::kNoop)) {
    return false;
  }
  e->term = d.term;
  e->index = d.index;
  e->type = static_cast<raft::EntryType>(d.type);
  e->data = std::move(d.data);
  return true;
}

Status RaftLog::Open(const std::string& path, std::unique_ptr<RaftLog>* out) {
  std::unique_ptr<RaftLog> log(new RaftLog());
  leveldb::Options options;
  options.create_if_missing = true;
  options.compression = leveldb::kNoCompression;
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, path, &raw);
  if (!s.ok()) return Storage(path, s);
  log->db_.reset(raw);
  Status ls = log->Load();
  if (!ls.ok()) return ls;
  *out = std::move(log);
  return Status::Ok();
}

Status RaftLog::Load() {
  std::string value;
  leveldb::Status s = db_->Get({}, kHardStateKey, &value);
  if (s.ok()) {
    DiskHardState h;
    if (!UnpackValue(value, &h)) {
      return Status(ErrorCode::kStorage,
                    "the raft log: its hard state cannot be read");
    }
    restored_.hard_state = {h.term, h.vote, h.commit};
    saved_ = restored_.hard_state;
  } else if (!s.IsNotFound()) {
    return Storage("reading the hard state", s);
  }
  s = db_->Get({}, kSnapshotKey, &value);
  if (s.ok()) {
    DiskSnapshot d;
    if (!UnpackValue(value, &d)) {
      return Status(ErrorCode::kStorage,
                    "the raft log: its snapshot meta cannot be read");
    }
    snapshot_ = {d.index, d.term, d.voters};
  } else if (!s.IsNotFound()) {
    return Storage("reading the snapshot meta", s);
  }
  restored_.snapshot = snapshot_;
  last_ = snapshot_.index;
  s = db_->Get({}, kJoiningKey, &value);
  if (!s.ok() && !s.IsNotFound()) return Storage("reading the join mark", s);
  joining_ = s.ok();
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  for (it->Seek(std::string(1, kEntryPrefix));
       it->Valid() && it->key()[0] == kEntryPrefix; it->Next()) {
    raft::Entry e;
    if (!DecodeEntry(it->value().ToString(), &e)) {
      return Status(ErrorCode::kStorage,
                    "the raft log: an entry cannot be read");
    }
    if (e.index <= snapshot_.index) continue;  // left by a compaction cut short
    if (e.index != last_ + 1) {
      return Status(
          ErrorCode::kStorage,
          "the raft log: entry " + std::to_string(last_ + 1) + " is missing");
    }
    last_ = e.index;
    bytes_ += it->value().size();
    restored_.entries.push_back(std::move(e));
  }
  if (!it->status().ok()) return Storage("reading the entries", it->status());
  return Status::Ok();
}

Status RaftLog::MarkJoining() {
  leveldb::WriteBatch batch;
  batch.Put(kJoiningKey, "");
  Status s = Write(&batch);
  if (s.ok()) joining_ = true;
  return s;
}

Status RaftLog::Write(leveldb::WriteBatch* batch) {
  leveldb::WriteOptions synced;
  synced.sync = true;
  leveldb::Status s = db_->Write(synced, batch);
  if (!s.ok()) return Storage("writing", s);
  ++syncs_;
  return Status::Ok();
}

Status RaftLog::Save(const raft::Ready& ready) {
  bool vote_changed =
      ready.hard_state && (ready.hard_state->term != saved_.term ||
                           ready.hard_state->vote != saved_.vote);
  if (!vote_changed && !ready.snapshot && ready.entries.empty()) {
    return Status::Ok();
  }
  leveldb::WriteBatch batch;
  uint64_t last = last_;
  uint64_t bytes = bytes_;
  if (ready.snapshot) {
    for (uint64_t i = snapshot_.index + 1; i <= last; ++i)
      batch.Delete(EntryKey(i));
    const raft::SnapshotMeta& m = *ready.snapshot;
    batch.Put(kSnapshotKey, Pack(DiskSnapshot{m.index, m.term, m.voters}));
    last = m.index;
    bytes = 0;
  }
  if (!ready.entries.empty()) {
    uint64_t first = ready.entries.front().index;
    for (uint64_t i = first; i <= last; ++i) batch.Delete(EntryKey(i));
    for (const raft::Entry& e : ready.entries) {
      std::string v = EncodeEntry(e);
      bytes += v.size();
      batch.Put(EntryKey(e.index), v);
    }
    last = ready.entries.back().index;
  }
  if (ready.hard_state) {
    const raft::HardState& h = *ready.hard_state;
    batch.Put(kHardStateKey, Pack(DiskHardState{h.term, h.vote, h.commit}));
  }
  Status s = Write(&batch);
  if (!s.ok()) return s;
  if (ready.snapshot) snapshot_ = *ready.snapshot;
  if (ready.hard_state) saved_ = *ready.hard_state;
  last_ = last;
  bytes_ = bytes;
  return Status::Ok();
}

Status RaftLog::Compact(const raft::SnapshotMeta& meta) {
  if (meta.index <= snapshot_.index) return Status::Ok();
  leveldb::WriteBatch batch;
  batch.Put(kSnapshotKey,
            Pack(DiskSnapshot{meta.index, meta.term, meta.voters}));
  for (uint64_t i = snapshot_.index + 1; i <= meta.index && i <= last_; ++i) {
    batch.Delete(EntryKey(i));
  }
  Status s = Write(&batch);
  if (!s.ok()) return s;
  // The bytes left, about: in proportion to the entries left.
  uint64_t before = last_ - snapshot_.index;
  uint64_t left = last_ > meta.index ? last_ - meta.index : 0;
  bytes_ = before > 0 ? bytes_ * left / before : 0;
  snapshot_ = meta;
  if (last_ < meta.index) last_ = meta.index;
  return Status::Ok();
}

}  // namespace stored
}  // namespace natter
