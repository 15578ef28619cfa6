// natter-bench(1): load and measurements through the client library,
// against a cell it starts itself.  One JSON line on stdout with every
// figure, a table on stderr, a progress line while it runs.
//
// pages: how long a catch-up page and a history page take at any point of
// a mailbox and a conversation of many messages, next to a small one.
// throughput: pairs of clients, each sender keeping a window of sends
// unanswered; processed and delivered messages a second, loss, and each
// daemon's CPU time and memory (peak, and after the load).
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
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
    "                          [--shards N] [--dir DIR] [--keep]\n"
    "       natter-bench throughput [--pairs P] [--window W] [--seconds S]\n"
    "                          [--text-bytes N] [--shards N] [--dir DIR] [--keep]\n";

// A folder for the bench's cell: DIR if given, else a new temporary one
// (removed at the end unless --keep).
struct BenchDir {
  std::string path;
  bool made = false;
  bool keep = false;
  explicit BenchDir(std::string dir, bool keep_it) : path(std::move(dir)), keep(keep_it) {
    if (!path.empty()) return;
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/natter-bench-XXXXXX";
    if (::mkdtemp(&tmpl[0]) == nullptr) throw Exit{EX_CANTCREAT, tmpl + ": cannot make"};
    path = tmpl;
    made = true;
  }
  ~BenchDir() {
    if (made && !keep) {
      ::nftw(path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); },
             16, FTW_DEPTH | FTW_PHYS);
    } else {
      std::fprintf(stderr, "the cell is in %s/cell\n", path.c_str());
    }
  }
};

// The options every mode has.
struct CellOptions {
  unsigned shards = 1;
  std::string dir;
  bool keep = false;
};

// Parses a mode's options, with --shards, --dir and --keep added.
void ParseMode(const char* mode, const std::vector<std::string>& args,
               po::options_description& opts, CellOptions* cell) {
  opts.add_options()
      ("shards", po::value(&cell->shards))
      ("dir", po::value(&cell->dir))
      ("keep", po::bool_switch(&cell->keep));
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw Exit{EX_USAGE, std::string(mode) + ": " + e.what()};
  }
  if (cell->shards < 1) throw Exit{EX_USAGE, std::string(mode) + ": --shards must be above 0"};
}

// A daemon's CPU seconds and memory, from /proc.
struct ProcStats {
  double cpu_s = 0;
  uint64_t rss = 0;   // resident now, bytes
  uint64_t peak = 0;  // the most resident so far (VmHWM), bytes
};

