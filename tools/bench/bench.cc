// natter-bench(1): load and measurements through the client library,
// against a cell it starts itself.  One JSON line on stdout with every
// figure, a table on stderr, a progress line while it runs.
//
// pages: how long a catch-up page and a history page take at any point of
// a mailbox and a conversation of many messages, next to a small one.
// throughput: pairs of clients, each sender keeping a window of sends
// unanswered; processed and delivered messages a second, loss, and each
// daemon's CPU time and memory (peak, and after the load).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "client/client.h"
#include "common/daemon.h"
#include "common/flags.h"
#include "common/net.h"
#include "tests/support/local_cell.h"
#include "tests/support/proc_status.h"
#include "tests/support/temp_dir.h"

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
    "                          [--text-bytes N] [--shards N] [--dir DIR] [--keep]\n"
    "       natter-bench connections [--clients N] [--messages M] [--rate R]\n"
    "                          [--connect-rate C] [--workers K] [--text-bytes N]\n"
    "                          [--shards N] [--dir DIR] [--keep]\n"
    "       natter-bench latency [--rate R] [--seconds S] [--pairs P]\n"
    "                          [--text-bytes N] [--shards N] [--dir DIR] [--keep]\n";

// A folder for the bench's cell: DIR if given, else a new temporary one
// (removed at the end unless --keep).
struct BenchDir {
  std::string path;
  std::unique_ptr<TempDir> temp;
  explicit BenchDir(std::string dir, bool keep) : path(std::move(dir)) {
    if (!path.empty()) {
      // --dir: made if it is not there (its parent must be).
      if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
        throw Exit{EX_CANTCREAT, path + ": " + std::strerror(errno)};
      }
      return;
    }
    try {
      temp = std::make_unique<TempDir>("natter-bench", keep);
    } catch (const std::runtime_error& e) {
      throw Exit{EX_CANTCREAT, e.what()};
    }
    path = temp->path();
  }
  ~BenchDir() {
    if (!temp || temp->kept()) std::fprintf(stderr, "the cell is in %s/cell\n", path.c_str());
  }
};

// The options every mode has.
struct CellOptions {
  unsigned shards = 1;
  std::string dir;
  bool keep = false;
  std::string curve_ipc = "yes";
  // What goes into the cell's natter.conf besides natterctl init's.  The
  // bench measures the cell with a few users sending as fast as they can:
  // without the per-user rate of writes, which would measure only itself;
  // and its thousands of clients connect at once from one address, which
  // frontd would otherwise take for a flood of handshakes.
  std::string Conf() const {
    return std::string("[stored]\nuser-rate = 0\n") +
           "[frontd]\nmax-pending = 100000\nmax-pending-per-address = 100000\n" +
           (curve_ipc == "no" ? "[cell]\ncurve-ipc = no\n" : "");
  }
};

// Parses a mode's options, with --shards, --dir and --keep added.
void ParseMode(const char* mode, const std::vector<std::string>& args,
               po::options_description& opts, CellOptions* cell) {
  opts.add_options()
      ("shards", UintValue("shards", &cell->shards))
      ("dir", po::value(&cell->dir))
      ("keep", po::bool_switch(&cell->keep))
      ("curve-ipc", po::value(&cell->curve_ipc));
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw Exit{EX_USAGE, std::string(mode) + ": " + e.what()};
  }
  if (cell->shards < 1) throw Exit{EX_USAGE, std::string(mode) + ": --shards must be above 0"};
  if (cell->curve_ipc != "yes" && cell->curve_ipc != "no") {
    throw Exit{EX_USAGE, std::string(mode) + ": --curve-ipc is yes or no"};
  }
}

// The JSON line on stdout, with the settings of the cell.
void Emit(nlohmann::json* out, const CellOptions& co) {
  (*out)["curve_ipc"] = co.curve_ipc;
  std::cout << out->dump() << std::endl;
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
  st.rss = ProcStatusBytes(pid, "VmRSS").value_or(0);
  st.peak = ProcStatusBytes(pid, "VmHWM").value_or(0);
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

// The q-quantile of sorted values (0 for none).
double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  return sorted[std::min(sorted.size() - 1, static_cast<size_t>(q * sorted.size()))];
}

