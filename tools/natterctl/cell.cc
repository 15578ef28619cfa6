#include "tools/natterctl/cell.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "common/curve.h"
#include "common/shard.h"
#include "common/text.h"
#include "common/token.h"

namespace natter {
namespace ctl {
namespace {

// The longest path an ipc:// endpoint may have (sun_path, less a margin).
constexpr size_t kMaxIpcPath = 100;

Status MakeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return Status(ErrorCode::kInternal, path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

// What a client on this host connects to, for a frontd listening on listen.
std::string ClientEndpoint(const std::string& listen) {
  for (const char* any : {"tcp://*:", "tcp://0.0.0.0:"}) {
    std::string a = any;
    if (listen.compare(0, a.size(), a) == 0) {
      return "tcp://127.0.0.1:" + listen.substr(a.size());
    }
  }
  return listen;
}

}  // namespace

Status MakeDaemonKey(const CellPaths& cell, const std::string& name,
                     CurveKey* public_key) {
  Status s = WriteCurveKeyPair(cell.dir + "/keys", name, public_key);
  if (!s.ok()) return s;
  std::string line;
  ReadFirstLine(cell.dir + "/keys/" + name + ".pub", &line);
  return WriteNewFile(cell.PeerKeys() + "/" + name + ".pub", line + "\n", 0644);
}

std::string AbsolutePath(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
  std::string p = path;
  while (p.compare(0, 2, "./") == 0) p = p.substr(2);
  if (p == ".") return cwd;
  return std::string(cwd) + "/" + p;
}

std::string FrontdListen(const std::string& listen, unsigned k) {
  if (k == 0) return listen;
  size_t colon = listen.rfind(':');
  if (listen.rfind("tcp://", 0) == 0 && colon != std::string::npos) {
    std::optional<uint64_t> port = ParseUint(listen.substr(colon + 1));
    if (port) return listen.substr(0, colon + 1) + std::to_string(*port + k);
  }
  const std::string suffix = ".sock";
  if (listen.size() > suffix.size() &&
      listen.compare(listen.size() - suffix.size(), suffix.size(), suffix) ==
          0) {
    return listen.substr(0, listen.size() - suffix.size()) + "-" +
           std::to_string(k) + suffix;
  }
  return listen + "-" + std::to_string(k);
}

std::vector<std::string> FrontdNames(const CellPaths& cell) {
  std::ifstream in(cell.ClientConf());
  std::string line;
  size_t count = 1;
  while (std::getline(in, line)) {
    if (line.rfind("server", 0) != 0) continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos ||
        line.substr(0, eq).find("key") != std::string::npos)
      continue;
    count = std::max<size_t>(1, SplitList(line.substr(eq + 1)).size());
    break;
  }
  if (count == 1) return {"frontd"};
  std::vector<std::string> names;
  for (size_t k = 0; k < count; ++k)
    names.push_back("frontd-" + std::to_string(k));
  return names;
}

std::string FrontdListenOf(const CellPaths& cell) {
  std::ifstream in(cell.Conf());
  std::string line;
  bool in_frontd = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '[') in_frontd = line == "[frontd]";
    if (!in_frontd || line.rfind("listen", 0) != 0) continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::vector<std::string> words = SplitWords(line.substr(eq + 1));
    return words.empty() ? "" : words.front();
  }
  return "";
}

