// natter-stored's Raft log, its segment files (daemons/stored/raft_log.h): what
// a replica saves is what it restarts from.
#include "daemons/stored/raft_log.h"

#include <leveldb/db.h>
#include <sodium.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "common/proto.h"
#include "daemons/stored/replica.h"
#include "tests/support/io.h"
#include "tests/support/temp_dir.h"

using namespace natter;
using namespace natter::stored;

namespace {

raft::Entry MakeEntry(uint64_t index, uint64_t term, const std::string& data) {
  raft::Entry e;
  e.index = index;
  e.term = term;
  e.data = data;
  return e;
}

std::unique_ptr<RaftLog> OpenLog(const std::string& path) {
  std::unique_ptr<RaftLog> log;
  Status s = RaftLog::Open(path, &log);
  INFO(s.message());
  REQUIRE(s.ok());
  return log;
}

std::vector<uint64_t> IndexesOf(const std::vector<raft::Entry>& entries) {
  std::vector<uint64_t> out;
  for (const raft::Entry& e : entries) out.push_back(e.index);
  return out;
}

}  // namespace

TEST_CASE(
    "the raft log gives back after a restart the hard state and entries it "
    "saved") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    auto log = OpenLog(path);
    CHECK(log->restored().entries.empty());
    raft::Ready rd;
    rd.hard_state = raft::HardState{3, 2, 1};
    rd.entries = {MakeEntry(1, 1, "a"),
                  MakeEntry(2, 3, std::string("b\0c", 3))};
    rd.entries[1].type = raft::EntryType::kConfig;
    REQUIRE(log->Save(rd).ok());
  }
  auto log = OpenLog(path);
  const raft::Restored& r = log->restored();
  CHECK(r.hard_state == (raft::HardState{3, 2, 1}));
  REQUIRE(r.entries.size() == 2);
  CHECK(r.entries[0] == MakeEntry(1, 1, "a"));
  CHECK(r.entries[1].data == std::string("b\0c", 3));
  CHECK(r.entries[1].type == raft::EntryType::kConfig);
  CHECK(log->last_index() == 2);
}

TEST_CASE("entries saved from an index replace the log's tail from there") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    auto log = OpenLog(path);
    raft::Ready rd;
    for (uint64_t i = 1; i <= 5; ++i)
      rd.entries.push_back(MakeEntry(i, 1, "old"));
    REQUIRE(log->Save(rd).ok());
    raft::Ready replace;
    replace.entries = {MakeEntry(3, 2, "new")};
    REQUIRE(log->Save(replace).ok());
    CHECK(log->last_index() == 3);
  }
  auto log = OpenLog(path);
  const auto& entries = log->restored().entries;
  CHECK(IndexesOf(entries) == std::vector<uint64_t>{1, 2, 3});
  CHECK(entries[2].data == "new");
  CHECK(entries[1].data == "old");
}

TEST_CASE(
    "a snapshot from the leader replaces the whole log; compaction drops what "
    "it covers") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    auto log = OpenLog(path);
    raft::Ready rd;
    for (uint64_t i = 1; i <= 4; ++i)
      rd.entries.push_back(MakeEntry(i, 1, "x"));
    REQUIRE(log->Save(rd).ok());
    raft::Ready snap;
    snap.snapshot = raft::SnapshotMeta{10, 2, {1, 2, 3}};
    snap.entries = {MakeEntry(11, 2, "after")};
    REQUIRE(log->Save(snap).ok());
  }
  {
    auto log = OpenLog(path);
    const raft::Restored& r = log->restored();
    CHECK(r.snapshot.index == 10);
    CHECK(r.snapshot.term == 2);
    CHECK(r.snapshot.voters == std::vector<raft::NodeId>{1, 2, 3});
    CHECK(IndexesOf(r.entries) == std::vector<uint64_t>{11});
    raft::Ready more;
    more.entries = {MakeEntry(12, 2, "y"), MakeEntry(13, 2, "z")};
    REQUIRE(log->Save(more).ok());
    REQUIRE(log->Compact(raft::SnapshotMeta{12, 2, {1, 2, 3}}).ok());
    CHECK(log->first_index() == 13);
  }
  auto log = OpenLog(path);
  CHECK(log->restored().snapshot.index == 12);
  CHECK(IndexesOf(log->restored().entries) == std::vector<uint64_t>{13});
}

