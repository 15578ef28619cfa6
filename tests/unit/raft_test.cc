// The Raft module (daemons/stored/raft.h) driven by hand, one to three
// replicas: the basic behaviours pinned case by case.  The seeded
// simulation in tests/raft_sim puts it through faults by the thousand.
#include "daemons/stored/raft.h"

#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

using namespace natter;
using raft::Entry;
using raft::EntryType;
using raft::HardState;
using raft::Message;
using raft::MessageType;
using raft::NodeId;
using raft::Ready;
using raft::Role;

namespace {

constexpr int kElectionTicks = 10;

raft::Options OptionsOf(NodeId id, const std::vector<NodeId>& voters) {
  raft::Options o;
  o.id = id;
  o.voters = voters;
  o.election_ticks = kElectionTicks;
  o.seed = id;
  return o;
}

Entry MakeEntry(uint64_t index, uint64_t term, const std::string& data) {
  Entry e;
  e.index = index;
  e.term = term;
  e.data = data;
  return e;
}

// The data of the kNormal entries among entries.
std::vector<std::string> DataOf(const std::vector<Entry>& entries) {
  std::vector<std::string> out;
  for (const Entry& e : entries) {
    if (e.type == EntryType::kNormal) out.push_back(e.data);
  }
  return out;
}

// The replies of a Ready's messages of one type.
std::vector<Message> OfType(const std::vector<Message>& messages,
                            MessageType type) {
  std::vector<Message> out;
  for (const Message& m : messages) {
    if (m.type == type) out.push_back(m);
  }
  return out;
}

// Replicas wired together with a perfect network that a test can cut a
// replica off from.  Each Ready is handled at once, as raft.h's driver
// contract says: persisted (hard state, snapshot, log), its messages
// queued, its committed entries recorded as applied.  A snapshot's data is
// "state@<index>".
class Cluster {
 public:
  explicit Cluster(const std::vector<NodeId>& ids) {
    for (NodeId id : ids) {
      nodes_[id] = std::make_unique<raft::Node>(OptionsOf(id, ids));
    }
  }

  raft::Node& node(NodeId id) { return *nodes_.at(id); }
  const std::vector<Entry>& applied(NodeId id) { return applied_[id]; }
  const std::vector<Message>& sent() const { return sent_; }
  const std::vector<Ready>& readies(NodeId id) { return readies_[id]; }
  void Cut(NodeId id) { cut_.insert(id); }
  void Join(NodeId id) { cut_.erase(id); }

  // Handles every Ready and delivers every message until nothing is left.
  void Settle() {
    for (int round = 0; round < 10000; ++round) {
      for (auto& [id, n] : nodes_) Handle(id);
      if (queue_.empty()) return;
      Message m = queue_.front();
      queue_.pop_front();
      if (cut_.count(m.from) || cut_.count(m.to) || !nodes_.count(m.to)) {
        continue;
      }
      nodes_[m.to]->Step(m);
    }
    FAIL("the cluster did not settle");
  }

  void Tick(int times = 1) {
    for (int i = 0; i < times; ++i) {
      for (auto& [id, n] : nodes_) n->Tick();
      Settle();
    }
  }

  // The one leader, once there is exactly one, or 0 after many ticks.
  NodeId TickUntilLeader() {
    for (int i = 0; i < 20 * kElectionTicks; ++i) {
      Tick();
      std::vector<NodeId> leaders = Leaders();
      if (leaders.size() == 1) return leaders[0];
    }
    return 0;
  }

  std::vector<NodeId> Leaders() {
    std::vector<NodeId> out;
    for (auto& [id, n] : nodes_) {
      if (n->role() == Role::kLeader) out.push_back(id);
    }
    return out;
  }

 private:
  void Handle(NodeId id) {
    raft::Node& n = *nodes_[id];
    while (n.HasReady()) {
      Ready rd = n.TakeReady();
      readies_[id].push_back(rd);
      for (Message m : rd.messages) {
        if (m.type == MessageType::kSnapshot) {
          m.snapshot_data = "state@" + std::to_string(m.snapshot.index);
        }
        sent_.push_back(m);
        queue_.push_back(m);
      }
      for (const Entry& e : rd.committed) applied_[id].push_back(e);
      n.Advance(rd);
    }
  }

