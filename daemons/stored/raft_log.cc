#include "daemons/stored/raft_log.h"

#include <fcntl.h>
#include <leveldb/db.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <vector>

#include "common/log.h"
#include "common/proto.h"
#include "daemons/stored/disk.h"
#include "daemons/stored/store.h"

namespace natter {
namespace stored {
namespace {

// A frame's records: MessagePack arrays led by their kind.
//   kStart     [0, term, vote, commit, snap_index, snap_term, voters, joining]
//              first in every segment: the state but the entries
//   kHardState [1, term, vote, commit]
//   kReset     [2, index, term, voters]  a snapshot: every entry goes
//   kCompact   [3, index, term, voters]  entries up to index go
//   kEntry     [4, index, term, type, data]  replaces any from index on
//   kJoining   [5]
enum Kind : uint8_t {
  kStart = 0,
  kHardState = 1,
  kReset = 2,
  kCompact = 3,
  kEntry = 4,
  kJoining = 5,
};

constexpr size_t kHeaderBytes = 4 + crypto_shorthash_BYTES;
// The conversion from LevelDB writes its entries in frames of about this.
constexpr size_t kConvertFrameBytes = 4 << 20;
const unsigned char kChecksumKey[crypto_shorthash_KEYBYTES] = {0};

void Checksum(const char* data, size_t size, unsigned char* out) {
  crypto_shorthash(out, reinterpret_cast<const unsigned char*>(data), size,
                   kChecksumKey);
}

Status Storage(const std::string& what) {
  return Status(ErrorCode::kStorage, "the raft log: " + what);
}

Status Errno(const std::string& what) {
  return Storage(what + ": " + std::strerror(errno));
}

// The kind and fields of a record, read strictly.
struct Record {
  explicit Record(const msgpack::object& o) {
    if (o.type != msgpack::type::ARRAY || o.via.array.size < 1)
      throw msgpack::type_error();
    fields = o.via.array.ptr;
    size = o.via.array.size;
    kind = fields[0].as<uint8_t>();
  }
  template <typename T>
  T At(uint32_t i) const {
    if (i >= size) throw msgpack::type_error();
    return fields[i].as<T>();
  }
  raft::SnapshotMeta Snapshot(uint32_t at) const {
    return {At<uint64_t>(at), At<uint64_t>(at + 1),
            At<std::vector<raft::NodeId>>(at + 2)};
  }
  const msgpack::object* fields;
  uint32_t size;
  uint8_t kind;
};

bool ParseSegmentName(const std::string& name, uint64_t* seq) {
  if (name.size() != 20 || name.compare(16, 4, ".wal") != 0) return false;
  for (size_t i = 0; i < 16; ++i) {
    const char c = name[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  *seq = std::stoull(name.substr(0, 16), nullptr, 16);
  return true;
}

void BeginFrame(msgpack::sbuffer* buf) {
  buf->clear();
  static const char kBlank[kHeaderBytes] = {};
  buf->write(kBlank, kHeaderBytes);
}

// Fills the header in; false if the payload is too large for one.
bool SealFrame(msgpack::sbuffer* buf) {
  const size_t size = buf->size() - kHeaderBytes;
  if (size > UINT32_MAX) return false;
  char* p = buf->data();
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(size >> (8 * i));
  Checksum(p + kHeaderBytes, size, reinterpret_cast<unsigned char*>(p + 4));
  return true;
}

void PackEntry(msgpack::sbuffer* buf, const raft::Entry& e) {
  msgpack::packer<msgpack::sbuffer> pk(*buf);
  pk.pack_array(5);
  pk.pack(static_cast<uint8_t>(kEntry));
  pk.pack(e.index);
  pk.pack(e.term);
  pk.pack(static_cast<uint8_t>(e.type));
  pk.pack_bin(static_cast<uint32_t>(e.data.size()));
  pk.pack_bin_body(e.data.data(), static_cast<uint32_t>(e.data.size()));
}

// About what an entry costs on disk.
uint64_t EntryBytes(const raft::Entry& e) { return e.data.size() + 24; }

uint32_t FrameSize(const char* p) {
  uint32_t size = 0;
  for (int i = 0; i < 4; ++i)
    size |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return size;
}

// Whether a frame that checks out begins anywhere after `at`.  Only one
// write is ever in flight, so the tail a crash cut short has none after
// it (its pages may have reached the disk in any order, zeros or not);
// damage in the middle of a segment has.  The checksum is tried only
// where a record could begin: an array of 1 to 8, a kind of 0 to 5.
bool GoodFrameAfter(const std::string& bytes, size_t at) {
  for (size_t p = at + 1; p + kHeaderBytes + 2 <= bytes.size(); ++p) {
    const uint32_t size = FrameSize(&bytes[p]);
    const auto lead = static_cast<unsigned char>(bytes[p + kHeaderBytes]);
    const auto kind = static_cast<unsigned char>(bytes[p + kHeaderBytes + 1]);
    if (size < 2 || size > bytes.size() - p - kHeaderBytes || lead < 0x91 ||
        lead > 0x98 || kind > kJoining) {
      continue;
    }
    unsigned char sum[crypto_shorthash_BYTES];
    Checksum(&bytes[p + kHeaderBytes], size, sum);
    if (std::memcmp(sum, &bytes[p + 4], sizeof sum) == 0) return true;
  }
  return false;
}

// Cuts a segment's torn tail off, durably; the bytes cut are kept first
// beside it in NAME.AT.cut, to look at.
Status CutTail(const std::string& file, const std::string& bytes, size_t at) {
  const std::string kept = file + "." + std::to_string(at) + ".cut";
  int out =
      ::open(kept.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) return Errno(kept);
  bool saved =
      WriteAll(out, bytes.data() + at, bytes.size() - at) && SyncData(out);
  const int why = errno;
  ::close(out);
  if (!saved) {
    errno = why;
    return Errno(kept);
  }
  int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Errno(file);
  bool ok = ::ftruncate(fd, static_cast<off_t>(at)) == 0 && ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!ok) {
    errno = error;
    return Errno(file);
  }
  NLOG_WARN("event=raft-log-tail-cut file=%s at=%zu bytes=%zu", file.c_str(),
            at, bytes.size() - at);
  return Status::Ok();
}

}  // namespace

// What a log read so far says: the state of its records, in order.
struct RaftLog::Loading {
  raft::HardState hard;
  raft::SnapshotMeta snapshot;
  bool joining = false;
  bool started = false;
  std::deque<raft::Entry> entries;
};

namespace {

// A log kept in LevelDB by the stored of before: "h" the hard state, "s"
// the snapshot meta, "j" the join mark, "e" + be64(index) an entry.
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

// What a LevelDB log of before holds.
struct LevelDbLog {
  raft::HardState hard;
  raft::SnapshotMeta snapshot;
  bool joining = false;
  std::vector<raft::Entry> entries;
};

// The logs of this process whose failed write could not be cut back off
// their segment: the frame may sit whole in the page cache, and a
// RaftLog opened again would take it for synced.
std::set<std::string>& Poisoned() {
  static std::set<std::string> paths;
  return paths;
}

Status ReadLevelDb(const std::string& path, raft::HardState* hard,
                   raft::SnapshotMeta* snapshot, bool* joining,
                   std::vector<raft::Entry>* entries) {
  leveldb::Options options;
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, path, &raw);
  if (!s.ok()) return Storage("its LevelDB: " + s.ToString());
  std::unique_ptr<leveldb::DB> db(raw);
  std::string value;
  s = db->Get({}, "h", &value);
  if (s.ok()) {
    DiskHardState h;
    if (!UnpackValue(value, &h))
      return Storage("its hard state cannot be read");
    *hard = {h.term, h.vote, h.commit};
  } else if (!s.IsNotFound()) {
    return Storage("reading the hard state: " + s.ToString());
  }
  s = db->Get({}, "s", &value);
  if (s.ok()) {
    DiskSnapshot d;
    if (!UnpackValue(value, &d))
      return Storage("its snapshot meta cannot be read");
    *snapshot = {d.index, d.term, d.voters};
  } else if (!s.IsNotFound()) {
    return Storage("reading the snapshot meta: " + s.ToString());
  }
  s = db->Get({}, "j", &value);
  if (!s.ok() && !s.IsNotFound())
    return Storage("reading the join mark: " + s.ToString());
  *joining = s.ok();
  std::unique_ptr<leveldb::Iterator> it(db->NewIterator({}));
  for (it->Seek("e"); it->Valid() && it->key()[0] == 'e'; it->Next()) {
    RaftEntry d;
    if (!UnpackValue(it->value().ToString(), &d) ||
        d.type > static_cast<uint8_t>(raft::EntryType::kNoop)) {
      return Storage("an entry cannot be read");
    }
    if (d.index <= snapshot->index) continue;  // a compaction cut short
    entries->push_back({d.term, d.index, static_cast<raft::EntryType>(d.type),
                        std::move(d.data)});
  }
  if (!it->status().ok())
    return Storage("reading the entries: " + it->status().ToString());
  return Status::Ok();
}

}  // namespace

RaftLog::~RaftLog() {
  if (fd_ >= 0) ::close(fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::string RaftLog::SegmentPath(uint64_t seq) const {
  char name[32];
  std::snprintf(name, sizeof name, "/%016" PRIx64 ".wal", seq);
  return path_ + name;
}

Status RaftLog::Open(const std::string& path, std::unique_ptr<RaftLog>* out,
                     uint64_t segment_bytes) {
  if (Poisoned().count(path) != 0) {
    return Storage(path +
                   ": a write failed and could not be cut back; check the "
                   "disk, then restart natter-stored");
  }
  std::unique_ptr<RaftLog> log(new RaftLog(path, segment_bytes));
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Storage(path + ": " + ec.message());
  Status s = log->Lock();
  if (s.ok()) s = log->Load();
  if (!s.ok()) return s;
  *out = std::move(log);
  return Status::Ok();
}

// One stored a log: a second would write over the first's tail.
Status RaftLog::Lock() {
  const std::string lock = path_ + "/wal.lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return Errno(lock);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return errno == EWOULDBLOCK
               ? Storage(path_ + " is in use by another natter-stored")
               : Errno(lock);
  }
  return Status::Ok();
}

Status RaftLog::Load() {
  namespace fs = std::filesystem;
  std::vector<uint64_t> seqs;
  std::error_code ec;
  fs::directory_iterator it(path_, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename();
    uint64_t seq = 0;
    if (ParseSegmentName(name, &seq)) {
      seqs.push_back(seq);
    } else if (name.size() > 8 &&
               name.compare(name.size() - 8, 8, ".wal.tmp") == 0) {
      std::error_code gone;
      fs::remove(it->path(), gone);  // a segment never begun
    }
  }
  if (ec) return Storage(path_ + ": " + ec.message());
  std::sort(seqs.begin(), seqs.end());

  // CURRENT: a LevelDB's (a file), from the stored of before; or the
  // fence this log puts there (a folder), see Fence.
  const std::string current = path_ + "/CURRENT";
  struct stat st;
  const bool has_current = ::stat(current.c_str(), &st) == 0;
  const bool leveldb = has_current && S_ISREG(st.st_mode);
  const bool fenced = has_current && S_ISDIR(st.st_mode);
  Status s = Status::Ok();
  std::optional<LevelDbLog> old;
  if (leveldb) {
    old.emplace();
    s = ReadLevelDb(path_, &old->hard, &old->snapshot, &old->joining,
                    &old->entries);
    if (!s.ok()) return s;
  }
  if (seqs.empty() && fenced) {
    return Storage(path_ + " has lost its segment files");
  }
  if (seqs.empty()) {
    // A new log, or the LevelDB's, converted: segment 1.
    if (old) {
      saved_ = old->hard;
      snapshot_ = old->snapshot;
      joining_ = old->joining;
    }
    s = StartSegment(1, old ? old->entries : std::vector<raft::Entry>{});
    if (!s.ok()) return s;
    if (!old) {
      restored_.snapshot = snapshot_;
      return Fence();
    }
    NLOG_INFO("event=raft-log-converted path=%s entries=%zu", path_.c_str(),
              old->entries.size());
    ::close(fd_);
    fd_ = -1;
    segments_.clear();
    saved_ = {};
    snapshot_ = {};
    joining_ = false;
    seqs.push_back(1);
  }
  // Segments go oldest first, each delete synced before the next: a
  // segment missing between others was lost, not dropped.
  for (size_t k = 1; k < seqs.size(); ++k) {
    if (seqs[k] != seqs[k - 1] + 1) {
      return Storage(SegmentPath(seqs[k - 1] + 1) + " is missing");
    }
  }
  Loading state;
  for (size_t k = 0; k < seqs.size(); ++k) {
    segments_.push_back({seqs[k], 0});
    s = ReadSegment(k, k + 1 == seqs.size(), &state);
    if (!s.ok()) return s;
  }

  uint64_t expect = state.snapshot.index + 1;
  for (const raft::Entry& e : state.entries) {
    if (e.index != expect) {
      return Storage("entry " + std::to_string(expect) + " is missing");
    }
    ++expect;
    bytes_ += EntryBytes(e);
  }
  saved_ = state.hard;
  snapshot_ = state.snapshot;
  joining_ = state.joining;
  last_ = expect - 1;
  restored_.hard_state = saved_;
  restored_.snapshot = snapshot_;
  if (old) {
    // Only the LevelDB that segment 1 was converted from goes (a crash
    // came before it went); any other is a stored of before that ran on
    // this folder after the upgrade, or a backup put back: its log and
    // the segments' differ, and which is the truth is for a person.
    const auto& e = state.entries;
    const auto& o = old->entries;
    const bool same = seqs.size() == 1 && saved_ == old->hard &&
                      snapshot_.index == old->snapshot.index &&
                      snapshot_.term == old->snapshot.term &&
                      joining_ == old->joining && e.size() == o.size() &&
                      (e.empty() || (e.back().index == o.back().index &&
                                     e.back().term == o.back().term));
    if (!same) {
      return Storage(path_ +
                     " holds both a LevelDB log and segment files that differ "
                     "(a natter-stored of before ran on it after the upgrade, "
                     "or its backup was put back): keep the one that is the "
                     "truth, and remove the other");
    }
    leveldb::Status d = leveldb::DestroyDB(path_, leveldb::Options());
    if (!d.ok()) return Storage("deleting its LevelDB: " + d.ToString());
  }
  restored_.entries.assign(std::make_move_iterator(state.entries.begin()),
                           std::make_move_iterator(state.entries.end()));
  if (!fenced) s = Fence();
  if (s.ok()) s = OpenNewest();
  // Segments a compaction passed, left by a crash before it deleted them.
  return s.ok() ? DropSegments() : s;
}

// A folder named CURRENT where a LevelDB keeps its file of that name: a
// stored of before cannot read it, and refuses to start rather than take
// this folder for an empty LevelDB log (and lose its term and vote).
// Made once segment 1 is on disk, so a fence with no segments means they
// were lost.
Status RaftLog::Fence() {
  const std::string current = path_ + "/CURRENT";
  if (::mkdir(current.c_str(), 0700) != 0) return Errno(current);
  return SyncFolder(path_);
}

Status RaftLog::ReadSegment(size_t k, bool newest, Loading* state) {
  const std::string file = SegmentPath(segments_[k].seq);
  std::string bytes;
  {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Errno(file);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      return Errno(file);
    }
    bytes.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    int error = 0;
    while (got < bytes.size()) {
      ssize_t n = ::read(fd, &bytes[got], bytes.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? errno : EIO;
        break;
      }
      got += static_cast<size_t>(n);
    }
    ::close(fd);
    if (got != bytes.size()) {
      errno = error;
      return Errno(file);
    }
  }
  size_t at = 0;
  bool started = false;
  while (at < bytes.size()) {
    const char* p = bytes.data() + at;
    const size_t left = bytes.size() - at;
    uint32_t size = 0;
    unsigned char sum[crypto_shorthash_BYTES];
    bool good = left >= kHeaderBytes;
    if (good) {
      size = FrameSize(p);
      good = size <= left - kHeaderBytes;
    }
    if (good) {
      Checksum(p + kHeaderBytes, size, sum);
      good = std::memcmp(sum, p + 4, sizeof sum) == 0;
    }
    if (!good) {
      // The newest segment's last write, cut short by a crash before its
      // sync returned (nothing in it was acknowledged), is cut off.
      // Anything else is damage.
      if (!newest || at == 0 || GoodFrameAfter(bytes, at)) {
        return Storage(file + " is damaged at byte " + std::to_string(at));
      }
      Status cut = CutTail(file, bytes, at);
      if (!cut.ok()) return cut;
      break;
    }
    try {
      size_t off = 0;
      const char* payload = p + kHeaderBytes;
      while (off < size) {
        // Counts bounded: a damaged count must not ask for gigabytes.
        msgpack::object_handle oh = msgpack::unpack(
            payload, size, off, nullptr, nullptr,
            msgpack::unpack_limit(/*array=*/4096, /*map=*/0, /*str=*/size,
                                  /*bin=*/size, /*ext=*/0, /*depth=*/3));
        Record r(oh.get());
        if (!started && r.kind != kStart) throw msgpack::type_error();
        switch (r.kind) {
          case kStart: {
            const raft::HardState hard{r.At<uint64_t>(1), r.At<uint64_t>(2),
                                       r.At<uint64_t>(3)};
            raft::SnapshotMeta snapshot = r.Snapshot(4);
            const bool joining = r.At<bool>(7);
            if (state->started && !(hard == state->hard &&
                                    snapshot.index == state->snapshot.index &&
                                    snapshot.term == state->snapshot.term &&
                                    joining == state->joining)) {
              // Its start is the state the segments before it left.
              return Storage(file +
                             " does not follow from the segment "
                             "before it");
            }
            state->hard = hard;
            state->snapshot = std::move(snapshot);
            state->joining = joining;
            state->started = started = true;
            break;
          }
          case kHardState:
            state->hard = {r.At<uint64_t>(1), r.At<uint64_t>(2),
                           r.At<uint64_t>(3)};
            break;
          case kReset:
            state->snapshot = r.Snapshot(1);
            state->entries.clear();
            for (size_t j = 0; j <= k; ++j) segments_[j].max_index = 0;
            break;
          case kCompact: {
            raft::SnapshotMeta m = r.Snapshot(1);
            if (m.index <= state->snapshot.index) break;
            while (!state->entries.empty() &&
                   state->entries.front().index <= m.index) {
              state->entries.pop_front();
            }
            state->snapshot = std::move(m);
            break;
          }
          case kEntry: {
            raft::Entry e;
            e.index = r.At<uint64_t>(1);
            e.term = r.At<uint64_t>(2);
            uint8_t type = r.At<uint8_t>(3);
            if (type > static_cast<uint8_t>(raft::EntryType::kNoop))
              throw msgpack::type_error();
            e.type = static_cast<raft::EntryType>(type);
            e.data = r.At<std::string>(4);
            segments_[k].max_index = std::max(segments_[k].max_index, e.index);
            if (e.index <= state->snapshot.index) break;
            while (!state->entries.empty() &&
                   state->entries.back().index >= e.index) {
              state->entries.pop_back();
            }
            state->entries.push_back(std::move(e));
            break;
          }
          case kJoining:
            state->joining = true;
            break;
          default:
            throw msgpack::type_error();
        }
      }
    } catch (const std::exception&) {
      return Storage(file + ": a record at byte " + std::to_string(at) +
                     " cannot be read");
    }
    at += kHeaderBytes + size;
  }
  if (!started) return Storage(file + " has no start");
  return Status::Ok();
}

Status RaftLog::OpenNewest() {
  const std::string file = SegmentPath(segments_.back().seq);
  fd_ = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) return Errno(file);
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Errno(file);
  size_ = static_cast<uint64_t>(st.st_size);
  return Status::Ok();
}

// A new newest segment, made whole under another name and then moved in
// place: it holds the state as it is on disk now and the given entries.
Status RaftLog::StartSegment(uint64_t seq,
                             const std::vector<raft::Entry>& entries) {
  const std::string file = SegmentPath(seq), temp = file + ".tmp";
  msgpack::sbuffer buf;
  BeginFrame(&buf);
  {
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_array(8);
    pk.pack(static_cast<uint8_t>(kStart));
    pk.pack(saved_.term);
    pk.pack(saved_.vote);
    pk.pack(saved_.commit);
    pk.pack(snapshot_.index);
    pk.pack(snapshot_.term);
    pk.pack(snapshot_.voters);
    pk.pack(joining_);
  }
  uint64_t max_index = 0;
  std::string bytes;
  auto flush = [&]() {
    if (!SealFrame(&buf)) return false;
    bytes.append(buf.data(), buf.size());
    BeginFrame(&buf);
    return true;
  };
  for (const raft::Entry& e : entries) {
    PackEntry(&buf, e);
    max_index = std::max(max_index, e.index);
    if (buf.size() >= kConvertFrameBytes && !flush())
      return Storage("an entry too large for a frame");
  }
  if (buf.size() > kHeaderBytes && !flush())
    return Storage("an entry too large for a frame");

  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno(temp);
  bool ok = WriteAll(fd, bytes.data(), bytes.size()) && SyncData(fd);
  const int error = errno;
  ::close(fd);
  if (!ok) {
    errno = error;
    return Errno(temp);
  }
  if (::rename(temp.c_str(), file.c_str()) != 0) return Errno(file);
  Status s = SyncFolder(path_);
  if (!s.ok()) return s;
  int next = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (next < 0) return Errno(file);
  if (fd_ >= 0) ::close(fd_);
  fd_ = next;
  size_ = bytes.size();
  segments_.push_back({seq, max_index});
  ++syncs_;
  return Status::Ok();
}

// frame_ (begun, records packed) written at the newest segment's end and
// synced; a segment past its size first makes way for a new one.
Status RaftLog::WriteFrame() {
  if (failed_) return Storage("a write failed before: restart the replica");
  if (!SealFrame(&frame_)) return Storage("a Ready too large for a frame");
  if (size_ > 0 && size_ + frame_.size() > segment_bytes_) {
    Status s = StartSegment(segments_.back().seq + 1, {});
    if (!s.ok()) {
      failed_ = true;
      return s;
    }
  }
  if (!WriteAll(fd_, frame_.data(), frame_.size()) || !SyncData(fd_)) {
    // The frame may be in the page cache, whole: were the log read again
    // in this process (the database reopened), it would pass for synced.
    const int error = errno;
    failed_ = true;
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0 || ::fsync(fd_) != 0) {
      // Not cut back: no RaftLog of this process opens it again.
      Poisoned().insert(path_);
      NLOG_ERROR("event=raft-log-unwritable file=%s error=%s",
                 SegmentPath(segments_.back().seq).c_str(),
                 std::strerror(errno));
    }
    errno = error;
    return Errno(SegmentPath(segments_.back().seq));
  }
  size_ += frame_.size();
  ++syncs_;
  return Status::Ok();
}

