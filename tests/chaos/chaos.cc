// natter-chaos: many clients send while daemons are killed at random, then
// an audit of every message.  A short run is part of `make check`; a long
// one is run by hand:
//
//   build/natter-chaos --seed 7 --seconds 600 --shards 3 --pairs 16
//   build/natter-chaos --seed 7 --seconds 600 --shards 2 --replicas 3
//
// It starts its own cell (natterctl up, which restarts what is killed) in
// a temporary folder, with P pairs of users, each user with two devices;
// the first device of each user sends to the partner at --rate messages a
// second (all senders together).  Every --kill-every seconds on average it
// kills one daemon (SIGKILL, now and then SIGTERM), chosen with the seed:
// with --replicas 3, any replica of any shard, the leader too.
// After --seconds it stops killing and sending, waits for every send's
// answer and every device's events, and audits:
//
//   attempted   sends made
//   processed   sends with a processed receipt
//   lost        processed messages missing from either user's history or
//               from one of the devices that should have received them
//   duplicated  messages found twice in a history or on a device, or a
//               client_msg_id stored under two ids
//   unanswered  sends without an answer at the end
//
// The last line is "N processed, L lost, D duplicated"; the exit status is
// 0 only if nothing was lost, duplicated or left unanswered.
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "common/flags.h"
#include "common/text.h"
#include "common/token.h"
#include "tests/support/local_cell.h"
#include "tests/support/temp_dir.h"