  std::map<NodeId, std::unique_ptr<raft::Node>> nodes_;
  std::map<NodeId, std::vector<Entry>> applied_;
  std::map<NodeId, std::vector<Ready>> readies_;
  std::deque<Message> queue_;
  std::vector<Message> sent_;
  std::set<NodeId> cut_;
};

}  // namespace

TEST_CASE("a single replica elects itself and commits what it is given") {
  Cluster c({1});
  REQUIRE(c.TickUntilLeader() == 1);
  CHECK(c.node(1).term() >= 1);
  uint64_t index = c.node(1).Propose("x");
  REQUIRE(index > 0);
  c.Settle();
  CHECK(c.node(1).commit() >= index);
  REQUIRE(c.applied(1).size() >= index);
  CHECK(c.applied(1)[index - 1].index == index);
  CHECK(c.applied(1)[index - 1].data == "x");
  CHECK(DataOf(c.applied(1)) == std::vector<std::string>{"x"});
}

TEST_CASE("three replicas elect one leader, and its entries reach the others") {
  Cluster c({1, 2, 3});
  // Each alone: no majority, no leader.
  c.Cut(2);
  c.Cut(3);
  for (int i = 0; i < 10 * kElectionTicks; ++i) {
    c.Tick();
    REQUIRE(c.Leaders().empty());
  }
  c.Join(2);
  c.Join(3);
  NodeId leader = c.TickUntilLeader();
  REQUIRE(leader != 0);
  const uint64_t term = c.node(leader).term();
  for (NodeId id : {1, 2, 3}) {
    CHECK(c.node(id).term() == term);
    CHECK(c.node(id).leader() == leader);
    if (id != leader) CHECK(c.node(id).role() == Role::kFollower);
  }
  uint64_t index = c.node(leader).Propose("x");
  REQUIRE(index > 0);
  // A follower takes no proposal.
  NodeId follower = leader == 1 ? 2 : 1;
  CHECK(c.node(follower).Propose("y") == 0);
  c.Settle();
  c.Tick();  // the heartbeat that carries the commit to the followers
  for (NodeId id : {1, 2, 3}) {
    CHECK(c.node(id).commit() >= index);
    CHECK(DataOf(c.applied(id)) == std::vector<std::string>{"x"});
  }
}

TEST_CASE("a follower's divergent tail is replaced by the leader's entries") {
  raft::Restored restored;
  restored.hard_state = HardState{1, 0, 1};
  restored.entries = {MakeEntry(1, 1, "a"), MakeEntry(2, 1, "b"),
                      MakeEntry(3, 1, "c")};
  raft::Node n(OptionsOf(2, {1, 2, 3}), restored);
  Message m;
  m.type = MessageType::kAppend;
  m.from = 1;
  m.to = 2;
  m.term = 2;
  m.index = 1;
  m.log_term = 1;
  m.entries = {MakeEntry(2, 2, "X")};
  n.Step(m);
  CHECK(n.last_index() == 2);
  CHECK(n.TermAt(2) == 2);
  REQUIRE(n.EntriesBetween(1, 3).size() == 2);
  CHECK(n.EntriesBetween(2, 2)[0].data == "X");
  REQUIRE(n.HasReady());
  Ready rd = n.TakeReady();
  // On disk, everything from index 2 on is replaced by "X".
  REQUIRE(rd.entries.size() == 1);
  CHECK(rd.entries[0] == MakeEntry(2, 2, "X"));
  std::vector<Message> replies = OfType(rd.messages, MessageType::kAppendReply);
  REQUIRE(replies.size() == 1);
  CHECK_FALSE(replies[0].reject);
  CHECK(replies[0].index == 2);
  CHECK(replies[0].term == 2);
}

TEST_CASE("an append from an older term is refused, with the newer term") {
  raft::Restored restored;
  restored.hard_state = HardState{5, 0, 0};
  restored.entries = {MakeEntry(1, 5, "a")};
  raft::Node n(OptionsOf(2, {1, 2, 3}), restored);
  Message m;
  m.type = MessageType::kAppend;
  m.from = 1;
  m.to = 2;
  m.term = 3;
  m.index = 1;
  m.log_term = 5;
  m.commit = 2;
  m.entries = {MakeEntry(2, 3, "stale")};
  n.Step(m);
  CHECK(n.term() == 5);
  CHECK(n.leader() == 0);
  CHECK(n.last_index() == 1);
  CHECK(n.commit() == 0);
  Ready rd = n.TakeReady();
  CHECK(rd.entries.empty());
  CHECK(rd.committed.empty());
  std::vector<Message> replies = OfType(rd.messages, MessageType::kAppendReply);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].to == 1);
  CHECK(replies[0].reject);
  CHECK(replies[0].term == 5);  // the old leader learns it is deposed
}