void RaftLog::PackHardState(const raft::HardState& h) {
  msgpack::packer<msgpack::sbuffer> pk(frame_);
  pk.pack_array(4);
  pk.pack(static_cast<uint8_t>(kHardState));
  pk.pack(h.term);
  pk.pack(h.vote);
  pk.pack(h.commit);
}

void RaftLog::PackSnapshot(uint8_t kind, const raft::SnapshotMeta& m) {
  msgpack::packer<msgpack::sbuffer> pk(frame_);
  pk.pack_array(4);
  pk.pack(kind);
  pk.pack(m.index);
  pk.pack(m.term);
  pk.pack(m.voters);
}

Status RaftLog::MarkJoining() {
  BeginFrame(&frame_);
  msgpack::packer<msgpack::sbuffer> pk(frame_);
  pk.pack_array(1);
  pk.pack(static_cast<uint8_t>(kJoining));
  Status s = WriteFrame();
  if (s.ok()) joining_ = true;
  return s;
}

Status RaftLog::Save(const raft::Ready& ready) {
  bool vote_changed =
      ready.hard_state && (ready.hard_state->term != saved_.term ||
                           ready.hard_state->vote != saved_.vote);
  if (!vote_changed && !ready.snapshot && ready.entries.empty()) {
    return Status::Ok();
  }
  BeginFrame(&frame_);
  if (ready.snapshot) PackSnapshot(kReset, *ready.snapshot);
  for (const raft::Entry& e : ready.entries) PackEntry(&frame_, e);
  if (ready.hard_state) PackHardState(*ready.hard_state);
  Status s = WriteFrame();
  if (!s.ok()) return s;
  if (ready.snapshot) {
    snapshot_ = *ready.snapshot;
    last_ = snapshot_.index;
    bytes_ = 0;
    for (Segment& seg : segments_) seg.max_index = 0;  // all dead
  }
  if (!ready.entries.empty()) {
    for (const raft::Entry& e : ready.entries) bytes_ += EntryBytes(e);
    last_ = ready.entries.back().index;
    Segment& newest = segments_.back();
    newest.max_index = std::max(newest.max_index, last_);
  }
  if (ready.hard_state) saved_ = *ready.hard_state;
  return ready.snapshot ? DropSegments() : Status::Ok();
}