namespace natter {
namespace {

using Clock = std::chrono::steady_clock;

struct Settings {
  uint64_t seed = 1;
  double seconds = 20;
  unsigned shards = 3;
  unsigned replicas = 1;
  unsigned pairs = 4;
  double rate = 200;        // messages a second, all senders together
  double kill_every = 1.5;  // seconds between kills, on average
  bool keep = false;
};

struct Sent {
  UserId from, to;
  bool answered = false;
  bool processed = false;
  MessageId id;
};

struct Dev {
  std::unique_ptr<Client> client;
  UserId user;
  UserId partner;
  bool sender = false;
  // Each message event, by id: how many times it came.
  std::map<uint64_t, int> messages;
};

pid_t PidOf(const std::string& dir, const std::string& name) {
  std::string line;
  if (!ReadFirstLine(dir + "/run/" + name + ".pid", &line)) return -1;
  auto v = ParseUint(line);
  return v ? static_cast<pid_t>(*v) : -1;
}

void Take(Dev* d, std::map<std::string, Sent>* sent) {
  std::vector<Incoming> in;
  d->client->Poll(0, &in);
  for (const Incoming& i : in) {
    switch (i.kind) {
      case Incoming::Kind::kProcessed: {
        auto it = sent->find(i.processed.client_msg_id);
        if (it == sent->end()) break;
        it->second.answered = true;
        if (it->second.processed && it->second.id != i.processed.id) {
          std::fprintf(stderr, "chaos: %s processed as two ids\n",
                       i.processed.client_msg_id.c_str());
          it->second.id = MessageId(0);  // audited as a duplicate
          break;
        }
        it->second.processed = true;
        it->second.id = i.processed.id;
        break;
      }
      case Incoming::Kind::kError: {
        auto it = sent->find(i.client_msg_id);
        if (it != sent->end()) it->second.answered = true;
        std::fprintf(stderr, "chaos: error for %s: %s\n",
                     i.client_msg_id.c_str(), i.error.ToString().c_str());
        break;
      }
      case Incoming::Kind::kEvent:
        if (i.event.message() != nullptr) ++d->messages[i.event.id().value];
        break;
      default:
        break;
    }
  }
}

// The ids in the user's history with peer, walked forward.
std::vector<uint64_t> HistoryOf(LocalCell& cell, zmq::context_t& ctx,
                                UserId user, UserId peer, bool* ok) {
  ClientOptions o = cell.Options(user.value, "auditor");
  o.receive = false;
  o.timeout_ms = 30000;
  Client c(o, &ctx);
  std::vector<uint64_t> ids;
  if (!c.Connect().ok()) {
    *ok = false;
    return ids;
  }
  for (;;) {
    History q;
    q.peer = peer;
    q.mode = HistoryMode::kAfter;
    q.bound = ids.empty() ? 0 : ids.back();
    q.limit = kMaxHistoryPage;
    uint64_t req = c.GetHistory(q);
    HistoryReply page;
    bool got = false;
    auto until = Clock::now() + std::chrono::seconds(30);
    while (!got && Clock::now() < until) {
      std::vector<Incoming> in;
      c.Poll(100, &in);
      for (const Incoming& i : in) {
        if (i.request != req) continue;
        if (i.kind != Incoming::Kind::kHistory) {
          *ok = false;
          return ids;
        }
        page = i.history;
        got = true;
      }
    }
    if (!got) {
      *ok = false;
      return ids;
    }
    for (const auto& item : page.messages) ids.push_back(item.message.id.value);
    if (!page.more || page.messages.empty()) return ids;
  }
}

int Run(const Settings& st) {
  std::unique_ptr<TempDir> folder;
  try {
    folder = std::make_unique<TempDir>("natter-chaos", st.keep);
  } catch (const std::runtime_error& e) {
    std::fprintf(stderr, "natter-chaos: %s\n", e.what());
    return 71;
  }
  const std::string& dir = folder->path();
  std::fprintf(stderr,
               "chaos: seed=%llu seconds=%.0f shards=%u replicas=%u pairs=%u "
               "rate=%.0f dir=%s\n",
               static_cast<unsigned long long>(st.seed), st.seconds, st.shards,
               st.replicas, st.pairs, st.rate, dir.c_str());
  std::mt19937_64 rng(st.seed);
  int status = 1;
  {
    // Each user sends rate / (2 pairs) a second, and more after an outage:
    // its rate of writes at its shard (natter-stored(8)) leaves twice that,
    // and is never below the default (50 a second, bursts of 500).
    uint64_t user_rate =
        std::max<uint64_t>(50, static_cast<uint64_t>(st.rate / st.pairs + 1));
    LocalCell cell(TestBinDir(), dir, st.shards,
                   "[stored]\nuser-rate = " + std::to_string(user_rate) +
                       "\nuser-burst = " + std::to_string(10 * user_rate),
                   {}, "", st.replicas);
    zmq::context_t ctx(1);
    std::vector<Dev> devs;
    for (unsigned p = 0; p < st.pairs; ++p) {
      UserId a(1000 + 2 * p), b(1001 + 2 * p);
      for (auto [user, partner] : {std::pair{a, b}, std::pair{b, a}}) {
        for (int k = 0; k < 2; ++k) {
          Dev d;
          ClientOptions o =
              cell.Options(user.value, k == 0 ? "phone" : "laptop");
          o.timeout_ms = 600000;  // retry through every outage
          o.retry_ms = 1000;
          d.client = std::make_unique<Client>(o, &ctx);
          Status s = d.client->Connect();
          if (!s.ok()) {
            std::fprintf(stderr, "natter-chaos: connect: %s\n",
                         s.ToString().c_str());
            return 69;
          }
          d.user = user;
          d.partner = partner;
          d.sender = k == 0;
          devs.push_back(std::move(d));
        }
      }
    }
    // Every device caught up before the first send: a new device's mailbox
    // starts where it first synced.
    auto settle = Clock::now() + std::chrono::seconds(20);
    std::map<std::string, Sent> sent;
    for (bool all = false; !all;) {
      if (Clock::now() >= settle) {
        std::fprintf(
            stderr, "natter-chaos: the devices did not catch up within 20 s\n");
        return 69;
      }
      all = true;
      for (Dev& d : devs) {
        Take(&d, &sent);
        all = all && d.client->CaughtUp();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }

    std::vector<std::string> targets = {"frontd", "routed", "notifyd"};
    for (unsigned s = 0; s < st.shards; ++s) {
      for (unsigned k = 0; k < st.replicas; ++k) {
        std::string name = "stored-" + std::to_string(s);
        if (st.replicas > 1) name += "." + std::to_string(k);
        targets.push_back(name);
      }
    }
    std::exponential_distribution<double> gap(1.0 / st.kill_every);
    auto start = Clock::now();
    auto end =
        start + std::chrono::milliseconds(static_cast<long>(st.seconds * 1000));
    auto next_kill =
        start + std::chrono::milliseconds(static_cast<long>(gap(rng) * 1000));
    const auto send_gap = std::chrono::duration<double>(1.0 / st.rate);
    auto next_send = start;
    size_t turn = 0, kills = 0;
    std::vector<size_t> senders;
    for (size_t i = 0; i < devs.size(); ++i) {
      if (devs[i].sender) senders.push_back(i);
    }
    auto last_progress = Clock::now();
    while (Clock::now() < end) {
      auto now = Clock::now();
      while (next_send <= now) {
        Dev& d = devs[senders[turn++ % senders.size()]];
        std::string cmid =
            d.client->Send(d.partner, "chaos " + std::to_string(sent.size()));
        Sent& s = sent[cmid];
        s.from = d.user;
        s.to = d.partner;
        next_send += std::chrono::duration_cast<Clock::duration>(send_gap);
      }
      if (now >= next_kill) {
        const std::string& name = targets[rng() % targets.size()];
        int sig = rng() % 5 == 0 ? SIGTERM : SIGKILL;
        pid_t pid = PidOf(dir, name);
        if (pid > 0 && ::kill(pid, sig) == 0) {
          ++kills;
          std::fprintf(stderr, "chaos: %.1fs %s %s (pid %d)\n",
                       std::chrono::duration<double>(now - start).count(),
                       sig == SIGKILL ? "kill -9" : "kill -TERM", name.c_str(),
                       static_cast<int>(pid));
        }
        next_kill =
            now + std::chrono::milliseconds(static_cast<long>(gap(rng) * 1000));
      }
      for (Dev& d : devs) Take(&d, &sent);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (now - last_progress > std::chrono::seconds(5)) {
        size_t answered = 0;
        for (const auto& [cmid, s] : sent) answered += s.answered;
        std::fprintf(stderr, "chaos: %.0fs sent=%zu answered=%zu kills=%zu\n",
                     std::chrono::duration<double>(now - start).count(),
                     sent.size(), answered, kills);
        last_progress = now;
      }
    }

    // Quiet: every send answered, every device has every message (or give
    // up after two minutes and count what is missing).
    std::fprintf(
        stderr, "chaos: stopped killing after %zu kills; waiting for answers\n",
        kills);
    auto expected_on = [&](const Dev& d, const Sent& s) {
      // Both devices of the recipient; the sender's other device.
      return d.user == s.to || (d.user == s.from && !d.sender);
    };
    auto complete = [&] {
      for (const auto& [cmid, s] : sent) {
        if (!s.answered) return false;
        if (!s.processed) continue;
        for (const Dev& d : devs) {
          if (expected_on(d, s) && !d.messages.count(s.id.value)) return false;
        }
      }
      return true;
    };
    auto quiet_until = Clock::now() + std::chrono::seconds(120);
    while (!complete()) {
      if (Clock::now() >= quiet_until) {
        std::fprintf(stderr,
                     "chaos: gave up waiting after 120 s; the audit counts "
                     "what is missing\n");
        break;
      }
      for (Dev& d : devs) Take(&d, &sent);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }

    // The audit.
    size_t processed = 0, lost = 0, duplicated = 0, unanswered = 0;
    std::map<std::pair<uint64_t, uint64_t>, std::map<uint64_t, int>> histories;
    bool history_ok = true;
    for (unsigned p = 0; p < st.pairs; ++p) {
      UserId a(1000 + 2 * p), b(1001 + 2 * p);
      for (auto [user, peer] : {std::pair{a, b}, std::pair{b, a}}) {
        auto& h = histories[{user.value, peer.value}];
        for (uint64_t id : HistoryOf(cell, ctx, user, peer, &history_ok))
          ++h[id];
      }
    }
    if (!history_ok)
      std::fprintf(stderr, "chaos: a history could not be read\n");
    std::set<uint64_t> ids;
    for (const auto& [cmid, s] : sent) {
      if (!s.answered) ++unanswered;
      if (!s.processed) continue;
      ++processed;
      if (s.id.value == 0 || !ids.insert(s.id.value).second) {
        ++duplicated;
        continue;
      }
      bool missing = false, twice = false;
      for (auto owner : {std::pair{s.from, s.to}, std::pair{s.to, s.from}}) {
        auto& h = histories[{owner.first.value, owner.second.value}];
        auto it = h.find(s.id.value);
        missing = missing || it == h.end();
        twice = twice || (it != h.end() && it->second > 1);
      }
      for (const Dev& d : devs) {
        if (!expected_on(d, s)) continue;
        auto it = d.messages.find(s.id.value);
        missing = missing || it == d.messages.end();
        twice = twice || (it != d.messages.end() && it->second > 1);
      }
      if (missing) {
        ++lost;
        if (lost <= 5) {
          std::fprintf(stderr, "chaos: lost %s id=%llu from=%llu to=%llu\n",
                       cmid.c_str(),
                       static_cast<unsigned long long>(s.id.value),
                       static_cast<unsigned long long>(s.from.value),
                       static_cast<unsigned long long>(s.to.value));
        }
      }
      if (twice) ++duplicated;
    }
    // Messages in a history that no send made are duplicates too.
    for (const auto& [key, h] : histories) {
      for (const auto& [id, n] : h) {
        if (!ids.count(id)) ++duplicated;
      }
    }
    std::fprintf(
        stderr, "chaos: attempted=%zu processed=%zu unanswered=%zu kills=%zu\n",
        sent.size(), processed, unanswered, kills);
    std::printf("%zu processed, %zu lost, %zu duplicated\n", processed, lost,
                duplicated);
    std::fflush(stdout);
    status = (lost == 0 && duplicated == 0 && unanswered == 0 && history_ok &&
              processed > 0)
                 ? 0
                 : 1;
  }
  if (folder->kept()) std::fprintf(stderr, "chaos: kept %s\n", dir.c_str());
  return status;
}

}  // namespace
}  // namespace natter

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  natter::Settings st;
  po::options_description opts("natter-chaos options");
  opts.add_options()("seed", natter::UintValue("seed", &st.seed),
                     "seed of the kill schedule (default 1)")(
      "seconds", po::value(&st.seconds),
      "how long to send and kill (default 20)")(
      "shards", natter::UintValue("shards", &st.shards),
      "shards of the cell (default 3)")(
      "replicas", natter::UintValue("replicas", &st.replicas),
      "replicas of each shard: 1, 3 or 5 (default 1)")(
      "pairs", natter::UintValue("pairs", &st.pairs),
      "pairs of users, two devices each (default 4)")(
      "rate", po::value(&st.rate),
      "messages a second, all senders (default 200)")(
      "kill-every", po::value(&st.kill_every),
      "seconds between kills on average (default 1.5)")(
      "keep", po::bool_switch(&st.keep), "keep the cell's folder (logs, data)")(
      "help,h", "show this");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "natter-chaos: %s\n", e.what());
    return 64;
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  if (st.replicas != 1 && st.replicas != 3 && st.replicas != 5) {
    std::fprintf(stderr, "natter-chaos: replicas is 1, 3 or 5\n");
    return 64;
  }
  if (st.pairs == 0 || st.shards == 0 || st.rate <= 0 || st.seconds <= 0 ||
      st.kill_every <= 0) {
    std::fprintf(stderr,
                 "natter-chaos: pairs, shards, rate, seconds and kill-every "
                 "must be above 0\n");
    return 64;
  }
  try {
    return natter::Run(st);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "natter-chaos: %s\n", e.what());
    return 70;
  }
}
