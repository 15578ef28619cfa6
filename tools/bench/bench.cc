// natter-bench(1): load and measurements through the client library,
// against a cell it starts itself.  One JSON line on stdout with every
// figure, a table on stderr, a progress line while it runs.
//
// pages: how long a catch-up page and a history page take at any point of
// a mailbox and a conversation of many messages, next to a small one.
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <ftw.h>
#include <nlohmann/json.hpp>

#include "client/client.h"
#include "client/local_cell.h"
#include "common/daemon.h"

namespace po = boost::program_options;

namespace natter {
namespace bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Exit {
  int code;
  std::string message;
};

const char kUsage[] =
    "usage: natter-bench pages [--messages N] [--small N] [--samples N]\n"
    "                          [--shards N] [--dir DIR] [--keep]\n";

// Waits for the answer to one request.
Incoming Await(Client& c, uint64_t request) {
  std::vector<Incoming> in;
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    in.clear();
    c.Poll(50, &in);
    for (Incoming& item : in) {
      if (item.request != request || item.kind == Incoming::Kind::kEvent) continue;
      if (item.kind == Incoming::Kind::kError) throw Exit{EX_UNAVAILABLE, item.error.message()};
      return std::move(item);
    }
  }
  throw Exit{EX_UNAVAILABLE, "no answer within 60s"};
}

// Sends n messages from `from` to `to`, keeping `window` in flight; returns
// the ids and timestamps in order.
std::vector<Processed> Fill(Client& from, UserId to, uint64_t n, const char* what) {
  const size_t kWindow = 2000;
  std::vector<Processed> done;
  done.reserve(n);
  std::map<std::string, uint64_t> index;
  std::vector<Processed> by_index(n);
  uint64_t sent = 0;
  std::string text(200, 'x');  // a 256-byte message, give or take the counter
  auto start = Clock::now(), shown = start;
  std::vector<Incoming> in;
  while (done.size() < n) {
    while (sent < n && from.SendsInFlight() < kWindow) {
      index[from.Send(to, std::to_string(sent) + " " + text)] = sent;
      ++sent;
    }
    in.clear();
    from.Poll(20, &in);
    for (Incoming& item : in) {
      if (item.kind == Incoming::Kind::kError) throw Exit{EX_UNAVAILABLE, item.error.message()};
      if (item.kind != Incoming::Kind::kProcessed) continue;
      auto it = index.find(item.processed.client_msg_id);
      if (it == index.end()) continue;
      by_index[it->second] = item.processed;
      index.erase(it);
      done.push_back(item.processed);
    }
    if (Clock::now() - shown >= std::chrono::seconds(1)) {
      shown = Clock::now();
      double s = std::chrono::duration<double>(shown - start).count();
      std::fprintf(stderr, "\rfilling %s: %zu/%llu processed, %.0f/s   ", what, done.size(),
                   static_cast<unsigned long long>(n), static_cast<double>(done.size()) / s);
    }
  }
  std::fprintf(stderr, "\r%60s\r", "");
  return by_index;
}

struct Figure {
  double p50_ms;
  double p99_ms;
};

Figure Measure(int samples, const std::function<void()>& once) {
  std::vector<double> ms;
  for (int i = 0; i < samples; ++i) {
    auto t0 = Clock::now();
    once();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))]; };
  return {at(0.50), at(0.99)};
}

