// natterctl(8): the operator's tool for a local cell: init, up, down,
// status, token.
#include <dirent.h>
#include <signal.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/control.h"
#include "common/curve.h"
#include "common/flags.h"
#include "common/proto.h"
#include "common/status.h"
#include "common/text.h"
#include "common/token.h"
#include "common/validate.h"
#include "tools/natterctl/cell.h"
#include "tools/natterctl/supervisor.h"

namespace po = boost::program_options;

namespace natter {
namespace ctl {
namespace {

struct Exit {
  int code;
  std::string message;
};

const char kUsage[] =
    "usage: natterctl init   [--dir DIR] [--listen ENDPOINT] [--shards N]\n"
    "                        [--replicas R] [--frontds F]\n"
    "       natterctl up     [--dir DIR] [--listen ENDPOINT] [--shards N]\n"
    "                        [--replicas R] [--frontds F]\n"
    "       natterctl down   [--dir DIR]\n"
    "       natterctl status [--dir DIR] [--json] [--key FILE] [ENDPOINT ...]\n"
    "       natterctl trace  [--dir DIR] MSG_ID|TRACE_ID\n"
    "       natterctl backup [--dir DIR] --to PATH [--key FILE] [--timeout "
    "DURATION] [ENDPOINT ...]\n"
    "       natterctl verify [--dir DIR] [--key FILE] [--timeout DURATION]\n"
    "       natterctl replica add|remove --shard N --replica K [--dir DIR]\n"
    "                        [--key FILE] [--timeout DURATION]\n"
    "       natterctl token  [--dir DIR] --user ID [--ttl DURATION] [--device "
    "NAME]\n"
    "       natterctl token-key add|list [--dir DIR]\n"
    "       natterctl token-key retire --id KEY_ID [--dir DIR]\n"
    "       natterctl keygen --name NAME [--dir DIR]\n"
    "       natterctl reload [--dir DIR]\n"
    "       natterctl drain  [--dir DIR] [--timeout DURATION] FRONTD ...\n";

const char kDefaultListen[] = "tcp://127.0.0.1:7420";

// The highest replica number natterctl replica takes: places are never
// reused, but a shard is not replaced a thousand times.
constexpr uint64_t kMaxReplicaNumber = 999;

// The longest a token may live: a longer one is a mistake, and a token
// that never expires is better made again when needed.
constexpr uint64_t kMaxTokenTtlDays = 3650;  // ten years

struct Args {
  std::string dir;
  std::string listen;
  unsigned shards = 0;
  unsigned replicas = 0;
  unsigned frontds = 0;
  uint64_t user = 0;
  std::string ttl = "24h";
  std::string device;
  std::string name;  // keygen
  std::string id;    // token-key retire
  std::vector<std::string> words;
  bool json = false;
  std::string key;  // status, backup: natterctl's CURVE secret key
  std::string to;   // backup
  std::string timeout = "1h";
  uint64_t shard = 0;    // replica
  uint64_t replica = 0;  // replica
  bool has_shard = false, has_replica = false;
};

Args Parse(const std::string& command, const std::vector<std::string>& argv) {
  Args a;
  po::options_description opts;
  opts.add_options()("dir", po::value(&a.dir));
  if (command == "init" || command == "up") {
    opts.add_options()("listen", po::value(&a.listen))(
        "shards", UintValue("shards", &a.shards))(
        "replicas", UintValue("replicas", &a.replicas))(
        "frontds", UintValue("frontds", &a.frontds));
  }
  if (command == "token") {
    opts.add_options()("user", UintValue("user", &a.user))(
        "ttl", po::value(&a.ttl))("device", po::value(&a.device));
  }
  if (command == "keygen") opts.add_options()("name", po::value(&a.name));
  po::positional_options_description pos;
  if (command == "status" || command == "backup" || command == "trace") {
    opts.add_options()("words", po::value(&a.words));
    pos.add("words", -1);
  }
  if (command == "status" || command == "backup" || command == "verify" ||
      command == "drain")
    opts.add_options()("key", po::value(&a.key));
  if (command == "drain") {
    opts.add_options()("words", po::value(&a.words));
    pos.add("words", -1);
  }
  if (command == "verify" || command == "replica" || command == "drain") {
    a.timeout = "30s";
    opts.add_options()("timeout", po::value(&a.timeout));
  }
  if (command == "replica") {
    opts.add_options()("key", po::value(&a.key))("shard",
                                                 UintValue("shard", &a.shard))(
        "replica", UintValue("replica", &a.replica))("words",
                                                     po::value(&a.words));
    pos.add("words", -1);
  }
  if (command == "status") opts.add_options()("json", po::bool_switch(&a.json));
  if (command == "backup") {
    opts.add_options()("to", po::value(&a.to))("timeout",
                                               po::value(&a.timeout));
  }
  if (command == "token-key") {
    opts.add_options()("id", po::value(&a.id))("words", po::value(&a.words));
    pos.add("words", -1);
  }
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argv).options(opts).positional(pos).run(),
              vm);
    po::notify(vm);
    a.has_shard = vm.count("shard") > 0;
    a.has_replica = vm.count("replica") > 0;
  } catch (const po::error& e) {
    throw Exit{EX_USAGE, command + ": " + e.what()};
  }
  if (a.dir.empty()) {
    const char* home = std::getenv("NATTER_HOME");
    a.dir = home != nullptr && *home ? home : "./natter-cell";
  }
  a.dir = AbsolutePath(a.dir);
  while (a.dir.size() > 1 && a.dir.back() == '/') a.dir.pop_back();
  return a;
}