Figure Measure(int samples, const std::function<void()>& once) {
  std::vector<double> ms;
  for (int i = 0; i < samples; ++i) {
    auto t0 = Clock::now();
    once();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {Quantile(ms, 0.50), Quantile(ms, 0.99)};
}

int Pages(const std::vector<std::string>& args) {
  uint64_t messages = 1000000, small = 1000;
  int samples = 200;
  CellOptions co;
  po::options_description opts;
  opts.add_options()
      ("messages", UintValue("messages", &messages))
      ("small", UintValue("small", &small))
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
    LocalCell cell(ProgramDir(), dir.path + "/cell", shards, co.Conf());
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
  Emit(&out, co);
  return EX_OK;
}

// A sender and a recipient, and what each has seen.
struct Pair {
  std::unique_ptr<Client> from, to;
  std::set<uint64_t> processed, delivered;
};

// Connects n pairs (users 2i+1 -> 2i+2) and waits until all have caught
// up (a new device's mailbox starts where it first synced).
std::vector<Pair> OpenPairs(const LocalCell& cell, zmq::context_t& ctx, unsigned n) {
  std::vector<Pair> ps(n);
  for (unsigned i = 0; i < n; ++i) {
    ClientOptions fo = cell.Options(2 * i + 1, "bench"), to = cell.Options(2 * i + 2, "bench");
    fo.timeout_ms = to.timeout_ms = 120000;
    ps[i].from = std::make_unique<Client>(fo, &ctx);
    ps[i].to = std::make_unique<Client>(to, &ctx);
    for (Client* c : {ps[i].from.get(), ps[i].to.get()}) {
      Status s = c->Connect();
      if (!s.ok()) throw Exit{EX_UNAVAILABLE, s.message()};
    }
  }
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
  return ps;
}

// Sleeps until one of the pairs' clients has something to read, at most
// ms: the bench shares the machine with the cell, so it must not spin.
void WaitForAny(std::vector<Pair>& ps, long ms) {
  std::vector<zmq::pollitem_t> items;
  items.reserve(2 * ps.size());
  for (Pair& p : ps) {
    items.push_back(p.from->PollItem());
    items.push_back(p.to->PollItem());
  }
  natter::Poll(items, std::max(0L, ms));
}

// p50, p99, p99.9 and max of a set of milliseconds, as JSON keys with a
// prefix; also printed.
void Percentiles(const char* what, const std::string& prefix, std::vector<double> ms,
                 nlohmann::json* out) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return Quantile(ms, q); };
  (*out)[prefix + "p50_ms"] = at(0.50);
  (*out)[prefix + "p99_ms"] = at(0.99);
  (*out)[prefix + "p999_ms"] = at(0.999);
  (*out)[prefix + "max_ms"] = ms.empty() ? 0.0 : ms.back();
  std::fprintf(stderr, "%-18s %9.3f %9.3f %9.3f %9.3f  (%zu samples)\n", what, at(0.50),
               at(0.99), at(0.999), ms.empty() ? 0.0 : ms.back(), ms.size());
}

