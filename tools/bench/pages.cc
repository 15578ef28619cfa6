// natter-bench pages: how long a catch-up page and a history page take at
// any point of a mailbox and a conversation of many messages, next to a
// small one.  User 1 fills user 2's mailbox and their conversation, user 3
// a small one for user 4; then each page is asked for again and again and
// its round trip timed.
#include <sysexits.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "client/client.h"
#include "common/daemon.h"
#include "tools/bench/bench.h"

namespace po = boost::program_options;

namespace natter {
namespace bench {
namespace {

struct PagesSettings {
  uint64_t messages = 1000000;  // the large conversation
  uint64_t small = 1000;        // the small one
  int samples = 200;            // round trips timed for each page
  CellOptions cell;
};

PagesSettings ParsePages(const std::vector<std::string>& args) {
  PagesSettings st;
  po::options_description opts;
  opts.add_options()("messages", UintValue("messages", &st.messages))(
      "small", UintValue("small", &st.small))("samples",
                                              po::value(&st.samples));
  ParseMode("pages", args, opts, &st.cell);
  if (st.messages < 1000 || st.small < 10 || st.small > st.messages ||
      st.samples < 1) {
    throw Exit{
        EX_USAGE,
        "pages: --messages >= 1000, --small 10 to --messages, --samples >= 1"};
  }
  return st;
}

// Waits for the answer to one request.
Incoming Await(Client& c, uint64_t request) {
  std::vector<Incoming> in;
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    in.clear();
    c.Poll(50, &in);
    for (Incoming& item : in) {
      if (item.request != request || item.kind == Incoming::Kind::kEvent)
        continue;
      if (item.kind == Incoming::Kind::kError)
        throw Exit{EX_UNAVAILABLE, item.error.message()};
      return std::move(item);
    }
  }
  throw Exit{EX_UNAVAILABLE, "no answer within 60s"};
}

// Sends n messages from one client to a user, keeping kWindow of them in
// flight, with a progress line each second; hands back their receipts in
// the order they were sent.
class Filler {
 public:
  Filler(Client* from, UserId to, uint64_t n, const char* what)
      : from_(from), to_(to), n_(n), what_(what), by_index_(n) {}

  std::vector<Processed> Run() {
    start_ = shown_ = Clock::now();
    while (done_ < n_) {
      SendMore();
      Take();
      ShowProgress();
    }
    std::fprintf(stderr, "\r%60s\r", "");
    return std::move(by_index_);
  }

 private:
  static constexpr size_t kWindow = 2000;

  void SendMore() {
    while (sent_ < n_ && from_->SendsInFlight() < kWindow) {
      index_[from_->Send(to_, std::to_string(sent_) + " " + text_)] = sent_;
      ++sent_;
    }
  }

  void Take() {
    in_.clear();
    from_->Poll(20, &in_);
    for (Incoming& item : in_) {
      if (item.kind == Incoming::Kind::kError)
        throw Exit{EX_UNAVAILABLE, item.error.message()};
      if (item.kind != Incoming::Kind::kProcessed) continue;
      auto it = index_.find(item.processed.client_msg_id);
      if (it == index_.end()) continue;
      by_index_[it->second] = item.processed;
      index_.erase(it);
      ++done_;
    }
  }

  void ShowProgress() {
    if (Clock::now() - shown_ < std::chrono::seconds(1)) return;
    shown_ = Clock::now();
    double s = std::chrono::duration<double>(shown_ - start_).count();
    std::fprintf(stderr, "\rfilling %s: %llu/%llu processed, %.0f/s   ", what_,
                 static_cast<unsigned long long>(done_),
                 static_cast<unsigned long long>(n_),
                 static_cast<double>(done_) / s);
  }

  Client* from_;
  UserId to_;
  uint64_t n_;
  const char* what_;
  std::string text_ =
      std::string(200, 'x');  // a 256-byte message, give or take the counter
  std::map<std::string, uint64_t>
      index_;  // client_msg_id -> the message's number
  std::vector<Processed> by_index_;
  uint64_t sent_ = 0, done_ = 0;
  Clock::time_point start_, shown_;
  std::vector<Incoming> in_;
};

struct Figure {
  double p50_ms;
  double p99_ms;
};

// Times one kind of page: asks for it `samples` times, one at a time.
class PageTimer {
 public:
  static constexpr uint32_t kCatchUp = 500, kHistory = 50;

  explicit PageTimer(int samples) : samples_(samples) {}

  // The catch-up page of c's mailbox after seq `after`.
  Figure CatchUp(Client& c, uint64_t after) const {
    return Measure(
        [&c, after] { Await(c, c.GetMailbox(Seq(after), kCatchUp)); });
  }