// --timeout as seconds, above 0; a usage error otherwise.
uint64_t TimeoutSeconds(const Args& a, const char* command) {
  std::optional<uint64_t> seconds = ParseDuration(a.timeout);
  if (!seconds || *seconds == 0) {
    throw Exit{EX_USAGE, std::string(command) + ": --timeout: '" + a.timeout +
                             "' is not a duration"};
  }
  return *seconds;
}

bool CellExists(const CellPaths& cell) {
  struct stat st;
  return ::stat(cell.Conf().c_str(), &st) == 0;
}

int Init(const Args& a) {
  CellPaths cell;
  const unsigned replicas = a.replicas == 0 ? 1 : a.replicas;
  Status s = InitCell(a.dir, a.listen.empty() ? kDefaultListen : a.listen,
                      a.shards == 0 ? 1 : a.shards, replicas,
                      a.frontds == 0 ? 1 : a.frontds, &cell);
  if (!s.ok()) {
    throw Exit{s.code() == ErrorCode::kBadRequest ? EX_CANTCREAT : EX_OSERR,
               s.message()};
  }
  std::cerr << "natterctl: new cell in " << cell.dir << " ("
            << (a.shards == 0 ? 1 : a.shards) << " shard"
            << (a.shards > 1 ? "s" : "")
            << (replicas > 1 ? " of " + std::to_string(replicas) + " replicas"
                             : std::string())
            << (a.frontds > 1 ? ", " + std::to_string(a.frontds) + " frontds"
                              : std::string())
            << "); clients use " << cell.ClientConf() << "\n";
  return EX_OK;
}

int Up(const Args& a) {
  CellPaths cell{a.dir};
  if (!CellExists(cell)) {
    Init(a);
  } else if (a.shards != 0 && a.shards != ShardCount(cell)) {
    throw Exit{EX_USAGE, "the cell in " + cell.dir + " has " +
                             std::to_string(ShardCount(cell)) +
                             " shards; it cannot be changed to " +
                             std::to_string(a.shards)};
  } else if (a.replicas != 0 && !StoredNames(cell).empty() &&
             a.replicas != StoredNames(cell).front().size()) {
    throw Exit{EX_USAGE, "the cell in " + cell.dir + " has " +
                             std::to_string(StoredNames(cell).front().size()) +
                             " replicas a shard; up does not change that"};
  } else if (a.frontds != 0 && a.frontds != FrontdNames(cell).size()) {
    throw Exit{EX_USAGE, "the cell in " + cell.dir + " has " +
                             std::to_string(FrontdNames(cell).size()) +
                             " frontds (client.conf's server); up does not "
                             "change that"};
  }
  return Supervise(cell, CellExists(cell) && !a.listen.empty() ? a.listen : "");
}

// The process a pid file names, if it runs; else -1.
// The pid in pid_file, if that process lives and runs `program`: a pid
// file left behind by a process that died may name another process by
// now, which natterctl must not signal.
pid_t LivePid(const std::string& pid_file, const std::string& program) {
  std::string line;
  if (!ReadFirstLine(pid_file, &line)) return -1;
  auto pid = ParseUint(line);
  if (!pid || *pid == 0 || *pid > static_cast<uint64_t>(INT32_MAX) ||
      ::kill(static_cast<pid_t>(*pid), 0) != 0)
    return -1;
  // The kernel keeps 15 characters of a program's name.
  std::string comm;
  if (!ReadFirstLine("/proc/" + std::to_string(*pid) + "/comm", &comm) ||
      comm != program.substr(0, 15))
    return -1;
  return static_cast<pid_t>(*pid);
}

pid_t SupervisorPid(const CellPaths& cell) {
  return LivePid(cell.Run() + "/natterctl.pid", "natterctl");
}

// name: "frontd-0", "stored-1", "routed", ...; its program natter-frontd,
// natter-stored, natter-routed, ...
pid_t DaemonPid(const CellPaths& cell, const std::string& name) {
  return LivePid(cell.Pid(name), "natter-" + name.substr(0, name.find('-')));
}