// The segment files of a log, oldest first.
std::vector<std::string> Segments(const std::string& path) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(path)) {
    if (e.path().extension() == ".wal") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void WriteFile(const std::string& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Saves entries from..to, one Save each, at term 1.
void SaveEach(RaftLog* log, uint64_t from, uint64_t to,
              const std::string& data = "x") {
  for (uint64_t i = from; i <= to; ++i) {
    raft::Ready rd;
    rd.entries = {MakeEntry(i, 1, data)};
    REQUIRE(log->Save(rd).ok());
  }
}

TEST_CASE(
    "a write cut short at the end of the log is cut off at the next start; "
    "what was synced before it stays") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    auto log = OpenLog(path);
    SaveEach(log.get(), 1, 3);
  }
  const std::string file = Segments(path).back();
  const std::string whole = ReadFile(file);
  {
    auto log = OpenLog(path);
    SaveEach(log.get(), 4, 4, "the write a crash cut short");
  }
  const std::string longer = ReadFile(file);
  REQUIRE(longer.size() > whole.size() + 20);
  SECTION("its last bytes missing") {
    WriteFile(file, longer.substr(0, longer.size() - 7));
  }
  SECTION("its header only") {
    WriteFile(file, longer.substr(0, whole.size() + 5));
  }
  SECTION("zeros where its bytes were never written") {
    WriteFile(file, whole + std::string(longer.size() - whole.size(), '\0'));
  }
  SECTION("the page with its header's first bytes never written") {
    std::string split = longer;
    std::fill(split.begin() + static_cast<std::ptrdiff_t>(whole.size()),
              split.begin() + static_cast<std::ptrdiff_t>(whole.size() + 6),
              '\0');
    WriteFile(file, split);
  }
  SECTION("one of its bytes not the one written") {
    std::string bent = longer;
    bent[bent.size() - 3] ^= 0x20;
    WriteFile(file, bent);
  }
  const size_t damaged = ReadFile(file).size();
  {
    auto log = OpenLog(path);
    CHECK(IndexesOf(log->restored().entries) == std::vector<uint64_t>{1, 2, 3});
    CHECK(ReadFile(file) == whole);
    // What was cut is kept beside it, to look at.
    CHECK(ReadFile(file + "." + std::to_string(whole.size()) + ".cut").size() ==
          damaged - whole.size());
    SaveEach(log.get(), 4, 5);
  }
  auto log = OpenLog(path);
  CHECK(IndexesOf(log->restored().entries) ==
        std::vector<uint64_t>{1, 2, 3, 4, 5});
}