TEST_CASE("a replica restarted from its hard state keeps its term and vote") {
  const raft::Options options = OptionsOf(3, {1, 2, 3});
  auto vote_request = [](NodeId from) {
    Message m;
    m.type = MessageType::kVote;
    m.from = from;
    m.to = 3;
    m.term = 4;
    return m;
  };
  HardState saved;
  {
    raft::Node n(options);
    n.Step(vote_request(1));
    Ready rd = n.TakeReady();
    REQUIRE(rd.hard_state);
    saved = *rd.hard_state;
    CHECK(saved.term == 4);
    CHECK(saved.vote == 1);
    std::vector<Message> replies = OfType(rd.messages, MessageType::kVoteReply);
    REQUIRE(replies.size() == 1);
    CHECK_FALSE(replies[0].reject);
  }
  raft::Restored restored;
  restored.hard_state = saved;
  raft::Node n(options, restored);
  CHECK(n.term() == 4);
  CHECK(n.vote() == 1);
  // Another candidate of the same term gets no second vote.
  n.Step(vote_request(2));
  Ready rd = n.TakeReady();
  std::vector<Message> replies = OfType(rd.messages, MessageType::kVoteReply);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].to == 2);
  CHECK(replies[0].reject);
  CHECK(n.vote() == 1);
  n.Advance(rd);
  // The one it voted for still has it.
  n.Step(vote_request(1));
  rd = n.TakeReady();
  replies = OfType(rd.messages, MessageType::kVoteReply);
  REQUIRE(replies.size() == 1);
  CHECK_FALSE(replies[0].reject);
}

TEST_CASE("a follower behind the leader's compaction is sent a snapshot") {
  Cluster c({1, 2, 3});
  NodeId leader = c.TickUntilLeader();
  REQUIRE(leader != 0);
  NodeId behind = leader == 3 ? 2 : 3;
  c.Cut(behind);
  for (int i = 0; i < 10; ++i)
    REQUIRE(c.node(leader).Propose("v" + std::to_string(i)) > 0);
  c.Settle();
  c.Tick();
  const uint64_t applied = c.node(leader).applied();
  REQUIRE(applied == c.node(leader).last_index());
  REQUIRE(c.node(behind).last_index() < applied);
  // Compacted short of what is applied: the snapshot sent is of the state
  // machine as it is (at applied), whatever was compacted.
  c.node(leader).Compact(applied - 2);
  CHECK(c.node(leader).first_index() == applied - 1);
  CHECK(c.node(leader).snapshot().index == applied - 2);

  c.Join(behind);
  c.Tick(3);
  std::vector<Message> snapshots = OfType(c.sent(), MessageType::kSnapshot);
  REQUIRE_FALSE(snapshots.empty());
  CHECK(snapshots[0].to == behind);
  CHECK(snapshots[0].snapshot.index == applied);
  bool restored = false;
  for (const Ready& rd : c.readies(behind)) {
    if (!rd.snapshot) continue;
    restored = true;
    CHECK(rd.snapshot->index == applied);
    CHECK(rd.snapshot->term == c.node(leader).term());
    CHECK(rd.snapshot_data == "state@" + std::to_string(applied));
    CHECK(rd.snapshot->voters == std::vector<NodeId>{1, 2, 3});
  }
  CHECK(restored);
  CHECK(c.node(behind).commit() == applied);
  CHECK(c.node(behind).snapshot().index == applied);
  // And it goes on from there.
  uint64_t next = c.node(leader).Propose("after");
  REQUIRE(next == applied + 1);
  c.Settle();
  c.Tick();
  REQUIRE_FALSE(c.applied(behind).empty());
  CHECK(c.applied(behind).back().index == next);
  CHECK(c.applied(behind).back().data == "after");
}