Status InitCell(const std::string& dir_in, const std::string& listen,
                unsigned shards, unsigned replicas, unsigned frontds,
                CellPaths* out) {
  CellPaths cell{AbsolutePath(dir_in)};
  while (cell.dir.size() > 1 && cell.dir.back() == '/') cell.dir.pop_back();
  *out = cell;
  struct stat st;
  if (::stat(cell.TokenKeys().c_str(), &st) == 0 ||
      ::stat(cell.Conf().c_str(), &st) == 0) {
    return Status(
        ErrorCode::kBadRequest,
        cell.dir + " holds a cell already; refusing to overwrite its keys");
  }
  if (shards == 0 || shards > 256) {
    return Status(ErrorCode::kBadRequest, "--shards: 1 to 256");
  }
  if (replicas != 1 && replicas != 3 && replicas != 5) {
    return Status(ErrorCode::kBadRequest, "--replicas: 1, 3 or 5");
  }
  if (frontds == 0 || frontds > 64) {
    return Status(ErrorCode::kBadRequest, "--frontds: 1 to 64");
  }
  if ((cell.Run() + "/stored-000.0.control").size() > kMaxIpcPath) {
    return Status(
        ErrorCode::kBadRequest,
        cell.dir +
            ": the path is too long for ipc:// sockets; use a shorter folder");
  }
  for (const std::string& d :
       {cell.dir, cell.dir + "/keys", cell.TokenKeys(), cell.dir + "/data",
        cell.Run(), cell.dir + "/log"}) {
    Status s = MakeDir(d, 0700);
    if (!s.ok()) return s;
  }
  Status s = WriteSigningKey(cell.TokenKeys(), GenerateSigningKey());
  if (!s.ok()) return s;
  s = MakeDir(cell.PeerKeys(), 0700);
  if (!s.ok()) return s;
  // A CURVE keypair for each daemon; every public key goes into the
  // cell's allow-list.
  std::map<std::string, CurveKey> pub;
  // admin: natterctl's own, for the daemons' control sockets.
  for (const char* name : {"frontd", "routed", "stored", "notifyd", "admin"}) {
    s = MakeDaemonKey(cell, name, &pub[name]);
    if (!s.ok()) return s;
  }
  auto with_key = [&](const std::string& endpoint, const char* name) {
    return endpoint + "@" + CurveKeyZ85(pub[name]);
  };

  std::ostringstream conf;
  conf << "# natter.conf(5) of the local cell in " << cell.dir << ",\n"
       << "# written by natterctl init.  Every key is described in "
          "natter.conf(5).\n\n"
       << "[cell]\nshards =";
  for (unsigned i = 0; i < shards; ++i) {
    conf << " ";
    for (unsigned k = 0; k < replicas; ++k) {
      std::string name = "stored-" + std::to_string(i);
      if (replicas > 1) name += "." + std::to_string(k);
      conf << (k > 0 ? "," : "")
           << with_key("ipc://" + cell.Run() + "/" + name + ".sock", "stored");
    }
  }
  conf << "\nrouted = "
       << with_key("ipc://" + cell.Run() + "/routed.sock", "routed") << "\n"
       << "notifyd-in = "
       << with_key("ipc://" + cell.Run() + "/notifyd-in.sock", "notifyd")
       << "\n"
       << "notifyd-out = "
       << with_key("ipc://" + cell.Run() + "/notifyd-out.sock", "notifyd")
       << "\n"
       << "token-keys = " << cell.TokenKeys() << "\n"
       << "peer-keys = " << cell.PeerKeys() << "\n\n"
       << "[frontd]\nlisten = " << listen << "\n"
       << "secret-key = " << cell.dir << "/keys/frontd.key\n\n"
       << "[routed]\nsecret-key = " << cell.dir << "/keys/routed.key\n"
       << "id-lease = " << cell.dir << "/data/routed.lease\n\n"
       << "[stored]\ndata-dir = " << cell.dir << "/data\n"
       << "secret-key = " << cell.dir << "/keys/stored.key\n\n"
       << "[notifyd]\nsecret-key = " << cell.dir << "/keys/notifyd.key\n";
  s = WriteNewFile(cell.Conf(), conf.str(), 0644);
  if (!s.ok()) return s;
  std::ostringstream client;
  client << "# natter(1) options for the local cell in " << cell.dir << ".\n"
         << "server =";
  for (unsigned k = 0; k < frontds; ++k)
    client << " " << ClientEndpoint(FrontdListen(listen, k));
  client << "\n"
         << "server-key = " << CurveKeyZ85(pub["frontd"]) << "\n";
  return WriteNewFile(cell.ClientConf(), client.str(), 0644);
}

unsigned ShardCount(const CellPaths& cell) {
  std::ifstream in(cell.Conf());
  std::string line;
  bool in_cell = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '[') in_cell = line.rfind("[cell]", 0) == 0;
    if (in_cell && line.rfind("shards", 0) == 0) {
      size_t eq = line.find('=');
      if (eq == std::string::npos) return 0;
      return static_cast<unsigned>(SplitWords(line.substr(eq + 1)).size());
    }
  }
  return 0;
}

std::vector<std::vector<std::string>> StoredNames(const CellPaths& cell) {
  std::vector<std::vector<std::string>> names;
  std::ifstream in(cell.Conf());
  std::string line;
  bool in_cell = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '[') in_cell = line.rfind("[cell]", 0) == 0;
    if (!in_cell || line.rfind("shards", 0) != 0) continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) break;
    std::vector<std::string> shards = SplitWords(line.substr(eq + 1));
    for (size_t i = 0; i < shards.size(); ++i) {
      std::vector<std::string> endpoints = ReplicaEndpoints(shards[i]);
      const size_t replicas = endpoints.size();
      std::vector<std::string> shard;
      for (size_t k = 0; k < replicas; ++k) {
        if (endpoints[k].empty()) continue;  // removed
        std::string name = "stored-" + std::to_string(i);
        if (replicas > 1) name += "." + std::to_string(k);
        shard.push_back(name);
      }
      names.push_back(shard);
    }
    break;
  }
  return names;
}

}  // namespace ctl
}  // namespace natter