TEST_CASE(
    "a raft log damaged before its last write, or with a segment missing, "
    "is refused, not half read") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    std::unique_ptr<RaftLog> log;
    REQUIRE(RaftLog::Open(path, &log, 200).ok());
    SaveEach(log.get(), 1, 30, std::string(40, 'x'));
    CHECK(log->segments() >= 3);
  }
  const std::vector<std::string> files = Segments(path);
  REQUIRE(files.size() >= 3);
  std::unique_ptr<RaftLog> log;
  SECTION("a byte of an older segment") {
    std::string bent = ReadFile(files[1]);
    bent[bent.size() / 2] ^= 1;
    WriteFile(files[1], bent);
    Status s = RaftLog::Open(path, &log);
    CHECK(s.code() == ErrorCode::kStorage);
    CHECK(s.message().find("damaged") != std::string::npos);
  }
  SECTION("the newest segment's start") {
    std::string bent = ReadFile(files.back());
    bent[14] ^= 1;
    WriteFile(files.back(), bent);
    Status s = RaftLog::Open(path, &log);
    CHECK(s.message().find("damaged at byte 0") != std::string::npos);
  }
  SECTION("a segment in the middle") {
    const std::string lost = files[files.size() - 2];
    std::filesystem::remove(lost);
    Status s = RaftLog::Open(path, &log);
    CHECK(s.code() == ErrorCode::kStorage);
    CHECK(s.message().find(lost + " is missing") != std::string::npos);
    // Nothing was deleted on the way.
    CHECK(Segments(path).size() == files.size() - 1);
  }
  SECTION("a frame's header zeroed, with good frames after it") {
    std::string bent = ReadFile(files.back());
    const size_t start = 12 + static_cast<unsigned char>(bent[0]);
    REQUIRE(bent.size() > start + 100);
    std::fill(bent.begin() + static_cast<std::ptrdiff_t>(start),
              bent.begin() + static_cast<std::ptrdiff_t>(start + 12), '\0');
    WriteFile(files.back(), bent);
    Status s = RaftLog::Open(path, &log);
    CHECK(s.message().find("damaged at byte " + std::to_string(start)) !=
          std::string::npos);
  }
  SECTION("a frame of the newest segment with good frames after it") {
    std::string bent = ReadFile(files.back());
    REQUIRE(bent.size() > 150);
    bent[40] ^= 1;  // the frame after the start
    WriteFile(files.back(), bent);
    Status s = RaftLog::Open(path, &log);
    CHECK(s.code() == ErrorCode::kStorage);
    CHECK(s.message().find("damaged") != std::string::npos);
    CHECK(ReadFile(files.back()) == bent);  // not cut
  }
  SECTION("a segment that does not begin where the one before ended") {
    // The newest segment, from a log with another hard state.
    TempDir other;
    {
      std::unique_ptr<RaftLog> o;
      REQUIRE(RaftLog::Open(other.path() + "/raft", &o, 200).ok());
      raft::Ready vote;
      vote.hard_state = raft::HardState{9, 9, 0};
      REQUIRE(o->Save(vote).ok());
      SaveEach(o.get(), 1, 30, std::string(40, 'x'));
    }
    std::vector<std::string> theirs = Segments(other.path() + "/raft");
    WriteFile(files.back(), ReadFile(theirs.back()));
    Status s = RaftLog::Open(path, &log);
    CHECK(s.message().find("does not follow") != std::string::npos);
  }
}

TEST_CASE(
    "a frame whose checksum is good but whose records are not is refused, "
    "even one that claims four billion of them") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  { auto log = OpenLog(path); }
  const std::string file = Segments(path).back();
  const std::string start = ReadFile(file);
  for (const std::string& payload :
       {std::string("\xdf\xff\xff\xff\xff", 5),  // a map of 2^32 - 1
        std::string("\xdd\xff\xff\xff\xff", 5),  // an array of as many
        std::string("\x93\x04\x01\x01", 4),      // an entry cut short
        std::string("\x91\x09", 2)}) {           // a kind not known
    std::string frame;
    for (int i = 0; i < 4; ++i)
      frame.push_back(static_cast<char>(payload.size() >> (8 * i)));
    unsigned char sum[crypto_shorthash_BYTES];
    const unsigned char key[crypto_shorthash_KEYBYTES] = {0};
    crypto_shorthash(sum,
                     reinterpret_cast<const unsigned char*>(payload.data()),
                     payload.size(), key);
    frame.append(reinterpret_cast<const char*>(sum), sizeof sum);
    WriteFile(file, start + frame + payload);
    std::unique_ptr<RaftLog> log;
    Status s = RaftLog::Open(path, &log);
    CHECK(s.code() == ErrorCode::kStorage);
    CHECK(s.message().find("cannot be read") != std::string::npos);
  }
}

