// natterctl up: starts the cell's daemons, says "ready" once every one of
// them serves, restarts one that dies (with backoff), and stops them all on
// SIGINT or SIGTERM (which natterctl down sends).
#ifndef NATTER_TOOLS_NATTERCTL_SUPERVISOR_H_
#define NATTER_TOOLS_NATTERCTL_SUPERVISOR_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "tools/natterctl/cell.h"

namespace natter {
namespace ctl {

struct Child {
  std::string name;               // "stored-1"
  std::vector<std::string> argv;  // program and arguments
  pid_t pid = -1;
  int ready_fd = -1;  // read end of the readiness pipe
  bool ready = false;
  std::chrono::steady_clock::time_point started;
  std::chrono::steady_clock::time_point restart_at;
  std::chrono::milliseconds backoff{100};
};

// Runs the cell until told to stop; returns the exit code.
int Supervise(const CellPaths& cell, const std::string& listen_override);

}  // namespace ctl
}  // namespace natter

#endif  // NATTER_TOOLS_NATTERCTL_SUPERVISOR_H_
