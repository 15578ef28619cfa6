// natterctl(8): the operator's tool for a local cell: init, up, down,
// status, token.
#include <signal.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <boost/program_options.hpp>
#include <sodium.h>

#include "common/text.h"
#include "common/token.h"
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
    "       natterctl up     [--dir DIR] [--listen ENDPOINT] [--shards N]\n"
    "       natterctl down   [--dir DIR]\n"
    "       natterctl status [--dir DIR]\n"
    "       natterctl token  [--dir DIR] --user ID [--ttl DURATION] [--device NAME]\n";

const char kDefaultListen[] = "tcp://127.0.0.1:7420";

struct Args {
  std::string dir;
  std::string listen;
  unsigned shards = 0;
  uint64_t user = 0;
  std::string ttl = "24h";
  std::string device;
};

Args Parse(const std::string& command, const std::vector<std::string>& argv) {
  Args a;
  po::options_description opts;
  opts.add_options()("dir", po::value(&a.dir));
  if (command == "init" || command == "up") {
    opts.add_options()("listen", po::value(&a.listen))("shards", po::value(&a.shards));
  }
  if (command == "token") {
    opts.add_options()("user", po::value(&a.user))("ttl", po::value(&a.ttl))(
        "device", po::value(&a.device));
  }
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argv).options(opts).run(), vm);
    po::notify(vm);
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

bool CellExists(const CellPaths& cell) {
  struct stat st;
  return ::stat(cell.Conf().c_str(), &st) == 0;
}

int Init(const Args& a) {
  CellPaths cell;
  Status s = InitCell(a.dir, a.listen.empty() ? kDefaultListen : a.listen,
                      a.shards == 0 ? 1 : a.shards, &cell);
  if (!s.ok()) {
    throw Exit{s.code() == ErrorCode::kBadRequest ? EX_CANTCREAT : EX_OSERR, s.message()};
  }
  std::cerr << "natterctl: new cell in " << cell.dir << " ("
            << (a.shards == 0 ? 1 : a.shards) << " shard"
            << (a.shards > 1 ? "s" : "") << "); clients use "
            << cell.ClientConf() << "\n";
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
  }
  return Supervise(cell, CellExists(cell) && !a.listen.empty() ? a.listen : "");
}

pid_t SupervisorPid(const CellPaths& cell) {
  std::string line;
  if (!ReadFirstLine(cell.Run() + "/natterctl.pid", &line)) return -1;
  auto pid = ParseUint(line);
  if (!pid || *pid == 0 || ::kill(static_cast<pid_t>(*pid), 0) != 0) return -1;
  return static_cast<pid_t>(*pid);
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

int StatusCommand(const Args& a) {
  CellPaths cell{a.dir};
  if (!CellExists(cell)) throw Exit{EX_USAGE, "no cell in " + cell.dir};
  pid_t sup = SupervisorPid(cell);
  std::vector<std::string> names = {"notifyd"};
  unsigned shards = ShardCount(cell);
  for (unsigned i = 0; i < shards; ++i) names.push_back("stored-" + std::to_string(i));
  names.push_back("routed");
  names.push_back("frontd");
  bool all = sup > 0;
  std::printf("%-10s %-8s %s\n", "NAME", "PID", "STATE");
  std::printf("%-10s %-8s %s\n", "natterctl", sup > 0 ? std::to_string(sup).c_str() : "-",
              sup > 0 ? "running" : "stopped");
  for (const auto& n : names) {
    std::string line;
    pid_t pid = -1;
    if (sup > 0 && ReadFirstLine(cell.Pid(n), &line)) {
      auto v = ParseUint(line);
      if (v && ::kill(static_cast<pid_t>(*v), 0) == 0) pid = static_cast<pid_t>(*v);
    }
    all = all && pid > 0;
    std::printf("%-10s %-8s %s\n", n.c_str(), pid > 0 ? std::to_string(pid).c_str() : "-",
                pid > 0 ? "running" : "stopped");
  }
  return all ? EX_OK : EX_UNAVAILABLE;
}

int Token(const Args& a) {
  if (a.user == 0) throw Exit{EX_USAGE, "token: --user ID (a number above 0) is required"};
  auto ttl = ParseDuration(a.ttl);
  if (!ttl || *ttl == 0) throw Exit{EX_USAGE, "token: --ttl: '" + a.ttl + "' is not a duration (90s, 15m, 24h, 7d)"};
  if (!a.device.empty() && (a.device.size() > 64 || a.device.find(' ') != std::string::npos)) {
    throw Exit{EX_USAGE, "token: --device: 1 to 64 bytes, no spaces"};
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
  throw Exit{EX_USAGE, "'" + command + "' is not a command (init, up, down, status, token)"};
}

}  // namespace
}  // namespace ctl
}  // namespace natter

int main(int argc, char** argv) {
  try {
    return natter::ctl::Main(argc, argv);
  } catch (const natter::ctl::Exit& e) {
    std::cerr << "natterctl: " << e.message << "\n";
    return e.code;
  } catch (const std::exception& e) {
    std::cerr << "natterctl: " << e.what() << "\n";
    return 1;
  }
}