TEST_CASE(
    "segments a compaction passed but a crash left are deleted at the next "
    "start") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  std::vector<std::pair<std::string, std::string>> dropped;
  {
    std::unique_ptr<RaftLog> log;
    REQUIRE(RaftLog::Open(path, &log, 200).ok());
    SaveEach(log.get(), 1, 30, std::string(40, 'z'));
    const std::vector<std::string> before = Segments(path);
    for (const std::string& f : before) dropped.push_back({f, ReadFile(f)});
    REQUIRE(log->Compact(raft::SnapshotMeta{25, 1, {1}}).ok());
    REQUIRE(Segments(path).size() < before.size());
  }
  // The deletes never reached the disk.
  for (const auto& [file, bytes] : dropped) {
    if (!std::filesystem::exists(file)) WriteFile(file, bytes);
  }
  const size_t all = Segments(path).size();
  auto log = OpenLog(path);
  CHECK(log->restored().snapshot.index == 25);
  CHECK(IndexesOf(log->restored().entries) ==
        std::vector<uint64_t>{26, 27, 28, 29, 30});
  CHECK(log->segments() < all);
  CHECK(Segments(path).size() == log->segments());
}

TEST_CASE(
    "the log goes on in new segments as it grows, and compaction drops the "
    "ones it has passed; the state survives in the newest") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    std::unique_ptr<RaftLog> log;
    REQUIRE(RaftLog::Open(path, &log, 300).ok());
    REQUIRE(log->MarkJoining().ok());
    raft::Ready vote;
    vote.hard_state = raft::HardState{7, 3, 0};
    REQUIRE(log->Save(vote).ok());
    SaveEach(log.get(), 1, 60, std::string(30, 'y'));
    const size_t before = log->segments();
    CHECK(before >= 5);
    CHECK(Segments(path).size() == before);
    REQUIRE(log->Compact(raft::SnapshotMeta{50, 1, {1, 2}}).ok());
    CHECK(log->segments() < before);
    CHECK(log->segments() >= 2);  // 51..60 are still there
    CHECK(Segments(path).size() == log->segments());
    CHECK(log->first_index() == 51);
  }
  {
    std::unique_ptr<RaftLog> log;
    REQUIRE(RaftLog::Open(path, &log, 300).ok());
    const raft::Restored& r = log->restored();
    CHECK(r.hard_state == (raft::HardState{7, 3, 0}));
    CHECK(r.snapshot.index == 50);
    CHECK(r.snapshot.voters == std::vector<raft::NodeId>{1, 2});
    REQUIRE(r.entries.size() == 10);
    CHECK(r.entries.front().index == 51);
    CHECK(r.entries.back().data == std::string(30, 'y'));
    CHECK(log->joining());
    // A snapshot from the leader: every older segment goes.
    raft::Ready snap;
    snap.snapshot = raft::SnapshotMeta{500, 9, {1, 2, 3}};
    snap.hard_state = raft::HardState{9, 0, 500};
    REQUIRE(log->Save(snap).ok());
    CHECK(log->segments() == 1);
  }
  auto log = OpenLog(path);
  CHECK(log->restored().snapshot.index == 500);
  CHECK(log->restored().entries.empty());
  CHECK(log->restored().hard_state == (raft::HardState{9, 0, 500}));
  CHECK(log->joining());
}

// A Raft log as the stored of before kept it, in LevelDB: hard state
// {5, 2, 11}, snapshot at 10, the join mark, entries 8 (a compaction cut
// short left 8 and 9) to last.
void WriteLevelDbLog(const std::string& path, uint64_t last = 12) {
  leveldb::Options options;
  options.create_if_missing = true;
  leveldb::DB* raw = nullptr;
  REQUIRE(leveldb::DB::Open(options, path, &raw).ok());
  std::unique_ptr<leveldb::DB> db(raw);
  auto pack = [](const auto& value) {
    msgpack::sbuffer buf;
    msgpack::pack(buf, value);
    return std::string(buf.data(), buf.size());
  };
  REQUIRE(db->Put({}, "h", pack(std::vector<uint64_t>{5, 2, 11})).ok());
  REQUIRE(db->Put({}, "s",
                  pack(std::make_tuple(uint64_t{10}, uint64_t{4},
                                       std::vector<uint64_t>{1, 2, 3})))
              .ok());
  REQUIRE(db->Put({}, "j", "").ok());
  for (uint64_t i = 8; i <= last; ++i) {
    std::string key("e");
    for (int b = 7; b >= 0; --b) key.push_back(static_cast<char>(i >> (8 * b)));
    REQUIRE(
        db->Put({}, key, pack(RaftEntry{5, i, 0, "entry " + std::to_string(i)}))
            .ok());
  }
}

