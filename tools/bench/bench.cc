// natter-bench(1): load and measurements through the client library,
// against a cell it starts itself.  This file holds what the modes share
// (bench.h) and main; each mode is a file of its own: pages.cc,
// throughput.cc, latency.cc (the last two drive the pairs of pairs.h) and
// connections.cc.
#include "tools/bench/bench.h"

#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "common/daemon.h"
#include "tests/support/proc_status.h"

namespace po = boost::program_options;

namespace natter {
namespace bench {
namespace {

const char kUsage[] =
    "usage: natter-bench pages [--messages N] [--small N] [--samples N]\n"
    "                          [--shards N] [--replicas R] [--dir DIR] "
    "[--keep]\n"
    "       natter-bench throughput [--pairs P] [--window W] [--seconds S]\n"
    "                          [--text-bytes N] [--shards N] [--replicas R] "
    "[--dir DIR] "
    "[--keep]\n"
    "       natter-bench connections [--clients N] [--messages M] [--rate R]\n"
    "                          [--connect-rate C] [--workers K] [--text-bytes "
    "N]\n"
    "                          [--shards N] [--replicas R] [--dir DIR] "
    "[--keep]\n"
    "       natter-bench latency [--rate R] [--seconds S] [--pairs P]\n"
    "                          [--text-bytes N] [--shards N] [--replicas R] "
    "[--dir DIR] "
    "[--keep]\n";

}  // namespace

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(s));
}

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

BenchDir::BenchDir(std::string dir, bool keep) : path(std::move(dir)) {
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

BenchDir::~BenchDir() {
  if (!temp || temp->kept())
    std::fprintf(stderr, "the cell is in %s/cell\n", path.c_str());
}

// The bench measures the cell with a few users sending as fast as they
// can: without the per-user rate of writes, which would measure only
// itself; and its thousands of clients connect at once from one address,
// which frontd would otherwise take for a flood of handshakes.
std::string CellOptions::Conf() const {
  return std::string("[stored]\nuser-rate = 0\n") +
         "[frontd]\nmax-pending = 100000\nmax-pending-per-address = 100000\n" +
         (handshake_rate > 0
              ? "handshake-rate = " + std::to_string(handshake_rate) + "\n"
              : "") +
         (curve_ipc == "no" ? "[cell]\ncurve-ipc = no\n" : "");
}

void ParseMode(const char* mode, const std::vector<std::string>& args,
               po::options_description& opts, CellOptions* cell) {
  opts.add_options()("shards", UintValue("shards", &cell->shards))(
      "replicas", UintValue("replicas", &cell->replicas))(
      "frontds", UintValue("frontds", &cell->frontds))(
      "dir", po::value(&cell->dir))("keep", po::bool_switch(&cell->keep))(
      "curve-ipc", po::value(&cell->curve_ipc));
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw Exit{EX_USAGE, std::string(mode) + ": " + e.what()};
  }
  if (cell->shards < 1)
    throw Exit{EX_USAGE, std::string(mode) + ": --shards must be above 0"};
  if (cell->replicas != 1 && cell->replicas != 3 && cell->replicas != 5) {
    throw Exit{EX_USAGE, std::string(mode) + ": --replicas is 1, 3 or 5"};
  }
  if (cell->frontds < 1 || cell->frontds > 64) {
    throw Exit{EX_USAGE, std::string(mode) + ": --frontds is 1 to 64"};
  }
  if (cell->curve_ipc != "yes" && cell->curve_ipc != "no") {
    throw Exit{EX_USAGE, std::string(mode) + ": --curve-ipc is yes or no"};
  }
}

void Emit(nlohmann::json* out, const CellOptions& co) {
  (*out)["curve_ipc"] = co.curve_ipc;
  (*out)["replicas"] = co.replicas;
  (*out)["frontds"] = co.frontds;
  std::cout << out->dump() << std::endl;
}

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

Daemons::Daemons(const LocalCell& cell, const CellOptions& co) {
  for (unsigned k = 0; k < co.frontds; ++k) {
    frontds_.push_back(co.frontds == 1 ? "frontd"
                                       : "frontd-" + std::to_string(k));
  }
  std::vector<std::string> names = frontds_;
  names.insert(names.end(), {"routed", "notifyd"});
  for (unsigned i = 0; i < co.shards; ++i) {
    for (unsigned k = 0; k < co.replicas; ++k) {
      std::string name = "stored-" + std::to_string(i);
      if (co.replicas > 1) name += "." + std::to_string(k);
      names.push_back(name);
    }
  }
  for (const std::string& n : names) pids_[n] = cell.DaemonPid(n);
}

std::map<std::string, ProcStats> Daemons::Read() const {
  std::map<std::string, ProcStats> out;
  for (const auto& [name, pid] : pids_) out[name] = ReadProc(pid);
  return out;
}

void DaemonWatch::Sample() {
  for (const auto& [name, st] : daemons_.Read())
    peak_[name] = std::max(peak_[name], st.rss);
}

void DaemonWatch::Stop(uint64_t messages) {
  during_ = daemons_.Read();
  messages_ = messages;
}

uint64_t DaemonWatch::Peak(const std::string& name) const {
  auto it = peak_.find(name);
  return it == peak_.end() ? 0 : it->second;
}

void DaemonWatch::Report(double elapsed, nlohmann::json* out) const {
  std::fprintf(stderr, "%-10s %8s %8s %10s %12s %12s\n", "daemon", "cpu s",
               "cpu %", "us/msg", "rss peak MB", "rss after MB");
  double cell = 0;
  for (const auto& [name, after] : daemons_.Read()) {
    const ProcStats& during = during_.at(name);
    double cpu = during.cpu_s - before_.at(name).cpu_s;
    cell += cpu;
    uint64_t peak_rss = std::max({Peak(name), during.rss, after.peak});
    (*out)["daemons"][name] = {
        {"cpu_s", cpu},
        {"cpu_us_per_msg", MicrosPerMessage(cpu, messages_)},
        {"rss_peak_bytes", peak_rss},
        {"rss_after_bytes", after.rss}};
    std::fprintf(stderr, "%-10s %8.2f %8.0f %10.1f %12.1f %12.1f\n",
                 name.c_str(), cpu, 100 * cpu / elapsed,
                 MicrosPerMessage(cpu, messages_), peak_rss / 1048576.0,
                 after.rss / 1048576.0);
  }
  (*out)["cell_cpu_us_per_msg"] = MicrosPerMessage(cell, messages_);
  std::fprintf(stderr, "the cell's CPU: %.1f us a message (%llu messages)\n",
               MicrosPerMessage(cell, messages_),
               static_cast<unsigned long long>(messages_));
}

double MicrosPerMessage(double cpu_s, uint64_t messages) {
  return messages > 0 ? 1e6 * cpu_s / static_cast<double>(messages) : 0.0;
}

double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  return sorted[std::min(sorted.size() - 1,
                         static_cast<size_t>(q * sorted.size()))];
}

namespace {

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
  throw Exit{
      EX_USAGE,
      "'" + mode + "' is not a mode (connections, throughput, latency, pages)"};
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