int Pages(const std::vector<std::string>& args) {
  uint64_t messages = 1000000, small = 1000;
  int samples = 200;
  unsigned shards = 1;
  std::string dir;
  bool keep = false;
  po::options_description opts;
  opts.add_options()
      ("messages", po::value(&messages))
      ("small", po::value(&small))
      ("samples", po::value(&samples))
      ("shards", po::value(&shards))
      ("dir", po::value(&dir))
      ("keep", po::bool_switch(&keep));
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw Exit{EX_USAGE, std::string("pages: ") + e.what()};
  }
  if (messages < 1000 || small < 10 || small > messages || samples < 1 || shards < 1) {
    throw Exit{EX_USAGE, "pages: --messages >= 1000, --small 10 to --messages, --samples >= 1"};
  }
  bool made_dir = dir.empty();
  if (made_dir) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/natter-bench-XXXXXX";
    if (::mkdtemp(&tmpl[0]) == nullptr) throw Exit{EX_CANTCREAT, tmpl + ": cannot make"};
    dir = tmpl;
  }
  nlohmann::json out = {{"mode", "pages"}, {"messages", messages}, {"small_messages", small},
                        {"samples", samples}, {"shards", shards}};
  std::vector<std::pair<std::string, Figure>> figures;
  {
    LocalCell cell(ProgramDir(), dir + "/cell", shards);
    Client big(cell.Options(1, "bench")), reader(cell.Options(2, "bench"));
    Client little(cell.Options(3, "bench")), little_reader(cell.Options(4, "bench"));
    for (Client* c : {&big, &reader, &little, &little_reader}) {
      Status s = c->Connect();
      if (!s.ok()) throw Exit{EX_UNAVAILABLE, s.message()};
    }
    auto t0 = Clock::now();
    std::vector<Processed> ids = Fill(big, UserId(2), messages, "the large conversation");
    double fill_s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::vector<Processed> small_ids = Fill(little, UserId(4), small, "the small conversation");
    out["fill_seconds"] = fill_s;
    out["fill_per_s"] = static_cast<double>(messages) / fill_s;

    const uint32_t kCatchUp = 500, kHistory = 50;
    auto catchup = [&](Client& c, uint64_t after) {
      return [&c, after] { Await(c, c.GetMailbox(Seq(after), kCatchUp)); };
    };
    auto history = [&](Client& c, UserId peer, HistoryMode mode, uint64_t bound) {
      return [&c, peer, mode, bound] {
        History q;
        q.peer = peer;
        q.mode = static_cast<uint8_t>(mode);
        q.bound = bound;
        q.limit = kHistory;
        Await(c, c.GetHistory(q));
      };
    };
    const uint64_t n = messages;
    figures = {
        {"catchup_small", Measure(samples, catchup(little_reader, 0))},
        {"catchup_start", Measure(samples, catchup(reader, 0))},
        {"catchup_middle", Measure(samples, catchup(reader, n / 2))},
        {"catchup_end", Measure(samples, catchup(reader, n - kCatchUp))},
        {"history_small_latest", Measure(samples, history(little_reader, UserId(3), HistoryMode::kLatest, 0))},
        {"history_latest", Measure(samples, history(reader, UserId(1), HistoryMode::kLatest, 0))},
        {"history_at_middle", Measure(samples, history(reader, UserId(1), HistoryMode::kAt, ids[n / 2].ts))},
        {"history_before_start", Measure(samples, history(reader, UserId(1), HistoryMode::kBefore, ids[n / 100].id.value))},
        {"history_after_middle", Measure(samples, history(reader, UserId(1), HistoryMode::kAfter, ids[n / 2].id.value))},
    };
    (void)small_ids;
  }
  std::fprintf(stderr, "%-22s %10s %10s\n", "page (round trip)", "p50 ms", "p99 ms");
  for (const auto& [name, f] : figures) {
    out[name + "_p50_ms"] = f.p50_ms;
    out[name + "_p99_ms"] = f.p99_ms;
    std::fprintf(stderr, "%-22s %10.3f %10.3f\n", name.c_str(), f.p50_ms, f.p99_ms);
  }
  std::fprintf(stderr, "filled %llu messages in %.1f s (%.0f/s)\n",
               static_cast<unsigned long long>(messages), out["fill_seconds"].get<double>(),
               out["fill_per_s"].get<double>());
  if (made_dir && !keep) {
    ::nftw(dir.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); },
           16, FTW_DEPTH | FTW_PHYS);
  } else {
    std::fprintf(stderr, "the cell is in %s/cell\n", dir.c_str());
  }
  std::cout << out.dump() << std::endl;
  return EX_OK;
}

int Main(int argc, char** argv) {
  CatchStopSignals([](int) { std::_Exit(1); });
  if (argc < 2) throw Exit{EX_USAGE, std::string("no mode\n") + kUsage};
  std::string mode = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  if (mode == "-h" || mode == "--help") {
    std::cout << kUsage;
    return EX_OK;
  }
  if (mode == "pages") return Pages(rest);
  throw Exit{EX_USAGE, "'" + mode + "' is not a mode (pages)"};
}

}  // namespace
}  // namespace bench
}  // namespace natter

int main(int argc, char** argv) {
  try {
    return natter::bench::Main(argc, argv);
  } catch (const natter::bench::Exit& e) {
    std::cerr << "natter-bench: " << e.message << "\n";
    return e.code;
  } catch (const std::exception& e) {
    std::cerr << "natter-bench: " << e.what() << "\n";
    return 1;
  }
}
