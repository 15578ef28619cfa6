// natter-bench latency: how long a message takes at a fixed offered rate.
// Messages go out round robin over pairs of clients at the rate, whatever
// the answers do (an open loop: a slow cell makes them wait, and that
// shows); each one's time from the moment it was due to its processed
// receipt and to its delivery is recorded.
#include <sysexits.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/daemon.h"
#include "tools/bench/bench.h"
#include "tools/bench/pairs.h"

namespace po = boost::program_options;

namespace natter {
namespace bench {
namespace {

struct LatencySettings {
  unsigned pairs = 10;
  double rate = 1000;  // messages a second, all pairs
  double seconds = 10;
  size_t text_bytes = 256;
  CellOptions cell;
};

LatencySettings ParseLatency(const std::vector<std::string>& args) {
  LatencySettings st;
  po::options_description opts;
  opts.add_options()("rate", po::value(&st.rate))(
      "seconds", po::value(&st.seconds))("pairs",
                                         UintValue("pairs", &st.pairs))(
      "text-bytes", UintValue("text-bytes", &st.text_bytes));
  ParseMode("latency", args, opts, &st.cell);
  if (st.pairs < 1 || st.rate <= 0 || st.seconds <= 0 || st.text_bytes < 16 ||
      st.text_bytes > kMaxTextBytes) {
    throw Exit{EX_USAGE,
               "latency: --rate, --seconds and --pairs above 0; --text-bytes "
               "16 to 4096"};
  }
  return st;
}

// Each message's milliseconds from the moment it was due to its receipt
// and to its delivery.
class Stopwatch : public Pairs::Observer {
 public:
  void Sent(const std::string& client_msg_id, Clock::time_point due) {
    sent_at_[client_msg_id] = due;
  }
  void Processed(const std::string& client_msg_id) override;
  void Delivered(const std::string& client_msg_id) override;
  const std::vector<double>& to_processed() const { return to_processed_; }
  const std::vector<double>& to_delivered() const { return to_delivered_; }

 private:
  void Note(const std::string& client_msg_id, std::vector<double>* ms) {
    auto it = sent_at_.find(client_msg_id);
    if (it == sent_at_.end()) return;
    ms->push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - it->second)
            .count());
  }

  std::unordered_map<std::string, Clock::time_point> sent_at_;
  std::vector<double> to_processed_, to_delivered_;
};

void Stopwatch::Processed(const std::string& client_msg_id) {
  Note(client_msg_id, &to_processed_);
}

void Stopwatch::Delivered(const std::string& client_msg_id) {
  Note(client_msg_id, &to_delivered_);
}

// The open loop: sends at the offered rate for the given seconds, round
// robin over the pairs, taking what comes back in between.
class LatencyLoad {
 public:
  LatencyLoad(const LatencySettings& st, Pairs* pairs, Stopwatch* stopwatch)
      : gap_(Seconds(1.0 / st.rate)),
        seconds_(st.seconds),
        text_(st.text_bytes, 'x'),
        pairs_(pairs),
        stopwatch_(stopwatch) {}

  void Run() {
    auto start = Clock::now();
    next_ = start;
    for (auto end = start + Seconds(seconds_); Clock::now() < end;) {
      SendDue();
      pairs_->TakeReady();
      // At least a millisecond (the poll's unit): a wait of 0 until the
      // next send would spin a core away from the cell.  A message sent
      // late is still timed from when it was due.
      auto until_due = std::chrono::duration_cast<std::chrono::microseconds>(
          next_ - Clock::now());
      pairs_->WaitForAny(
          std::clamp<long>((until_due.count() + 999) / 1000, 1, 5));
    }
    elapsed_ = SecondsSince(start);
  }

  uint64_t sent() const { return sent_; }
  double elapsed() const { return elapsed_; }

 private:
  // Every message due by now, each timed from when it was due.
  void SendDue() {
    for (auto now = Clock::now(); next_ <= now; next_ += gap_) {
      Pair& p = (*pairs_)[turn_++ % pairs_->size()];
      stopwatch_->Sent(p.from->Send(p.to->user(), text_), next_);
      ++sent_;
    }
  }

  const Clock::duration gap_;
  double seconds_;
  std::string text_;
  Pairs* pairs_;
  Stopwatch* stopwatch_;
  Clock::time_point next_;
  size_t turn_ = 0;
  uint64_t sent_ = 0;
  double elapsed_ = 0;
};

// p50, p99, p99.9 and max of a set of milliseconds, as JSON keys with a
// prefix; also printed.
void Percentiles(const char* what, const std::string& prefix,
                 std::vector<double> ms, nlohmann::json* out) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return Quantile(ms, q); };
  (*out)[prefix + "p50_ms"] = at(0.50);
  (*out)[prefix + "p99_ms"] = at(0.99);
  (*out)[prefix + "p999_ms"] = at(0.999);
  (*out)[prefix + "max_ms"] = ms.empty() ? 0.0 : ms.back();
  std::fprintf(stderr, "%-18s %9.3f %9.3f %9.3f %9.3f  (%zu samples)\n", what,
               at(0.50), at(0.99), at(0.999), ms.empty() ? 0.0 : ms.back(),
               ms.size());
}

void Report(const LatencyLoad& load, const Pairs& pairs,
            const Stopwatch& stopwatch, nlohmann::json* out) {
  double offered = static_cast<double>(load.sent()) / load.elapsed();
  (*out)["sent"] = load.sent();
  (*out)["processed"] = pairs.processed();
  (*out)["errors"] = pairs.errors();
  (*out)["lost"] = pairs.lost();
  (*out)["offered_per_s"] = offered;
  std::fprintf(
      stderr, "%.0f messages/s offered for %.1f s: %llu processed, %llu lost\n",
      offered, load.elapsed(),
      static_cast<unsigned long long>(pairs.processed()),
      static_cast<unsigned long long>(pairs.lost()));
  std::fprintf(stderr, "%-18s %9s %9s %9s %9s\n", "ms", "p50", "p99", "p99.9",
               "max");
  Percentiles("send->processed", "processed_", stopwatch.to_processed(), out);
  Percentiles("send->delivered", "", stopwatch.to_delivered(), out);
}

}  // namespace

int Latency(const std::vector<std::string>& args) {
  LatencySettings st = ParseLatency(args);
  BenchDir dir(st.cell.dir, st.cell.keep);
  nlohmann::json out = {
      {"mode", "latency"},        {"rate", st.rate},
      {"seconds", st.seconds},    {"pairs", st.pairs},
      {"shards", st.cell.shards}, {"text_bytes", st.text_bytes}};
  LocalCell cell(ProgramDir(), dir.path + "/cell", st.cell.shards,
                 st.cell.Conf(), {}, "", st.cell.replicas, st.cell.frontds);
  Stopwatch stopwatch;
  Pairs pairs(cell, st.pairs, &stopwatch);
  Daemons daemons(cell, st.cell);
  DaemonWatch watch(daemons);
  LatencyLoad load(st, &pairs, &stopwatch);
  load.Run();
  pairs.Drain(std::chrono::seconds(60));
  watch.Stop(pairs.processed());
  Report(load, pairs, stopwatch, &out);
  watch.Report(load.elapsed(), &out);
  Emit(&out, st.cell);
  return pairs.lost() == 0 ? EX_OK : 1;
}

}  // namespace bench
}  // namespace natter