TEST_CASE(
    "a raft log kept in LevelDB by the stored of before is converted, and "
    "its LevelDB is gone") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  WriteLevelDbLog(path);
  {
    auto log = OpenLog(path);
    const raft::Restored& r = log->restored();
    CHECK(r.hard_state == (raft::HardState{5, 2, 11}));
    CHECK(r.snapshot.index == 10);
    CHECK(r.snapshot.voters == std::vector<raft::NodeId>{1, 2, 3});
    CHECK(IndexesOf(r.entries) == std::vector<uint64_t>{11, 12});
    CHECK(r.entries[1].data == "entry 12");
    CHECK(log->joining());
    SaveEach(log.get(), 13, 13);
  }
  // In the LevelDB's place, a folder named CURRENT: a stored of before
  // cannot open the folder as a LevelDB log, and does not start on it.
  CHECK(std::filesystem::is_directory(path + "/CURRENT"));
  CHECK_FALSE(std::filesystem::exists(path + "/LOCK"));
  {
    leveldb::Options options;
    options.create_if_missing = true;
    leveldb::DB* raw = nullptr;
    CHECK_FALSE(leveldb::DB::Open(options, path, &raw).ok());
    delete raw;
  }
  auto log = OpenLog(path);
  CHECK(IndexesOf(log->restored().entries) ==
        std::vector<uint64_t>{11, 12, 13});
  CHECK(Segments(path).size() == 1);
}

TEST_CASE(
    "a conversion cut short before its LevelDB went is finished at the next "
    "start; a LevelDB that differs from the segments is refused, and so are "
    "segments lost behind the fence") {
  TempDir dir, aside;
  const std::string path = dir.path() + "/raft";
  WriteLevelDbLog(path);
  std::filesystem::copy(path, aside.path() + "/leveldb");
  { auto log = OpenLog(path); }
  // The crash: the LevelDB still there, no fence yet.
  std::filesystem::remove(path + "/CURRENT");
  SECTION("the LevelDB segment 1 was made from") {
    for (const auto& e :
         std::filesystem::directory_iterator(aside.path() + "/leveldb")) {
      std::filesystem::copy(e.path(), path + "/" + e.path().filename().string(),
                            std::filesystem::copy_options::overwrite_existing);
    }
    auto log = OpenLog(path);
    CHECK(IndexesOf(log->restored().entries) == std::vector<uint64_t>{11, 12});
    CHECK(std::filesystem::is_directory(path + "/CURRENT"));
  }
  SECTION("a LevelDB that went on after it (a stored of before ran)") {
    WriteLevelDbLog(path, 13);
    std::unique_ptr<RaftLog> log;
    Status s = RaftLog::Open(path, &log);
    CHECK(s.message().find("differ") != std::string::npos);
  }
  SECTION("the segments gone, the fence left") {
    REQUIRE(std::filesystem::create_directory(path + "/CURRENT"));
    for (const std::string& f : Segments(path)) std::filesystem::remove(f);
    std::unique_ptr<RaftLog> log;
    Status s = RaftLog::Open(path, &log);
    CHECK(s.message().find("lost its segment files") != std::string::npos);
  }
}