int Down(const Args& a) {
  CellPaths cell{a.dir};
  pid_t pid = SupervisorPid(cell);
  if (pid < 0) {
    std::cerr << "natterctl: no cell is running in " << cell.dir << "\n";
    return EX_OK;
  }
  ::kill(pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (::kill(pid, 0) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      throw Exit{EX_UNAVAILABLE, "the cell did not stop within 30s (pid " +
                                     std::to_string(pid) + ")"};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return EX_OK;
}

// The cell's curve-ipc = no: its ipc:// control sockets go without CURVE.
bool PlainIpc(const CellPaths& cell) {
  std::ifstream in(cell.Conf());
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> w = SplitList(line);
    if (w.size() == 3 && w[0] == "curve-ipc" && w[1] == "=" && w[2] == "no")
      return true;
    if (line.rfind("curve-ipc=no", 0) == 0 ||
        line.rfind("curve-ipc =no", 0) == 0)
      return true;
  }
  return false;
}

// The control endpoint of one of the local cell's daemons, with its key.
std::string ControlEndpoint(const CellPaths& cell, const std::string& name) {
  std::string endpoint = cell.Control(name);
  if (PlainIpc(cell)) return endpoint;
  CurveKey pub;
  // stored-N.K, frontd-K: the role's key.
  std::string key_name = name.substr(0, name.find('-'));
  if (!ReadCurveKey(cell.dir + "/keys/" + key_name + ".pub", &pub).ok())
    return endpoint;
  return endpoint + "@" + CurveKeyZ85(pub);
}

// natterctl's own key for the control sockets: --key, or the cell's
// admin key.
CurveIdentity AdminIdentity(const CellPaths& cell,
                            const std::string& key_file) {
  CurveIdentity me;
  std::string path = key_file.empty() ? cell.dir + "/keys/admin.key" : key_file;
  Status s = LoadCurveIdentity(path, &me);
  if (!s.ok()) {
    throw Exit{EX_NOINPUT,
               s.message() +
                   " (natterctl keygen --name admin makes one; then "
                   "natterctl reload)"};
  }
  return me;
}

// One control request and its answer's body; an error answer comes back
// as its status.
template <typename Body, typename Answer>
Status AskDaemon(zmq::context_t& ctx, const std::string& endpoint,
                 const CurveIdentity& me, uint64_t corr, const Body& body,
                 int timeout_ms, Answer* out) {
  Header h;
  h.corr = corr;
  std::string answer;
  Status s =
      AskControl(ctx, endpoint, me, EncodeFrame(h, body), timeout_ms, &answer);
  Frame f;
  if (s.ok()) s = DecodeFrame(answer.data(), answer.size(), &f);
  if (s.ok() && f.type() == MsgType::kError) {
    Error e;
    DecodeBody(f, &e);
    return Status(e.code, e.message);
  }
  return s.ok() ? DecodeBody(f, out) : s;
}

nlohmann::json MetricsJson(const std::vector<Metric>& metrics) {
  nlohmann::json j = nlohmann::json::object();
  for (const Metric& m : metrics) {
    if (m.type != "summary") {
      j[m.name] = m.value;
      continue;
    }
    nlohmann::json q = {{"count", m.count}, {"sum", m.sum}};
    for (const auto& [quantile, v] : m.quantiles) {
      q[quantile == 0.5 ? "p50" : quantile == 0.99 ? "p99" : "p999"] = v;
    }
    j[m.name] = q;
  }
  return j;
}

void PrintMetrics(const std::string& daemon,
                  const std::vector<Metric>& metrics) {
  for (const Metric& m : metrics) {
    if (m.type != "summary") {
      std::printf("%-10s %-46s %.15g\n", daemon.c_str(), m.name.c_str(),
                  m.value);
      continue;
    }
    std::printf("%-10s %-46s", daemon.c_str(), m.name.c_str());
    for (const auto& [q, v] : m.quantiles) {
      std::printf(" p%g=%.3gms", q * 100, v * 1000);
    }
    std::printf(" count=%llu\n", static_cast<unsigned long long>(m.count));
  }
}

// Asks each daemon for its metrics; false if one did not answer.
bool ShowMetrics(
    const std::vector<std::pair<std::string, std::string>>& daemons,
    const CurveIdentity& me, bool json, nlohmann::json* out) {
  zmq::context_t ctx(1);
  bool all = true;
  for (const auto& [name, endpoint] : daemons) {
    StatsReply reply;
    Status s = AskDaemon(ctx, endpoint, me, 1, StatsRequest(), 2000, &reply);
    if (!s.ok()) {
      all = false;
      std::cerr << "natterctl: status: " << name << ": " << s.message() << "\n";
      if (json) (*out)[name]["error"] = s.message();
      continue;
    }
    if (json) {
      (*out)[name]["metrics"] = MetricsJson(reply.metrics);
    } else {
      PrintMetrics(name, reply.metrics);
    }
  }
  return all;
}

int StatusCommand(const Args& a) {
  CellPaths cell{a.dir};
  nlohmann::json out = nlohmann::json::object();
  if (!a.words.empty()) {
    // Control sockets named on the command line (a cell across hosts).
    std::vector<std::pair<std::string, std::string>> daemons;
    for (const std::string& ep : a.words)
      daemons.emplace_back(BindAddress(ep), ep);
    bool all = ShowMetrics(daemons, AdminIdentity(cell, a.key), a.json, &out);
    if (a.json) std::cout << out.dump() << "\n";
    return all ? EX_OK : EX_UNAVAILABLE;
  }
  if (!CellExists(cell)) throw Exit{EX_USAGE, "no cell in " + cell.dir};
  pid_t sup = SupervisorPid(cell);
  std::vector<std::string> names = {"notifyd"};
  for (const auto& shard : StoredNames(cell))
    names.insert(names.end(), shard.begin(), shard.end());
  names.push_back("routed");
  for (const std::string& f : FrontdNames(cell)) names.push_back(f);
  bool all = sup > 0;
  if (!a.json) {
    std::printf("%-10s %-8s %s\n", "NAME", "PID", "STATE");
    std::printf("%-10s %-8s %s\n", "natterctl",
                sup > 0 ? std::to_string(sup).c_str() : "-",
                sup > 0 ? "running" : "stopped");
  }
  out["natterctl"] = {{"pid", sup > 0 ? sup : 0},
                      {"state", sup > 0 ? "running" : "stopped"}};
  std::vector<std::pair<std::string, std::string>> running;
  for (const auto& n : names) {
    std::string line;
    pid_t pid = -1;
    if (sup > 0 && ReadFirstLine(cell.Pid(n), &line)) {
      auto v = ParseUint(line);
      if (v && ::kill(static_cast<pid_t>(*v), 0) == 0)
        pid = static_cast<pid_t>(*v);
    }
    all = all && pid > 0;
    if (pid > 0) running.emplace_back(n, ControlEndpoint(cell, n));
    out[n] = {{"pid", pid > 0 ? pid : 0},
              {"state", pid > 0 ? "running" : "stopped"}};
    if (!a.json) {
      std::printf("%-10s %-8s %s\n", n.c_str(),
                  pid > 0 ? std::to_string(pid).c_str() : "-",
                  pid > 0 ? "running" : "stopped");
    }
  }
  if (!running.empty()) {
    if (!a.json) std::printf("\n");
    all = ShowMetrics(running, AdminIdentity(cell, a.key), a.json, &out) && all;
  }
  if (a.json) std::cout << out.dump() << "\n";
  return all ? EX_OK : EX_UNAVAILABLE;
}

// natterctl trace: one request's path through the local cell, from the
// daemons' logs (lines with its trace id, in time order).
int Trace(const Args& a) {
  CellPaths cell{a.dir};
  if (a.words.size() != 1)
    throw Exit{EX_USAGE,
               "trace: which message? natterctl trace MSG_ID|TRACE_ID"};
  const std::string& wanted = a.words[0];
  bool is_trace =
      wanted.size() == 16 &&
      wanted.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!is_trace && (wanted.empty() || wanted.find_first_not_of("0123456789") !=
                                          std::string::npos)) {
    throw Exit{EX_USAGE,
               "trace: '" + wanted +
                   "' is neither a message id nor a trace id (16 hex digits)"};
  }
  std::vector<std::string> lines;
  std::set<std::string> traces;
  if (is_trace) traces.insert(wanted);
  DIR* d = ::opendir((cell.dir + "/log").c_str());
  if (d == nullptr) throw Exit{EX_NOINPUT, "no logs in " + cell.dir + "/log"};
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 5 || name.compare(name.size() - 4, 4, ".log") != 0)
      continue;
    std::ifstream in(cell.dir + "/log/" + name);
    std::string line;
    while (std::getline(in, line)) {
      size_t t = line.find(" trace=");
      if (t == std::string::npos) continue;
      lines.push_back(line);
      if (!is_trace && line.find(" id=" + wanted + " ") != std::string::npos) {
        traces.insert(line.substr(t + 7, 16));
      } else if (!is_trace && line.size() >= wanted.size() + 4 &&
                 line.compare(line.size() - wanted.size() - 4,
                              wanted.size() + 4, " id=" + wanted) == 0) {
        traces.insert(line.substr(t + 7, 16));
      }
    }
  }
  ::closedir(d);
  std::vector<std::string> path;
  for (const std::string& line : lines) {
    size_t t = line.find(" trace=");
    if (traces.count(line.substr(t + 7, 16))) path.push_back(line);
  }
  if (path.empty()) {
    throw Exit{
        EX_NOINPUT,
        "no trace of " + wanted + " in " + cell.dir +
            "/log (send with natter send --trace, or run the daemons with "
            "--log-level debug)"};
  }
  // Lines begin with their time (RFC 3339, UTC, microseconds): sorted, they
  // are the path.
  std::sort(path.begin(), path.end());
  for (const std::string& line : path) std::cout << line << "\n";
  return EX_OK;
}