int Latency(const std::vector<std::string>& args) {
  unsigned pairs = 10;
  double rate = 1000, seconds = 10;
  size_t text_bytes = 256;
  CellOptions co;
  po::options_description opts;
  opts.add_options()
      ("rate", po::value(&rate))
      ("seconds", po::value(&seconds))
      ("pairs", UintValue("pairs", &pairs))
      ("text-bytes", UintValue("text-bytes", &text_bytes));
  ParseMode("latency", args, opts, &co);
  if (pairs < 1 || rate <= 0 || seconds <= 0 || text_bytes < 16 || text_bytes > kMaxTextBytes) {
    throw Exit{EX_USAGE, "latency: --rate, --seconds and --pairs above 0; --text-bytes 16 to 4096"};
  }
  BenchDir dir(co.dir, co.keep);
  nlohmann::json out = {{"mode", "latency"}, {"rate", rate}, {"seconds", seconds},
                        {"pairs", pairs}, {"shards", co.shards}, {"text_bytes", text_bytes}};
  LocalCell cell(ProgramDir(), dir.path + "/cell", co.shards, co.Conf());
  zmq::context_t ctx(1);
  std::vector<Pair> ps = OpenPairs(cell, ctx, pairs);
  std::unordered_map<std::string, Clock::time_point> sent_at;
  std::vector<double> to_processed, to_delivered;
  uint64_t errors = 0;
  std::string text(text_bytes, 'x');
  std::vector<Incoming> in;
  auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };
  auto take = [&](Pair& p) {
    in.clear();
    p.from->Poll(0, &in);
    for (const Incoming& i : in) {
      if (i.kind == Incoming::Kind::kError) ++errors;
      if (i.kind != Incoming::Kind::kProcessed) continue;
      auto it = sent_at.find(i.processed.client_msg_id);
      if (it != sent_at.end()) to_processed.push_back(ms_since(it->second));
      p.processed.insert(i.processed.id.value);
    }
    in.clear();
    p.to->Poll(0, &in);
    for (const Incoming& i : in) {
      if (i.kind != Incoming::Kind::kEvent ||
          i.event.kind != static_cast<uint8_t>(EventKind::kMessage)) {
        continue;
      }
      auto it = sent_at.find(i.event.client_msg_id);
      if (it != sent_at.end()) to_delivered.push_back(ms_since(it->second));
      p.delivered.insert(i.event.id.value);
    }
  };
  const auto gap = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate));
  auto start = Clock::now(), next = start;
  auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  size_t turn = 0;
  uint64_t sent = 0;
  while (Clock::now() < end) {
    // At the offered rate, whatever the answers do (an open loop).
    for (auto now = Clock::now(); next <= now; next += gap) {
      Pair& p = ps[turn++ % ps.size()];
      sent_at[p.from->Send(p.to->user(), text)] = next;
      ++sent;
    }
    for (Pair& p : ps) take(p);
    WaitForAny(ps, std::min<long>(5, std::chrono::duration_cast<std::chrono::milliseconds>(
                                         next - Clock::now()).count()));
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto until = Clock::now() + std::chrono::seconds(60); Clock::now() < until;) {
    bool done = true;
    for (Pair& p : ps) {
      take(p);
      done = done && p.from->SendsInFlight() == 0 && p.delivered.size() >= p.processed.size();
    }
    if (done) break;
    WaitForAny(ps, 5);
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
  out["offered_per_s"] = static_cast<double>(sent) / elapsed;
  std::fprintf(stderr, "%.0f messages/s offered for %.1f s: %llu processed, %llu lost\n",
               static_cast<double>(sent) / elapsed, elapsed,
               static_cast<unsigned long long>(processed), static_cast<unsigned long long>(lost));
  std::fprintf(stderr, "%-18s %9s %9s %9s %9s\n", "ms", "p50", "p99", "p99.9", "max");
  Percentiles("send->processed", "processed_", to_processed, &out);
  Percentiles("send->delivered", "", to_delivered, &out);
  Emit(&out, co);
  return lost == 0 ? EX_OK : 1;
}

int FreePort() {
  int port = FreeLoopbackPort();
  if (port == 0) throw Exit{EX_OSERR, "cannot find a free port"};
  return port;
}

struct ConnSettings {
  unsigned clients = 1000;
  unsigned messages = 20;
  double rate = 1;             // messages a second, each client
  double connect_rate = 2000;  // new clients a second, all workers
  unsigned workers = 0;        // 0: one per 5000 clients
  size_t text_bytes = 256;
};