  // A history page of c's conversation with peer.
  Figure HistoryPage(Client& c, UserId peer, HistoryMode mode,
                     uint64_t bound) const {
    History q;
    q.peer = peer;
    q.mode = mode;
    q.bound = bound;
    q.limit = kHistory;
    return Measure([&c, &q] { Await(c, c.GetHistory(q)); });
  }

 private:
  Figure Measure(const std::function<void()>& once) const {
    std::vector<double> ms;
    for (int i = 0; i < samples_; ++i) {
      auto t0 = Clock::now();
      once();
      ms.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return {Quantile(ms, 0.50), Quantile(ms, 0.99)};
  }

  int samples_;
};

using Figures = std::vector<std::pair<std::string, Figure>>;

// Fills the conversations (fill_seconds, fill_per_s into out), then times
// every page.  The cell is gone when it returns.
Figures FillAndTime(const PagesSettings& st, const BenchDir& dir,
                    nlohmann::json* out) {
  LocalCell cell(ProgramDir(), dir.path + "/cell", st.cell.shards,
                 st.cell.Conf(), {}, "", st.cell.replicas, st.cell.frontds);
  Client big(cell.Options(1, "bench")), reader(cell.Options(2, "bench"));
  Client little(cell.Options(3, "bench")),
      little_reader(cell.Options(4, "bench"));
  for (Client* c : {&big, &reader, &little, &little_reader}) {
    Status s = c->Connect();
    if (!s.ok()) throw Exit{EX_UNAVAILABLE, s.message()};
  }
  // The daemons' CPU a message while filling.
  Daemons daemons(cell, st.cell);
  DaemonWatch watch(daemons);
  auto t0 = Clock::now();
  std::vector<Processed> ids =
      Filler(&big, UserId(2), st.messages, "the large conversation").Run();
  double fill_s = SecondsSince(t0);
  Filler(&little, UserId(4), st.small, "the small conversation").Run();
  watch.Stop(st.messages + st.small);
  watch.Report(SecondsSince(t0), out);
  (*out)["fill_seconds"] = fill_s;
  (*out)["fill_per_s"] = static_cast<double>(st.messages) / fill_s;

  const PageTimer t(st.samples);
  const uint64_t n = st.messages;
  const UserId big_user(1);
  return {
      {"catchup_small", t.CatchUp(little_reader, 0)},
      {"catchup_start", t.CatchUp(reader, 0)},
      {"catchup_middle", t.CatchUp(reader, n / 2)},
      {"catchup_end", t.CatchUp(reader, n - PageTimer::kCatchUp)},
      {"history_small_latest",
       t.HistoryPage(little_reader, UserId(3), HistoryMode::kLatest, 0)},
      {"history_latest",
       t.HistoryPage(reader, big_user, HistoryMode::kLatest, 0)},
      {"history_at_middle",
       t.HistoryPage(reader, big_user, HistoryMode::kAt, ids[n / 2].ts)},
      {"history_before_start",
       t.HistoryPage(reader, big_user, HistoryMode::kBefore,
                     ids[n / 100].id.value)},
      {"history_after_middle",
       t.HistoryPage(reader, big_user, HistoryMode::kAfter,
                     ids[n / 2].id.value)},
  };
}

void Report(const Figures& figures, const PagesSettings& st,
            nlohmann::json* out) {
  std::fprintf(stderr, "%-22s %10s %10s\n", "page (round trip)", "p50 ms",
               "p99 ms");
  for (const auto& [name, f] : figures) {
    (*out)[name + "_p50_ms"] = f.p50_ms;
    (*out)[name + "_p99_ms"] = f.p99_ms;
    std::fprintf(stderr, "%-22s %10.3f %10.3f\n", name.c_str(), f.p50_ms,
                 f.p99_ms);
  }
  std::fprintf(stderr, "filled %llu messages in %.1f s (%.0f/s)\n",
               static_cast<unsigned long long>(st.messages),
               (*out)["fill_seconds"].get<double>(),
               (*out)["fill_per_s"].get<double>());
}

}  // namespace

int Pages(const std::vector<std::string>& args) {
  PagesSettings st = ParsePages(args);
  BenchDir dir(st.cell.dir, st.cell.keep);
  nlohmann::json out = {{"mode", "pages"},
                        {"messages", st.messages},
                        {"small_messages", st.small},
                        {"samples", st.samples},
                        {"shards", st.cell.shards}};
  Figures figures = FillAndTime(st, dir, &out);
  Report(figures, st, &out);
  Emit(&out, st.cell);
  return EX_OK;
}

}  // namespace bench
}  // namespace natter
