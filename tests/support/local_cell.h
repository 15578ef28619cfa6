// A local cell for the tests, natter-chaos and natter-bench: `natterctl
// init` and `natterctl up` in a folder, the daemons on ipc:// endpoints
// inside it, stopped (by the pid started here) when the LocalCell goes.
// Not part of a client: the test programs and natter-bench link it from
// tests/support/.
#ifndef NATTER_TESTS_SUPPORT_LOCAL_CELL_H_
#define NATTER_TESTS_SUPPORT_LOCAL_CELL_H_

#include <sys/types.h>

#include <functional>
#include <string>

#include "client/client.h"

namespace natter {

class LocalCell {
 public:
  // bin: the folder of natterctl and the daemons.  Throws if the cell does
  // not become ready within 30 s.
  // before_up, if given, runs after `natterctl init` and before `up`
  // (to put the data folder on a filesystem of a test's own, say).
  // listen: frontd's endpoint (default: ipc:// in the folder); replicas:
  // each shard's (natterctl init --replicas); frontds: how many (natterctl
  // init --frontds; Options then names them all, as client.conf does).
  LocalCell(const std::string& bin, const std::string& dir, unsigned shards,
            const std::string& extra_conf = "",
            const std::function<void(const std::string& dir)>& before_up = {},
            const std::string& listen = "", unsigned replicas = 1,
            unsigned frontds = 1);
  ~LocalCell();
  LocalCell(const LocalCell&) = delete;
  LocalCell& operator=(const LocalCell&) = delete;

  const std::string& dir() const { return dir_; }
  // A token signed with the cell's key; a negative ttl makes one that
  // expired that long ago.
  std::string Token(uint64_t user, long ttl_s = 3600,
                    const std::string& device = "") const;
  ClientOptions Options(uint64_t user, const std::string& device) const;
  // The pid natterctl wrote for a daemon ("stored-1").
  pid_t DaemonPid(const std::string& name) const;

 private:
  std::string dir_;
  std::string listen_;
  unsigned frontds_ = 1;
  pid_t up_pid_ = -1;
};

// Where a test program finds natterctl and the daemons: $NATTER_BIN, else
// bin/ beside the folder the program is in (build/natter-chaos: bin/).
std::string TestBinDir();

// A free TCP port on 127.0.0.1 (bound and let go: a race no other program
// here is likely to run); 0 if none could be had.
int FreeLoopbackPort();
// The first of n free TCP ports in a row on 127.0.0.1 (for frontds on
// consecutive endpoints); 0 if none could be had.
int FreeLoopbackPorts(unsigned n);

}  // namespace natter

#endif  // NATTER_TESTS_SUPPORT_LOCAL_CELL_H_