// natterctl backup: each shard copies itself (a LevelDB snapshot) into
// PATH/shard-N while the cell runs.
int Backup(const Args& a) {
  CellPaths cell{a.dir};
  if (a.to.empty()) throw Exit{EX_USAGE, "backup: --to PATH is required"};
  const uint64_t timeout = TimeoutSeconds(a, "backup");
  std::string to = AbsolutePath(a.to);
  while (to.size() > 1 && to.back() == '/') to.pop_back();
  // Each shard's control endpoints: its replicas', tried in turn (any
  // replica's database is the shard's as of some moment).
  std::vector<std::vector<std::string>> endpoints;
  for (const std::string& ep : a.words) endpoints.push_back({ep});
  if (endpoints.empty()) {
    if (!CellExists(cell)) throw Exit{EX_USAGE, "no cell in " + cell.dir};
    for (const auto& shard : StoredNames(cell)) {
      endpoints.emplace_back();
      for (const std::string& name : shard) {
        endpoints.back().push_back(ControlEndpoint(cell, name));
      }
    }
    // The shards write where this host sees the path: make the folder.
    if (::mkdir(to.c_str(), 0700) != 0) {
      throw Exit{errno == EEXIST ? EX_CANTCREAT : EX_OSERR,
                 "backup: cannot make " + to + ": " + std::strerror(errno)};
    }
  }
  CurveIdentity me = AdminIdentity(cell, a.key);
  zmq::context_t ctx(1);
  for (size_t i = 0; i < endpoints.size(); ++i) {
    BackupRequest req;
    req.path = to + "/shard-" + std::to_string(i);
    BackupReply r;
    Status s;
    for (const std::string& endpoint : endpoints[i]) {
      s = AskDaemon(ctx, endpoint, me, i + 1, req,
                    static_cast<int>(std::min<uint64_t>(timeout, 86400) * 1000),
                    &r);
      if (s.ok() || s.code() != ErrorCode::kUnavailable) break;
    }
    if (!s.ok())
      throw Exit{ExitCodeFor(s.code()),
                 "backup: shard " + std::to_string(i) + ": " + s.message()};
    std::printf("shard-%zu %s %llu records %llu bytes\n", i, r.path.c_str(),
                static_cast<unsigned long long>(r.records),
                static_cast<unsigned long long>(r.bytes));
  }
  return EX_OK;
}

