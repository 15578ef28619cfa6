// natter-bench throughput: pairs of clients, each sender keeping a window
// of sends unanswered; processed and delivered messages a second, loss, and
// each daemon's CPU time and memory (peak, and after the load).
#include <sysexits.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/daemon.h"
#include "tools/bench/bench.h"
#include "tools/bench/pairs.h"

namespace po = boost::program_options;

namespace natter {
namespace bench {
namespace {

struct ThroughputSettings {
  unsigned pairs = 10;
  size_t window = 200;  // sends unanswered, each sender
  double seconds = 10;  // the sending time
  size_t text_bytes = 256;
  CellOptions cell;
};

ThroughputSettings ParseThroughput(const std::vector<std::string>& args) {
  ThroughputSettings st;
  po::options_description opts;
  opts.add_options()("pairs", UintValue("pairs", &st.pairs))(
      "window", UintValue("window", &st.window))("seconds",
                                                 po::value(&st.seconds))(
      "text-bytes", UintValue("text-bytes", &st.text_bytes));
  ParseMode("throughput", args, opts, &st.cell);
  if (st.pairs < 1 || st.window < 1 || st.seconds <= 0 || st.text_bytes < 16 ||
      st.text_bytes > kMaxTextBytes) {
    throw Exit{EX_USAGE,
               "throughput: --pairs, --window and --seconds above 0; "
               "--text-bytes 16 to 4096"};
  }
  return st;
}

// The sending time: every sender keeps its window full, with a progress
// line (and a sample of the daemons) each second.
class ThroughputLoad {
 public:
  ThroughputLoad(const ThroughputSettings& st, Pairs* pairs, DaemonWatch* watch)
      : window_(st.window),
        seconds_(st.seconds),
        text_(st.text_bytes, 'x'),
        pairs_(pairs),
        watch_(watch) {}

  void Run() {
    start_ = shown_ = Clock::now();
    for (auto end = start_ + Seconds(seconds_); Clock::now() < end;) {
      for (Pair& p : *pairs_) TopUp(p);
      pairs_->TakeReady();
      pairs_->WaitForAny(5);
      EachSecond();
    }
    elapsed_ = SecondsSince(start_);
    processed_ = pairs_->processed();
    delivered_ = pairs_->delivered();
  }

  uint64_t sent() const { return sent_; }
  double elapsed() const { return elapsed_; }
  // Processed and delivered during the sending time, a second.
  double processed_per_s() const {
    return static_cast<double>(processed_) / elapsed_;
  }
  double delivered_per_s() const {
    return static_cast<double>(delivered_) / elapsed_;
  }

 private:
  void TopUp(Pair& p) {
    while (p.from->SendsInFlight() < window_) {
      p.from->Send(p.to->user(), text_);
      ++sent_;
    }
  }

  void EachSecond() {
    if (Clock::now() - shown_ < std::chrono::seconds(1)) return;
    shown_ = Clock::now();
    watch_->Sample();
    uint64_t pr = pairs_->processed(), de = pairs_->delivered();
    double el = std::chrono::duration<double>(shown_ - start_).count();
    std::fprintf(stderr, "\r%.0fs: %llu processed (%.0f/s), %llu delivered   ",
                 el, static_cast<unsigned long long>(pr),
                 static_cast<double>(pr) / el,
                 static_cast<unsigned long long>(de));
  }

  size_t window_;
  double seconds_;
  std::string text_;
  Pairs* pairs_;
  DaemonWatch* watch_;
  Clock::time_point start_, shown_;
  uint64_t sent_ = 0, processed_ = 0, delivered_ = 0;
  double elapsed_ = 0;
};

// The load is gone: every send answered, every message delivered (or give
// up after 120 s and count what is missing); then a few quiet seconds, so
// that the daemons' memory afterwards is what they hold at rest.
void Settle(Pairs& pairs) {
  std::fprintf(stderr, "\r%70s\rdraining...", "");
  pairs.Drain(std::chrono::seconds(120));
  for (auto until = Clock::now() + std::chrono::seconds(3);
       Clock::now() < until;) {
    pairs.TakeAll();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Report(const ThroughputSettings& st, const ThroughputLoad& load,
            const Pairs& pairs, nlohmann::json* out) {
  (*out)["sent"] = load.sent();
  (*out)["processed"] = pairs.processed();
  (*out)["errors"] = pairs.errors();
  (*out)["lost"] = pairs.lost();
  (*out)["elapsed_s"] = load.elapsed();
  (*out)["processed_per_s"] = load.processed_per_s();
  (*out)["delivered_per_s"] = load.delivered_per_s();
  std::fprintf(stderr, "\r%70s\r", "");
  std::fprintf(
      stderr,
      "%u pairs, window %zu, %.1f s: %.0f processed/s, %.0f delivered/s, "
      "%llu lost, %llu errors\n",
      st.pairs, st.window, load.elapsed(), load.processed_per_s(),
      load.delivered_per_s(), static_cast<unsigned long long>(pairs.lost()),
      static_cast<unsigned long long>(pairs.errors()));
}

}  // namespace

int Throughput(const std::vector<std::string>& args) {
  ThroughputSettings st = ParseThroughput(args);
  BenchDir dir(st.cell.dir, st.cell.keep);
  nlohmann::json out = {
      {"mode", "throughput"},     {"pairs", st.pairs},
      {"window", st.window},      {"seconds", st.seconds},
      {"shards", st.cell.shards}, {"text_bytes", st.text_bytes}};
  LocalCell cell(ProgramDir(), dir.path + "/cell", st.cell.shards,
                 st.cell.Conf(), {}, "", st.cell.replicas, st.cell.frontds);
  Daemons daemons(cell, st.cell);
  Pairs pairs(cell, st.pairs);
  DaemonWatch watch(daemons);
  ThroughputLoad load(st, &pairs, &watch);
  load.Run();
  watch.Stop(pairs.processed());
  Settle(pairs);
  Report(st, load, pairs, &out);
  watch.Report(load.elapsed(), &out);
  Emit(&out, st.cell);
  return pairs.lost() == 0 ? EX_OK : 1;
}

}  // namespace bench
}  // namespace natter