Status RaftLog::Compact(const raft::SnapshotMeta& meta) {
  if (meta.index <= snapshot_.index) return Status::Ok();
  BeginFrame(&frame_);
  PackSnapshot(kCompact, meta);
  Status s = WriteFrame();
  if (!s.ok()) return s;
  // The bytes left, about: in proportion to the entries left.
  uint64_t before = last_ - snapshot_.index;
  uint64_t left = last_ > meta.index ? last_ - meta.index : 0;
  bytes_ = before > 0 ? bytes_ * left / before : 0;
  snapshot_ = meta;
  if (last_ < meta.index) last_ = meta.index;
  return DropSegments();
}

// The oldest segments whose entries the snapshot holds go (never the
// newest: it is where the log goes on).  A later segment's start has
// their state, and the record that passed them is in a later one still.
// Each delete is synced before the next, so that a crash leaves the
// newest segments in an unbroken run.
Status RaftLog::DropSegments() {
  while (segments_.size() > 1 &&
         segments_.front().max_index <= snapshot_.index) {
    const std::string file = SegmentPath(segments_.front().seq);
    if (::unlink(file.c_str()) != 0 && errno != ENOENT) return Errno(file);
    segments_.pop_front();
    Status s = SyncFolder(path_);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

}  // namespace stored
}  // namespace natter