// natterctl verify: every replica of every shard, asked for a digest of
// its database, agrees with the others at one log position.  Replicas
// still applying are asked again until they stand at one position (a cell
// with traffic may take a while) or the timeout.
int Verify(const Args& a) {
  CellPaths cell{a.dir};
  if (!CellExists(cell)) throw Exit{EX_USAGE, "no cell in " + cell.dir};
  const uint64_t timeout = TimeoutSeconds(a, "verify");
  CurveIdentity me = AdminIdentity(cell, a.key);
  zmq::context_t ctx(1);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
  std::vector<std::vector<std::string>> shards = StoredNames(cell);
  uint64_t corr = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    for (;;) {
      std::vector<DigestReply> replies;
      std::string problem;
      for (const std::string& name : shards[i]) {
        DigestReply r;
        Status s = AskDaemon(ctx, ControlEndpoint(cell, name), me, ++corr,
                             DigestRequest(), 10000, &r);
        if (!s.ok()) {
          problem = name + ": " + s.message();
          break;
        }
        replies.push_back(r);
      }
      bool one_position = problem.empty();
      for (const DigestReply& r : replies) {
        one_position =
            one_position && r.applied_index == replies.front().applied_index;
      }
      if (one_position) {
        for (size_t k = 0; k < replies.size(); ++k) {
          if (replies[k].digest == replies.front().digest) continue;
          for (size_t j = 0; j < replies.size(); ++j) {
            std::fprintf(
                stderr, "%s index %llu digest %s\n", shards[i][j].c_str(),
                static_cast<unsigned long long>(replies[j].applied_index),
                replies[j].digest.c_str());
          }
          throw Exit{EX_DATAERR, "verify: shard " + std::to_string(i) +
                                     ": the replicas differ at index " +
                                     std::to_string(replies[k].applied_index)};
        }
        std::printf(
            "shard-%zu index %llu %s %zu replica%s agree, %llu records\n", i,
            static_cast<unsigned long long>(replies.front().applied_index),
            replies.front().digest.c_str(), replies.size(),
            replies.size() == 1 ? "" : "s",
            static_cast<unsigned long long>(replies.front().records));
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        throw Exit{
            EX_UNAVAILABLE,
            "verify: shard " + std::to_string(i) + ": " +
                (problem.empty() ? "the replicas did not stand at one log "
                                   "position within the timeout"
                                 : problem)};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  }
  return EX_OK;
}

// natterctl replica add|remove: asks the shard's leader to add replica K
// to its voters or remove it, and waits until that is committed.  The
// shard's replicas are asked in turn; one that does not lead names the
// leader, which is asked next.
int ReplicaCommand(const Args& a) {
  if (a.words.size() != 1 || (a.words[0] != "add" && a.words[0] != "remove"))
    throw Exit{EX_USAGE, "replica: add or remove, then --shard N --replica K"};
  if (!a.has_shard || !a.has_replica)
    throw Exit{EX_USAGE, "replica: --shard N and --replica K are required"};
  CellPaths cell{a.dir};
  if (!CellExists(cell)) throw Exit{EX_USAGE, "no cell in " + cell.dir};
  const uint64_t timeout = TimeoutSeconds(a, "replica");
  std::vector<std::vector<std::string>> shards = StoredNames(cell);
  if (a.shard >= shards.size() || shards[a.shard].empty()) {
    throw Exit{EX_USAGE, "replica: there is no shard " +
                             std::to_string(a.shard) + " in " + cell.Conf()};
  }
  if (a.replica > kMaxReplicaNumber) {
    throw Exit{EX_USAGE,
               "replica: --replica: 0 to " + std::to_string(kMaxReplicaNumber)};
  }
  CurveIdentity me = AdminIdentity(cell, a.key);
  zmq::context_t ctx(1);
  MembershipRequest req;
  req.add = a.words[0] == "add";
  req.replica = static_cast<uint32_t>(a.replica);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
  const std::string prefix = "stored-" + std::to_string(a.shard) + ".";
  std::string problem = "no replica of the shard answered";
  uint64_t corr = 0;
  size_t next = 0;  // the replica asked next, by its place in shards[]
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string& name = shards[a.shard][next % shards[a.shard].size()];
    ++next;
    Header h;
    h.corr = ++corr;
    std::string answer;
    int left =
        static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                             deadline - std::chrono::steady_clock::now())
                             .count());
    // A few seconds a replica: one that is down is not waited for; asked
    // again, the leader answers when the change it made is committed.
    Status s =
        AskControl(ctx, ControlEndpoint(cell, name), me, EncodeFrame(h, req),
                   std::clamp(left, 1, 3000), &answer);
    Frame f;
    if (s.ok()) s = DecodeFrame(answer.data(), answer.size(), &f);
    if (s.ok() && f.type() == MsgType::kMembershipReply) {
      MembershipReply r;
      s = DecodeBody(f, &r);
      if (s.ok()) {
        std::string voters;
        for (uint64_t v : r.replicas)
          voters += (voters.empty() ? "" : " ") + std::to_string(v);
        std::printf("shard-%llu index %llu voters %s\n",
                    static_cast<unsigned long long>(a.shard),
                    static_cast<unsigned long long>(r.index), voters.c_str());
        return EX_OK;
      }
    }
    if (s.ok() && f.type() == MsgType::kNotLeader) {
      NotLeader n;
      s = DecodeBody(f, &n);
      problem = name + " does not lead the shard";
      if (s.ok() && n.leader > 0) {
        // Ask the one it names next.
        const std::string leader = prefix + std::to_string(n.leader - 1);
        auto& names = shards[a.shard];
        auto at = std::find(names.begin(), names.end(), leader);
        if (at != names.end()) next = static_cast<size_t>(at - names.begin());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (s.ok() && f.type() == MsgType::kError) {
      Error e;
      DecodeBody(f, &e);
      s = Status(e.code, e.message);
    }
    if (!s.ok() && !IsRetryable(s.code()))
      throw Exit{ExitCodeFor(s.code()),
                 "replica: " + name + ": " + s.message()};
    problem = name + ": " + s.message();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  throw Exit{EX_UNAVAILABLE,
             "replica: shard " + std::to_string(a.shard) + ": " + problem};
}

int Token(const Args& a) {
  if (a.user == 0)
    throw Exit{EX_USAGE, "token: --user ID (a number above 0) is required"};
  auto ttl = ParseDuration(a.ttl);
  if (!ttl || *ttl == 0 || *ttl > kMaxTokenTtlDays * 86400) {
    throw Exit{EX_USAGE,
               "token: --ttl: '" + a.ttl + "' is not a duration of 1s to " +
                   std::to_string(kMaxTokenTtlDays) + "d (90s, 15m, 24h, 7d)"};
  }
  if (!a.device.empty()) {
    Status valid = ValidateDevice(a.device);
    if (!valid.ok())
      throw Exit{EX_USAGE, "token: --device: " + valid.message()};
  }
  CellPaths cell{a.dir};
  SigningKey key;
  Status s = ReadSigningKey(cell.TokenKeys(), "", &key);
  if (!s.ok()) throw Exit{EX_NOINPUT, s.message()};
  TokenClaims claims;
  claims.user = UserId(a.user);
  claims.device = a.device;
  claims.issued = static_cast<uint64_t>(std::time(nullptr));
  claims.expires = claims.issued + *ttl;
  std::cout << SignToken(claims, key) << "\n";
  return EX_OK;
}

std::vector<pid_t> DaemonPids(const CellPaths& cell) {
  std::vector<pid_t> pids;
  if (SupervisorPid(cell) < 0) return pids;
  // The supervisor too: it starts and stops replicas the shard map gained
  // or lost.
  pids.push_back(SupervisorPid(cell));
  std::vector<std::string> names = {"notifyd", "routed"};
  for (const std::string& f : FrontdNames(cell)) names.push_back(f);
  for (const auto& shard : StoredNames(cell))
    names.insert(names.end(), shard.begin(), shard.end());
  for (const auto& n : names) {
    pid_t pid = DaemonPid(cell, n);
    if (pid > 0) pids.push_back(pid);
  }
  return pids;
}

// natterctl drain: each frontd named is told to stop (SIGTERM): it takes
// no new connection, tells its devices to move to another frontd, and
// exits once they have gone (natter-frontd(8), drain-timeout).  Under
// natterctl up the supervisor starts it again; drain waits for that too,
// so that draining the frontds one after another is a rolling restart.
int Drain(const Args& a) {
  CellPaths cell{a.dir};
  if (!CellExists(cell)) throw Exit{EX_USAGE, "no cell in " + cell.dir};
  if (a.words.empty()) throw Exit{EX_USAGE, "drain: name a frontd"};
  const uint64_t timeout = TimeoutSeconds(a, "drain");
  const std::vector<std::string> frontds = FrontdNames(cell);
  for (const std::string& name : a.words) {
    if (std::find(frontds.begin(), frontds.end(), name) == frontds.end()) {
      std::string known;
      for (const std::string& f : frontds) known += " " + f;
      throw Exit{EX_USAGE, "drain: " + name + " is not a frontd of the cell (" +
                               known.substr(1) + ")"};
    }
  }
  const bool supervised = SupervisorPid(cell) > 0;
  for (const std::string& name : a.words) {
    const pid_t pid = DaemonPid(cell, name);
    if (pid < 0)
      throw Exit{EX_UNAVAILABLE, "drain: " + name + " is not running"};
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
    ::kill(pid, SIGTERM);
    while (::kill(pid, 0) == 0) {
      if (std::chrono::steady_clock::now() >= deadline) {
        throw Exit{EX_UNAVAILABLE,
                   "drain: " + name + " did not stop within the timeout"};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!supervised) {
      std::printf("%s drained\n", name.c_str());
      continue;
    }
    // Started again by the supervisor: ready once its control socket
    // answers.
    zmq::context_t ctx(1);
    CurveIdentity me = AdminIdentity(cell, a.key);
    for (;;) {
      const pid_t again = DaemonPid(cell, name);
      StatsReply reply;
      if (again > 0 && again != pid &&
          AskDaemon(ctx, ControlEndpoint(cell, name), me, 1, StatsRequest(),
                    500, &reply)
              .ok()) {
        std::printf("%s drained, and running again (pid %d)\n", name.c_str(),
                    static_cast<int>(again));
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        throw Exit{EX_UNAVAILABLE,
                   "drain: " + name +
                       " stopped, but was not running again within the "
                       "timeout"};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return EX_OK;
}

int Reload(const Args& a) {
  CellPaths cell{a.dir};
  auto pids = DaemonPids(cell);
  if (pids.empty())
    throw Exit{EX_UNAVAILABLE, "no cell is running in " + cell.dir};
  for (pid_t pid : pids) ::kill(pid, SIGHUP);
  return EX_OK;
}

int Keygen(const Args& a) {
  if (a.name.empty() || a.name.find('/') != std::string::npos ||
      a.name[0] == '.') {
    throw Exit{EX_USAGE, "keygen: --name NAME (a file name) is required"};
  }
  if (!PeerRoleOfName(a.name)) {
    throw Exit{EX_USAGE,
               "keygen: '" + a.name + "' names no role; " + kPeerKeyNaming};
  }
  CellPaths cell{a.dir};
  if (!CellExists(cell)) throw Exit{EX_USAGE, "no cell in " + cell.dir};
  CurveKey pub;
  Status s = MakeDaemonKey(cell, a.name, &pub);
  if (!s.ok()) throw Exit{EX_CANTCREAT, "keygen: " + s.message()};
  std::cerr << "natterctl: " << cell.dir << "/keys/" << a.name
            << ".key made; its public key is listed in " << cell.PeerKeys()
            << "; copy " << a.name
            << ".pub, under this name (it gives the key its role), into the"
            << " peer-keys folder of every host of the cell and run natterctl "
               "reload there\n";
  std::cout << CurveKeyZ85(pub) << "\n";
  return EX_OK;
}

int TokenKey(const Args& a) {
  CellPaths cell{a.dir};
  std::string verb = a.words.empty() ? "" : a.words[0];
  if (a.words.size() != 1)
    throw Exit{EX_USAGE, "token-key: add, list or retire --id KEY_ID"};
  if (verb == "add") {
    SigningKey key = GenerateSigningKey();
    Status s = WriteSigningKey(cell.TokenKeys(), key);
    if (!s.ok()) throw Exit{EX_CANTCREAT, "token-key: " + s.message()};
    std::cout << key.id << "\n";
    std::cerr << "natterctl: new tokens are signed with " << key.id
              << "; run natterctl reload so that frontd accepts them\n";
    return EX_OK;
  }
  if (verb == "list") {
    TokenVerifier v;
    Status s = v.LoadDir(cell.TokenKeys());
    if (!s.ok()) throw Exit{EX_NOINPUT, s.message()};
    SigningKey newest;
    ReadSigningKey(cell.TokenKeys(), "", &newest);
    for (const std::string& id : v.KeyIds()) {
      std::cout << id << (id == newest.id ? " signing" : "") << "\n";
    }
    return EX_OK;
  }
  if (verb == "retire") {
    if (a.id.empty() || a.id.find('/') != std::string::npos) {
      throw Exit{EX_USAGE, "token-key retire: --id KEY_ID is required"};
    }
    std::string pub = cell.TokenKeys() + "/" + a.id + ".pub";
    if (::access(pub.c_str(), F_OK) != 0)
      throw Exit{EX_NOINPUT, "token-key: no key " + a.id};
    TokenVerifier v;
    v.LoadDir(cell.TokenKeys());
    if (v.key_count() <= 1)
      throw Exit{EX_USAGE,
                 "token-key: " + a.id + " is the only key; add one first"};
    ::unlink((cell.TokenKeys() + "/" + a.id + ".sec").c_str());
    ::unlink(pub.c_str());
    std::cerr << "natterctl: tokens signed with " << a.id
              << " are refused once natterctl reload has run\n";
    return EX_OK;
  }
  throw Exit{EX_USAGE, "token-key: add, list or retire --id KEY_ID"};
}

int Main(int argc, char** argv) {
  if (sodium_init() < 0) throw Exit{EX_SOFTWARE, "libsodium failed to start"};
  if (argc < 2) throw Exit{EX_USAGE, std::string("no command\n") + kUsage};
  std::string command = argv[1];
  if (command == "-h" || command == "--help" || command == "help") {
    std::cout << kUsage;
    return EX_OK;
  }
  std::vector<std::string> rest(argv + 2, argv + argc);
  if (command == "init") return Init(Parse(command, rest));
  if (command == "up") return Up(Parse(command, rest));
  if (command == "down") return Down(Parse(command, rest));
  if (command == "status") return StatusCommand(Parse(command, rest));
  if (command == "token") return Token(Parse(command, rest));
  if (command == "token-key") return TokenKey(Parse(command, rest));
  if (command == "keygen") return Keygen(Parse(command, rest));
  if (command == "reload") return Reload(Parse(command, rest));
  if (command == "trace") return Trace(Parse(command, rest));
  if (command == "backup") return Backup(Parse(command, rest));
  if (command == "verify") return Verify(Parse(command, rest));
  if (command == "replica") return ReplicaCommand(Parse(command, rest));
  if (command == "drain") return Drain(Parse(command, rest));
  throw Exit{EX_USAGE, "'" + command + "' is not a command; see natterctl -h"};
}

}  // namespace
}  // namespace ctl
}  // namespace natter

int main(int argc, char** argv) {
  try {
    return natter::ctl::Main(argc, argv);
  } catch (const natter::ctl::Exit& e) {
    std::cerr << "natterctl: " << natter::Printable(e.message) << "\n";
    return e.code;
  } catch (const std::exception& e) {
    std::cerr << "natterctl: " << e.what() << "\n";
    return 1;
  }
}
