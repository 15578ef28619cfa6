// natter-bench(1): what its modes share.  Each mode (pages.cc,
// throughput.cc, latency.cc, connections.cc) parses its own options with
// ParseMode, starts a cell of its own in a BenchDir, drives it through the
// client library, prints a table on stderr and one JSON line on stdout
// (Emit), and returns a sysexits code.  Everything here runs on one thread;
// connections forks worker processes, which share nothing but pipes.
#ifndef NATTER_TOOLS_BENCH_BENCH_H_
#define NATTER_TOOLS_BENCH_BENCH_H_

#include <sys/types.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/flags.h"
#include "tests/support/local_cell.h"
#include "tests/support/temp_dir.h"

namespace natter {
namespace bench {

using Clock = std::chrono::steady_clock;

// Ends the run: main prints the message and exits with the code.
struct Exit {
  int code;
  std::string message;
};

// s seconds as the clock counts; the seconds since t.
Clock::duration Seconds(double s);
double SecondsSince(Clock::time_point t);

// The options every mode has.
struct CellOptions {
  unsigned shards = 1;
  unsigned replicas = 1;  // each shard's
  unsigned frontds = 1;   // frontd-0 .. frontd-N-1 when above 1
  std::string dir;
  bool keep = false;
  std::string curve_ipc = "yes";
  // [frontd] handshake-rate (connections' --handshake-rate); 0: frontd's
  // default.
  unsigned handshake_rate = 0;
  // What goes into the cell's natter.conf besides natterctl init's.
  std::string Conf() const;
};

// Parses a mode's options, with --shards, --replicas, --frontds, --dir,
// --keep and --curve-ipc added; throws Exit (64) for bad ones.
void ParseMode(const char* mode, const std::vector<std::string>& args,
               boost::program_options::options_description& opts,
               CellOptions* cell);

// A folder for the bench's cell: DIR if given, else a new temporary one
// (removed at the end unless --keep).
struct BenchDir {
  std::string path;
  std::unique_ptr<TempDir> temp;  // unless --dir
  explicit BenchDir(std::string dir, bool keep);
  ~BenchDir();
};

// The JSON line on stdout, with the settings of the cell.
void Emit(nlohmann::json* out, const CellOptions& co);

// A daemon's CPU seconds and memory, from /proc.
struct ProcStats {
  double cpu_s = 0;
  uint64_t rss = 0;   // resident now, bytes
  uint64_t peak = 0;  // the most resident so far (VmHWM), bytes
};
ProcStats ReadProc(pid_t pid);

// The daemons of a local cell by name (frontd or frontd-K, routed,
// notifyd, stored-N or stored-N.R), from their pid files.
class Daemons {
 public:
  Daemons(const LocalCell& cell, const CellOptions& co);
  const std::map<std::string, pid_t>& pids() const { return pids_; }
  pid_t pid(const std::string& name) const { return pids_.at(name); }
  // The frontds' names: "frontd", or frontd-0 .. frontd-N-1.
  const std::vector<std::string>& frontds() const { return frontds_; }
  // Every daemon's figures, now.
  std::map<std::string, ProcStats> Read() const;

 private:
  std::map<std::string, pid_t> pids_;
  std::vector<std::string> frontds_;
};

// Each daemon's CPU time while a load runs, and its memory: the most seen,
// and what it holds once the load is gone; the CPU a message, each
// daemon's and the cell's (what issue 18 measures).
class DaemonWatch {
 public:
  explicit DaemonWatch(const Daemons& daemons)
      : daemons_(daemons), before_(daemons.Read()) {}

  // Notes each daemon's resident memory (its peak is the most noted).
  void Sample();
  // The load stops, `messages` messages processed.
  void Stop(uint64_t messages);

  // Reads the daemons once more (the memory after) and puts each one's
  // figures in out["daemons"] (cpu_s, cpu_us_per_msg, rss_peak_bytes,
  // rss_after_bytes), the cell's in out["cell_cpu_us_per_msg"], and a
  // table on stderr.
  void Report(double elapsed, nlohmann::json* out) const;

 private:
  uint64_t Peak(const std::string& name) const;

  const Daemons& daemons_;
  std::map<std::string, ProcStats> before_, during_;
  std::map<std::string, uint64_t> peak_;  // resident bytes
  uint64_t messages_ = 0;
};

// The CPU microseconds a message of cpu_s seconds over messages (0 for
// none).
double MicrosPerMessage(double cpu_s, uint64_t messages);

// The q-quantile of sorted values (0 for none).
double Quantile(const std::vector<double>& sorted, double q);

// The modes: each takes the arguments after its name.
int Pages(const std::vector<std::string>& args);
int Throughput(const std::vector<std::string>& args);
int Latency(const std::vector<std::string>& args);
int Connections(const std::vector<std::string>& args);

}  // namespace bench
}  // namespace natter

#endif  // NATTER_TOOLS_BENCH_BENCH_H_
