// natter-stored's Raft log on LevelDB (daemons/stored/raft_log.h): what a
// replica saves is what it restarts from.
#include "daemons/stored/raft_log.h"

#include <leveldb/db.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "daemons/stored/replica.h"
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

TEST_CASE(
    "a raft log with a damaged entry or a hole is refused, not half read") {
  TempDir dir;
  const std::string path = dir.path() + "/raft";
  {
    auto log = OpenLog(path);
    raft::Ready rd;
    for (uint64_t i = 1; i <= 3; ++i)
      rd.entries.push_back(MakeEntry(i, 1, "x"));
    REQUIRE(log->Save(rd).ok());
  }
  {
    leveldb::DB* raw = nullptr;
    REQUIRE(leveldb::DB::Open(leveldb::Options(), path, &raw).ok());
    std::unique_ptr<leveldb::DB> db(raw);
    std::string key("e");
    key.append(7, '\0');
    key.push_back('\2');  // entry 2
    REQUIRE(db->Delete({}, key).ok());
  }
  std::unique_ptr<RaftLog> log;
  Status s = RaftLog::Open(path, &log);
  CHECK_FALSE(s.ok());
  CHECK(s.message().find("entry 2 is missing") != std::string::npos);
  {
    leveldb::DB* raw = nullptr;
    REQUIRE(leveldb::DB::Open(leveldb::Options(), path, &raw).ok());
    std::unique_ptr<leveldb::DB> db(raw);
    REQUIRE(db->Put({}, "h", "not msgpack \xc1").ok());
  }
  s = RaftLog::Open(path, &log);
  CHECK_FALSE(s.ok());
  CHECK(s.message().find("hard state") != std::string::npos);
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