TEST_CASE(
    "a LevelDB log beside segment files that are not a conversion cut short "
    "is refused") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    std::unique_ptr<RaftLog> log;
    REQUIRE(RaftLog::Open(path, &log, 200).ok());
    SaveEach(log.get(), 1, 20, std::string(40, 'x'));
    REQUIRE(log->segments() > 1);
  }
  std::filesystem::remove(path + "/CURRENT");
  {
    leveldb::Options options;
    options.create_if_missing = true;
    leveldb::DB* raw = nullptr;
    REQUIRE(leveldb::DB::Open(options, path, &raw).ok());
    delete raw;
  }
  std::unique_ptr<RaftLog> log;
  Status s = RaftLog::Open(path, &log);
  CHECK(s.code() == ErrorCode::kStorage);
  CHECK(s.message().find("both a LevelDB log and segment files") !=
        std::string::npos);
}

TEST_CASE("a raft log in use by one stored is refused to a second") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  auto first = OpenLog(path);
  std::unique_ptr<RaftLog> second;
  Status s = RaftLog::Open(path, &second);
  CHECK(s.code() == ErrorCode::kStorage);
  CHECK(s.message().find("in use") != std::string::npos);
  first.reset();
  CHECK(RaftLog::Open(path, &second).ok());
}

TEST_CASE(
    "a replica whose database is older than its compacted log refuses to "
    "start; one joining has no voters of its own, even started again "
    "without --join; a log behind its database takes the voters the "
    "database records") {
  TempDir dir;
  Replica::Settings settings;
  settings.endpoints = {"ipc://" + dir.path() + "/0",
                        "ipc://" + dir.path() + "/1",
                        "ipc://" + dir.path() + "/2"};
  settings.log_path = dir.path() + "/raft";
  {
    // The log compacted through entry 50.
    auto log = OpenLog(settings.log_path);
    raft::Ready rd;
    rd.hard_state = raft::HardState{4, 1, 50};
    rd.snapshot = raft::SnapshotMeta{50, 4, {1, 2, 3}};
    REQUIRE(log->Save(rd).ok());
  }
  zmq::context_t ctx(1);
  std::unique_ptr<Replica> r;
  Replica::Database db;
  db.applied = {10, 2};
  Status s = Replica::Create(settings, ctx, CurveIdentity(), db, &r);
  CHECK(s.code() == ErrorCode::kStorage);
  CHECK(s.message().find("in neither") != std::string::npos);
  // At the log's start or past it, it starts.
  db.applied = {50, 4};
  CHECK(Replica::Create(settings, ctx, CurveIdentity(), db, &r).ok());
  REQUIRE(r);
  CHECK(r->Voters() == std::vector<uint64_t>{0, 1, 2});

  // A new replica joining: an empty log, no voters until its leader's; and
  // none either when it is started again without --join.
  Replica::Settings joining = settings;
  joining.replica = 2;
  joining.join = true;
  joining.log_path = dir.path() + "/raft-new";
  std::unique_ptr<Replica> j;
  Replica::Database none;
  REQUIRE(Replica::Create(joining, ctx, CurveIdentity(), none, &j).ok());
  CHECK(j->Voters().empty());
  j.reset();
  joining.join = false;
  REQUIRE(Replica::Create(joining, ctx, CurveIdentity(), none, &j).ok());
  CHECK(j->Voters().empty());
  // A new shard's replica: the shard map's.
  joining.log_path = dir.path() + "/raft-first";
  REQUIRE(Replica::Create(joining, ctx, CurveIdentity(), none, &j).ok());
  CHECK(j->Voters() == std::vector<uint64_t>{0, 1, 2});

  // A database ahead of an empty log (a crash while it was being
  // installed): the voters it records, not the shard map's.
  joining.log_path = dir.path() + "/raft-behind";
  Replica::Database ahead;
  ahead.applied = {70, 5};
  ahead.voters = {1, 3};
  REQUIRE(Replica::Create(joining, ctx, CurveIdentity(), ahead, &j).ok());
  CHECK(j->Voters() == std::vector<uint64_t>{0, 2});
  CHECK(j->node().commit() == 70);
}