ProcStats ReadProc(pid_t pid) {
  ProcStats st;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (std::getline(stat, line)) {
    // Fields after the command's closing parenthesis; utime and stime are
    // the 12th and 13th of them.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    double ticks = 0;
    for (int i = 1; i <= 13 && rest >> field; ++i) {
      if (i >= 12) ticks += std::stod(field);
    }
    st.cpu_s = ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  while (std::getline(status, line)) {
    auto kb = [&](const char* key) {
      return std::strtoull(line.c_str() + std::strlen(key), nullptr, 10) * 1024;
    };
    if (line.rfind("VmRSS:", 0) == 0) st.rss = kb("VmRSS:");
    if (line.rfind("VmHWM:", 0) == 0) st.peak = kb("VmHWM:");
  }
  return st;
}

// The daemons of a local cell, by name, from their pid files.
std::map<std::string, pid_t> CellDaemons(const LocalCell& cell, unsigned shards) {
  std::map<std::string, pid_t> out;
  std::vector<std::string> names = {"frontd", "routed", "notifyd"};
  for (unsigned i = 0; i < shards; ++i) names.push_back("stored-" + std::to_string(i));
  for (const std::string& n : names) out[n] = cell.DaemonPid(n);
  return out;
}

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
  CellOptions co;
  po::options_description opts;
  opts.add_options()
      ("messages", po::value(&messages))
      ("small", po::value(&small))
      ("samples", po::value(&samples));
  ParseMode("pages", args, opts, &co);
  if (messages < 1000 || small < 10 || small > messages || samples < 1) {
    throw Exit{EX_USAGE, "pages: --messages >= 1000, --small 10 to --messages, --samples >= 1"};
  }
  const unsigned shards = co.shards;
  BenchDir dir(co.dir, co.keep);
  nlohmann::json out = {{"mode", "pages"}, {"messages", messages}, {"small_messages", small},
                        {"samples", samples}, {"shards", shards}};
  std::vector<std::pair<std::string, Figure>> figures;
  {
    LocalCell cell(ProgramDir(), dir.path + "/cell", shards);
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
  std::cout << out.dump() << std::endl;
  return EX_OK;
}

int Throughput(const std::vector<std::string>& args) {
  unsigned pairs = 10;
  size_t window = 200, text_bytes = 256;
  double seconds = 10;
  CellOptions co;
  po::options_description opts;
  opts.add_options()
      ("pairs", po::value(&pairs))
      ("window", po::value(&window))
      ("seconds", po::value(&seconds))
      ("text-bytes", po::value(&text_bytes));
  ParseMode("throughput", args, opts, &co);
  if (pairs < 1 || window < 1 || seconds <= 0 || text_bytes < 16 ||
      text_bytes > kMaxTextBytes) {
    throw Exit{EX_USAGE, "throughput: --pairs, --window and --seconds above 0; "
                         "--text-bytes 16 to 4096"};
  }
  const unsigned shards = co.shards;
  BenchDir dir(co.dir, co.keep);
  nlohmann::json out = {{"mode", "throughput"}, {"pairs", pairs}, {"window", window},
                        {"seconds", seconds}, {"shards", shards}, {"text_bytes", text_bytes}};
  LocalCell cell(ProgramDir(), dir.path + "/cell", shards);
  std::map<std::string, pid_t> daemons = CellDaemons(cell, shards);
  zmq::context_t ctx(1);
  struct Pair {
    std::unique_ptr<Client> from, to;
    std::set<uint64_t> processed, delivered;
  };
  std::vector<Pair> ps(pairs);
  for (unsigned i = 0; i < pairs; ++i) {
    ClientOptions fo = cell.Options(2 * i + 1, "bench"), to = cell.Options(2 * i + 2, "bench");
    fo.timeout_ms = to.timeout_ms = 120000;
    ps[i].from = std::make_unique<Client>(fo, &ctx);
    ps[i].to = std::make_unique<Client>(to, &ctx);
    for (Client* c : {ps[i].from.get(), ps[i].to.get()}) {
      Status s = c->Connect();
      if (!s.ok()) throw Exit{EX_UNAVAILABLE, s.message()};
    }
  }
  // Caught up before the first send (a new device starts where it synced).
  for (auto until = Clock::now() + std::chrono::seconds(20); Clock::now() < until;) {
    bool all = true;
    std::vector<Incoming> in;
    for (Pair& p : ps) {
      p.to->Poll(0, &in);
      p.from->Poll(0, &in);
      all = all && p.to->CaughtUp() && p.from->CaughtUp();
    }
    if (all) break;
  }
  std::map<std::string, ProcStats> before, peak;
  for (const auto& [name, pid] : daemons) before[name] = ReadProc(pid);
  std::string text(text_bytes, 'x');
  uint64_t errors = 0, sent = 0;
  std::vector<Incoming> in;
  auto start = Clock::now(), end = start + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(seconds));
  auto shown = start;
  auto sample = [&] {
    for (const auto& [name, pid] : daemons) {
      ProcStats st = ReadProc(pid);
      peak[name].rss = std::max(peak[name].rss, st.rss);
    }
  };
  auto take = [&](Pair& p) {
    in.clear();
    p.from->Poll(0, &in);
    for (const Incoming& i : in) {
      if (i.kind == Incoming::Kind::kProcessed) p.processed.insert(i.processed.id.value);
      if (i.kind == Incoming::Kind::kError) ++errors;
    }
    in.clear();
    p.to->Poll(0, &in);
    for (const Incoming& i : in) {
      if (i.kind == Incoming::Kind::kEvent &&
          i.event.kind == static_cast<uint8_t>(EventKind::kMessage)) {
        p.delivered.insert(i.event.id.value);
      }
    }
  };
  uint64_t processed_in_window = 0, delivered_in_window = 0;
  auto counts = [&](uint64_t* processed, uint64_t* delivered) {
    *processed = *delivered = 0;
    for (const Pair& p : ps) {
      *processed += p.processed.size();
      *delivered += p.delivered.size();
    }
  };
  while (Clock::now() < end) {
    for (Pair& p : ps) {
      while (p.from->SendsInFlight() < window) {
        p.from->Send(p.to->user(), text);
        ++sent;
      }
      take(p);
    }
    if (Clock::now() - shown >= std::chrono::seconds(1)) {
      shown = Clock::now();
      sample();
      uint64_t pr, de;
      counts(&pr, &de);
      double el = std::chrono::duration<double>(shown - start).count();
      std::fprintf(stderr, "\r%.0fs: %llu processed (%.0f/s), %llu delivered   ", el,
                   static_cast<unsigned long long>(pr), static_cast<double>(pr) / el,
                   static_cast<unsigned long long>(de));
    }
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  counts(&processed_in_window, &delivered_in_window);
  std::map<std::string, ProcStats> during;
  for (const auto& [name, pid] : daemons) during[name] = ReadProc(pid);
  // The load stops: every send answered, every message delivered (or give
  // up after 120 s and count what is missing).
  std::fprintf(stderr, "\r%70s\rdraining...", "");
  for (auto until = Clock::now() + std::chrono::seconds(120); Clock::now() < until;) {
    bool done = true;
    for (Pair& p : ps) {
      take(p);
      done = done && p.from->SendsInFlight() == 0 && p.delivered.size() >= p.processed.size();
    }
    if (done) break;
  }
  // A few quiet seconds, then what the daemons hold once the load is gone.
  for (auto until = Clock::now() + std::chrono::seconds(3); Clock::now() < until;) {
    for (Pair& p : ps) take(p);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  uint64_t lost = 0, processed = 0;
  for (const Pair& p : ps) {
    processed += p.processed.size();
    for (uint64_t id : p.processed) lost += p.delivered.count(id) == 0;
  }
  out["sent"] = sent;
  out["processed"] = processed;
  out["errors"] = errors;
  out["lost"] = lost;
  out["elapsed_s"] = elapsed;
  out["processed_per_s"] = static_cast<double>(processed_in_window) / elapsed;
  out["delivered_per_s"] = static_cast<double>(delivered_in_window) / elapsed;
  std::fprintf(stderr, "\r%70s\r", "");
  std::fprintf(stderr, "%u pairs, window %zu, %.1f s: %.0f processed/s, %.0f delivered/s, "
               "%llu lost, %llu errors\n",
               pairs, window, elapsed, out["processed_per_s"].get<double>(),
               out["delivered_per_s"].get<double>(), static_cast<unsigned long long>(lost),
               static_cast<unsigned long long>(errors));
  std::fprintf(stderr, "%-10s %8s %8s %12s %12s\n", "daemon", "cpu s", "cpu %", "rss peak MB",
               "rss after MB");
  for (const auto& [name, pid] : daemons) {
    ProcStats after = ReadProc(pid);
    double cpu = during[name].cpu_s - before[name].cpu_s;
    uint64_t peak_rss = std::max({peak[name].rss, during[name].rss, after.peak});
    out["daemons"][name] = {{"cpu_s", cpu},
                            {"rss_peak_bytes", peak_rss},
                            {"rss_after_bytes", after.rss}};
    std::fprintf(stderr, "%-10s %8.2f %8.0f %12.1f %12.1f\n", name.c_str(), cpu,
                 100 * cpu / elapsed, peak_rss / 1048576.0, after.rss / 1048576.0);
  }
  std::cout << out.dump() << std::endl;
  return lost == 0 ? EX_OK : 1;
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
  if (mode == "throughput") return Throughput(rest);
  throw Exit{EX_USAGE, "'" + mode + "' is not a mode (pages, throughput)"};
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