// One worker process: clients [first, first + n) as users 100000 + i, each
// sending to its neighbour (i ^ 1), from source addresses 127.0.0.2 and up.
// Tells the parent on `report` (one JSON line after connecting, one at the
// end) and waits for a line on `go` between the two.
int ConnectionsWorker(const LocalCell& cell, const ConnSettings& st, int port, unsigned first,
                      unsigned n, int report, int go) {
  zmq::context_t ctx(1);
  ctx.set(zmq::ctxopt::max_sockets, 65536);
  std::vector<std::unique_ptr<Client>> clients(n);
  std::vector<unsigned> connected;
  auto write_line = [&](const nlohmann::json& j) {
    std::string line = j.dump() + "\n";
    if (::write(report, line.data(), line.size()) < 0) std::_Exit(1);
  };
  const auto pace = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::max(1u, st.workers) / st.connect_rate));
  auto start = Clock::now(), next = start;
  uint64_t refused = 0;
  std::string last_error;
  std::vector<Incoming> idle;
  size_t keep_alive = 0;
  for (unsigned k = 0; k < n; ++k) {
    unsigned i = first + k;
    // While the others connect, the connected ones are looked after (pings,
    // the catch-up), a few at each turn, as an application would.
    for (int j = 0; j < 16 && !connected.empty(); ++j) {
      idle.clear();
      clients[connected[keep_alive++ % connected.size()]]->Poll(0, &idle);
    }
    std::this_thread::sleep_until(next);
    next += pace;
    ClientOptions o = cell.Options(100000 + i, "bench");
    o.server = "tcp://127.0.0." + std::to_string(2 + i % 250) + ":0;127.0.0.1:" +
               std::to_string(port);
    o.state_dir.clear();
    o.timeout_ms = 60000;
    o.resync_ms = 60000;
    clients[k] = std::make_unique<Client>(o, &ctx);
    Status s = clients[k]->Connect();
    if (s.ok()) {
      connected.push_back(k);
    } else {
      ++refused;
      last_error = s.ToString();
      clients[k].reset();
    }
  }
  double connect_s = std::chrono::duration<double>(Clock::now() - start).count();
  write_line({{"connected", connected.size()}, {"refused", refused}, {"connect_s", connect_s},
              {"error", last_error}});
  char buf[8];
  if (::read(go, buf, sizeof buf) <= 0) return 1;
  // Each client sends `messages` at `rate`, starting at a random moment of
  // the first interval so the load is spread.
  const auto gap = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(1.0 / st.rate));
  std::minstd_rand rng(first + 1);
  struct State {
    Clock::time_point next;
    unsigned sent = 0;
    std::set<uint64_t> processed, delivered;
    // After the run: the conversation with the partner as the shard has
    // it (to tell a message not yet seen live from one not stored).
    uint64_t history_request = 0;
    bool history_done = false, history_ok = false;
    std::set<uint64_t> in_history;
  };
  std::vector<State> state(n);
  start = Clock::now();
  for (unsigned k : connected) {
    state[k].next = start + std::chrono::duration_cast<Clock::duration>(
                                gap * (static_cast<double>(rng() % 1000) / 1000.0));
  }
  std::string text(st.text_bytes, 'x');
  uint64_t errors = 0;
  std::vector<Incoming> in;
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                              gap * st.messages + std::chrono::seconds(120));
  auto all_done = [&] {
    for (unsigned k : connected) {
      const State& s = state[k];
      if (s.sent < st.messages || clients[k]->SendsInFlight() > 0) return false;
      unsigned partner = k ^ 1u;
      if (partner < n && clients[partner] && s.delivered.size() < st.messages) return false;
    }
    return true;
  };
  // The worker sleeps in epoll on the clients' ZMQ_FDs and looks at a
  // client when its descriptor says something came, when it is due to
  // send, and (for the client library's timers: acknowledgements, pings,
  // retries) in a sweep over all of them every 250 ms.  A pass over
  // thousands of clients every few ms would take the CPU from the cell.
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) throw Exit{EX_OSERR, "epoll_create1 failed"};
  for (unsigned k : connected) {
    int fd = -1;
    size_t len = sizeof fd;
    zmq::pollitem_t item = clients[k]->PollItem();
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = k;
    if (zmq_getsockopt(item.socket, ZMQ_FD, &fd, &len) != 0 ||
        ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw Exit{EX_OSERR, "cannot watch a client's socket"};
    }
  }
  auto look = [&](unsigned k) {
    State& s = state[k];
    in.clear();
    clients[k]->Poll(0, &in);
    for (const Incoming& i : in) {
      if (i.kind == Incoming::Kind::kProcessed) s.processed.insert(i.processed.id.value);
      if (i.kind == Incoming::Kind::kError) {
        ++errors;
        if (last_error.empty()) last_error = i.error.ToString();
      }
      // The partner's messages (a copy of one of our own sends, read back
      // after its answer timed out, is not a delivery).
      if (i.kind == Incoming::Kind::kEvent &&
          i.event.kind == static_cast<uint8_t>(EventKind::kMessage) &&
          i.event.from != clients[k]->user()) {
        s.delivered.insert(i.event.id.value);
      }
      if (i.kind == Incoming::Kind::kHistory && i.request == s.history_request) {
        for (const auto& item : i.history.messages) s.in_history.insert(item.message.id.value);
        s.history_done = s.history_ok = true;
      }
      if (i.kind == Incoming::Kind::kError && i.request == s.history_request) s.history_done = true;
    }
  };
  // Clients in the order they are due to send.
  std::multimap<Clock::time_point, unsigned> due;
  for (unsigned k : connected) {
    if ((k ^ 1u) < n && st.messages > 0) due.emplace(state[k].next, k);
  }
  std::vector<epoll_event> ready(1024);
  auto next_sweep = start;
  size_t sweep_at = 0;
  double send_s = 0;
  for (uint64_t loop = 0; Clock::now() < deadline; ++loop) {
    auto now = Clock::now();
    while (!due.empty() && due.begin()->first <= now) {
      unsigned k = due.begin()->second;
      due.erase(due.begin());
      State& s = state[k];
      clients[k]->Send(UserId(100000 + first + (k ^ 1u)), text);
      s.next += gap;
      if (++s.sent < st.messages) due.emplace(s.next, k);
      look(k);
    }
    if (now >= next_sweep) {
      // A quarter of the clients each time: each is looked at every second.
      for (size_t j = 0; j < (connected.size() + 3) / 4; ++j) {
        look(connected[sweep_at++ % connected.size()]);
      }
      next_sweep = now + std::chrono::milliseconds(250);
      if (all_done()) break;
    }
    auto wake = std::min(next_sweep, due.empty() ? next_sweep : due.begin()->first);
    long wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - Clock::now()).count();
    int got = ::epoll_wait(ep, ready.data(), static_cast<int>(ready.size()),
                           static_cast<int>(std::clamp(wait_ms, 0L, 250L)));
    for (int j = 0; j < got; ++j) look(ready[j].data.u32);
  }
  send_s = std::chrono::duration<double>(Clock::now() - start).count();
  // A processed message its partner has not seen live by now: is it in
  // the partner's conversation on its shard?  Yes: late (the device would
  // get it from its mailbox); no: lost.
  std::vector<unsigned> asking;
  for (unsigned k : connected) {
    unsigned partner = k ^ 1u;
    if (partner >= n || !clients[partner]) continue;
    bool missing = false;
    for (uint64_t id : state[k].processed) missing = missing || !state[partner].delivered.count(id);
    if (!missing) continue;
    History q;
    q.peer = UserId(100000 + first + k);
    q.mode = static_cast<uint8_t>(HistoryMode::kAfter);
    q.limit = kMaxHistoryPage;  // 2 × --messages of them at most
    state[partner].history_request = clients[partner]->GetHistory(q);
    asking.push_back(partner);
  }
  // The cell may still be working through a backlog: up to 2 minutes.
  for (auto until = Clock::now() + std::chrono::seconds(120); Clock::now() < until;) {
    bool all = true;
    for (unsigned p : asking) {
      if (!state[p].history_done) {
        look(p);
        all = all && state[p].history_done;
      }
    }
    if (all) break;
    ::epoll_wait(ep, ready.data(), static_cast<int>(ready.size()), 20);
  }
  ::close(ep);
  uint64_t sent = 0, processed = 0, delivered = 0, lost = 0, late = 0, unchecked = 0;
  for (unsigned k : connected) {
    sent += state[k].sent;
    processed += state[k].processed.size();
    delivered += state[k].delivered.size();
    unsigned partner = k ^ 1u;
    if (partner >= n || !clients[partner]) continue;
    for (uint64_t id : state[k].processed) {
      if (state[partner].delivered.count(id)) continue;
      if (!state[partner].history_ok) {
        ++unchecked;  // the history did not come in time
      } else if (state[partner].in_history.count(id)) {
        ++late;
      } else {
        ++lost;
      }
    }
  }
  write_line({{"sent", sent}, {"processed", processed}, {"delivered", delivered},
              {"lost", lost}, {"late", late}, {"unchecked", unchecked}, {"errors", errors},
              {"send_s", send_s},
              {"error", last_error}});
  return 0;
}

