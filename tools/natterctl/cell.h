// A local cell's folder, as natterctl lays it out:
//
//   DIR/natter.conf         the daemons' configuration
//   DIR/client.conf         what natter(1) needs: server, server-key
//   DIR/keys/token/*.sec    Ed25519 token signing keys (0600), *.pub
//   DIR/keys/NAME.key       each daemon's CURVE secret key (0600), NAME.pub
//   DIR/keys/peers/*.pub    the cell's allow-list, each named for its role
//   DIR/data/shard-N/       each shard's LevelDB
//   DIR/run/                ipc:// sockets, pid files, natterctl's lock
//   DIR/log/NAME.log        each daemon's log
#ifndef NATTER_TOOLS_NATTERCTL_CELL_H_
#define NATTER_TOOLS_NATTERCTL_CELL_H_

#include <string>
#include <vector>

#include "common/curve.h"
#include "common/status.h"

namespace natter {
namespace ctl {

struct CellPaths {
  std::string dir;
  std::string Conf() const { return dir + "/natter.conf"; }
  std::string ClientConf() const { return dir + "/client.conf"; }
  std::string TokenKeys() const { return dir + "/keys/token"; }
  std::string PeerKeys() const { return dir + "/keys/peers"; }
  std::string Run() const { return dir + "/run"; }
  std::string Log(const std::string& name) const {
    return dir + "/log/" + name + ".log";
  }
  std::string Pid(const std::string& name) const {
    return dir + "/run/" + name + ".pid";
  }
  // The control socket of daemon name ("frontd", "stored-0", ...), without
  // its key.
  std::string Control(const std::string& name) const {
    return "ipc://" + dir + "/run/" + name + ".control";
  }
};

// Makes the folder, the keys and both config files.  Refuses to touch a
// folder that holds keys already.
// Each shard has `replicas` replicas (1, 3 or 5); `frontds` frontds listen
// on listen and the endpoints after it (FrontdListen), and client.conf
// names them all.
Status InitCell(const std::string& dir, const std::string& listen,
                unsigned shards, unsigned replicas, unsigned frontds,
                CellPaths* out);

// Frontd k's endpoint when the first listens on listen: the port k above
// (tcp), or the socket file's name with -k (ipc).
std::string FrontdListen(const std::string& listen, unsigned k);

// The cell's frontds, as natterctl up runs them: "frontd" alone, or
// frontd-0 .. frontd-K, one for each endpoint of client.conf's server.
std::vector<std::string> FrontdNames(const CellPaths& cell);
// [frontd] listen in the cell's natter.conf (empty if it has none).
std::string FrontdListenOf(const CellPaths& cell);

// Makes keys/NAME.key and .pub and lists the public key in keys/peers.
Status MakeDaemonKey(const CellPaths& cell, const std::string& name,
                     CurveKey* public_key);

// The number of shards in the cell's natter.conf (0 if unreadable).
unsigned ShardCount(const CellPaths& cell);

// The names of each shard's natter-stored daemons: stored-N for a shard of
// one replica, stored-N.K for replica K of one of several.
std::vector<std::vector<std::string>> StoredNames(const CellPaths& cell);

// An absolute, normalised form of a path (the folder may not exist yet).
std::string AbsolutePath(const std::string& path);

}  // namespace ctl
}  // namespace natter

#endif  // NATTER_TOOLS_NATTERCTL_CELL_H_