int Connections(const std::vector<std::string>& args) {
  ConnSettings st;
  CellOptions co;
  po::options_description opts;
  opts.add_options()
      ("clients", UintValue("clients", &st.clients))
      ("messages", UintValue("messages", &st.messages))
      ("rate", po::value(&st.rate))
      ("connect-rate", po::value(&st.connect_rate))
      ("workers", UintValue("workers", &st.workers))
      ("text-bytes", UintValue("text-bytes", &st.text_bytes));
  ParseMode("connections", args, opts, &co);
  if (st.clients < 2 || st.rate <= 0 || st.connect_rate <= 0 || st.text_bytes < 16 ||
      st.text_bytes > kMaxTextBytes) {
    throw Exit{EX_USAGE, "connections: --clients >= 2, --rate and --connect-rate above 0, "
                         "--text-bytes 16 to 4096"};
  }
  if (st.workers == 0) st.workers = (st.clients + 4999) / 5000;
  BenchDir dir(co.dir, co.keep);
  int port = FreePort();
  LocalCell cell(ProgramDir(), dir.path + "/cell", co.shards, co.Conf(), {},
                 "tcp://127.0.0.1:" + std::to_string(port));
  std::map<std::string, pid_t> daemons = CellDaemons(cell, co.shards);
  ProcStats frontd_idle = ReadProc(daemons["frontd"]);
  std::map<std::string, ProcStats> before;
  for (const auto& [name, pid] : daemons) before[name] = ReadProc(pid);
  struct Worker {
    pid_t pid;
    FILE* report;
    int go;
  };
  std::vector<Worker> workers;
  // Even shares, so each client's neighbour is in its own worker.
  unsigned per = ((st.clients / st.workers) + 1) & ~1u;
  for (unsigned w = 0, first = 0; w < st.workers && first < st.clients; ++w, first += per) {
    unsigned n = std::min(per, st.clients - first);
    int rep[2], go[2];
    if (::pipe(rep) != 0 || ::pipe(go) != 0) throw Exit{EX_OSERR, "pipe"};
    pid_t pid = ::fork();
    if (pid < 0) throw Exit{EX_OSERR, "fork"};
    if (pid == 0) {
      ::close(rep[0]);
      ::close(go[1]);
      int rc = 1;
      try {
        rc = ConnectionsWorker(cell, st, port, first, n, rep[1], go[0]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "natter-bench: worker: %s\n", e.what());
      } catch (const Exit& e) {
        std::fprintf(stderr, "natter-bench: worker: %s\n", e.message.c_str());
      }
      std::_Exit(rc);  // not the parent's destructors (the cell is its)
    }
    ::close(rep[1]);
    ::close(go[0]);
    workers.push_back({pid, ::fdopen(rep[0], "r"), go[1]});
  }
  auto read_line = [](FILE* f) {
    char line[4096];
    if (std::fgets(line, sizeof line, f) == nullptr) throw Exit{EX_SOFTWARE, "a worker died"};
    return nlohmann::json::parse(line);
  };
  auto t0 = Clock::now();
  uint64_t connected = 0, refused = 0;
  double connect_s = 0;
  std::string error;
  for (Worker& w : workers) {
    nlohmann::json j = read_line(w.report);
    connected += j["connected"].get<uint64_t>();
    refused += j["refused"].get<uint64_t>();
    connect_s = std::max(connect_s, j["connect_s"].get<double>());
    if (!j["error"].get<std::string>().empty()) error = j["error"];
  }
  std::fprintf(stderr, "%llu clients connected in %.1f s, %llu refused%s%s\n",
               static_cast<unsigned long long>(connected), connect_s,
               static_cast<unsigned long long>(refused), error.empty() ? "" : ": ",
               error.c_str());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ProcStats frontd_full = ReadProc(daemons["frontd"]);
  for (Worker& w : workers) {
    if (::write(w.go, "go\n", 3) != 3) throw Exit{EX_SOFTWARE, "a worker died"};
  }
  uint64_t sent = 0, processed = 0, delivered = 0, lost = 0, late = 0, unchecked = 0,
           errors = 0;
  double send_s = 0;
  for (Worker& w : workers) {
    nlohmann::json j = read_line(w.report);
    sent += j["sent"].get<uint64_t>();
    processed += j["processed"].get<uint64_t>();
    delivered += j["delivered"].get<uint64_t>();
    lost += j["lost"].get<uint64_t>();
    late += j["late"].get<uint64_t>();
    unchecked += j["unchecked"].get<uint64_t>();
    errors += j["errors"].get<uint64_t>();
    send_s = std::max(send_s, j["send_s"].get<double>());
    if (!j["error"].get<std::string>().empty()) error = j["error"];
    std::fclose(w.report);
    ::close(w.go);
    ::waitpid(w.pid, nullptr, 0);
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  nlohmann::json out = {{"mode", "connections"}, {"clients", st.clients},
                        {"messages", st.messages}, {"rate", st.rate},
                        {"workers", workers.size()}, {"shards", co.shards},
                        {"clients_connected", connected}, {"clients_refused", refused},
                        {"connect_per_s", connect_s > 0 ? connected / connect_s : 0.0},
                        {"frontd_rss_per_conn_bytes",
                         connected > 0 ? (static_cast<double>(frontd_full.rss) -
                                          static_cast<double>(frontd_idle.rss)) /
                                             static_cast<double>(connected)
                                       : 0.0},
                        {"frontd_rss_idle_bytes", frontd_idle.rss},
                        {"frontd_rss_connected_bytes", frontd_full.rss},
                        {"sent", sent}, {"processed", processed}, {"delivered", delivered},
                        {"lost", lost}, {"late", late}, {"unchecked", unchecked},
                        {"errors", errors},
                        {"send_s", send_s}, {"elapsed_s", elapsed},
                        {"processed_per_s", send_s > 0 ? processed / send_s : 0.0},
                        {"delivered_per_s", send_s > 0 ? delivered / send_s : 0.0}};
  std::fprintf(stderr, "frontd: %.1f MB idle, %.1f MB with %llu clients: %.1f KiB a client\n",
               frontd_idle.rss / 1048576.0, frontd_full.rss / 1048576.0,
               static_cast<unsigned long long>(connected),
               out["frontd_rss_per_conn_bytes"].get<double>() / 1024);
  if (errors > 0) std::fprintf(stderr, "an error: %s\n", error.c_str());
  std::fprintf(stderr,
               "%llu sent, %llu processed, %llu delivered, %llu late (in the partner's history, "
               "not yet seen live), %llu unchecked (no history in time), %llu lost, %llu errors "
               "in %.1f s\n",
               static_cast<unsigned long long>(sent), static_cast<unsigned long long>(processed),
               static_cast<unsigned long long>(delivered), static_cast<unsigned long long>(late),
               static_cast<unsigned long long>(unchecked), static_cast<unsigned long long>(lost),
               static_cast<unsigned long long>(errors), send_s);
  for (const auto& [name, pid] : daemons) {
    double cpu = ReadProc(pid).cpu_s - before[name].cpu_s;
    out["daemons"][name] = {{"cpu_s", cpu}};
    std::fprintf(stderr, "%-10s %8.2f cpu s\n", name.c_str(), cpu);
  }
  Emit(&out, co);
  bool complete = connected == st.clients && lost == 0 && late == 0 && unchecked == 0 &&
                  processed == sent &&
                  sent == static_cast<uint64_t>(connected) * st.messages;
  return complete ? EX_OK : 1;
}

int Throughput(const std::vector<std::string>& args) {
  unsigned pairs = 10;
  size_t window = 200, text_bytes = 256;
  double seconds = 10;
  CellOptions co;
  po::options_description opts;
  opts.add_options()
      ("pairs", UintValue("pairs", &pairs))
      ("window", UintValue("window", &window))
      ("seconds", po::value(&seconds))
      ("text-bytes", UintValue("text-bytes", &text_bytes));
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
  LocalCell cell(ProgramDir(), dir.path + "/cell", shards, co.Conf());
  std::map<std::string, pid_t> daemons = CellDaemons(cell, shards);
  zmq::context_t ctx(1);
  std::vector<Pair> ps = OpenPairs(cell, ctx, pairs);
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
    WaitForAny(ps, 5);
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
    WaitForAny(ps, 5);
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
  Emit(&out, co);
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
  if (mode == "latency") return Latency(rest);
  if (mode == "connections") return Connections(rest);
  throw Exit{EX_USAGE, "'" + mode + "' is not a mode (connections, throughput, latency, pages)"};
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
