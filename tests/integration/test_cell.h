// A real local cell for a test: `natterctl init` and `natterctl up` in a
// temporary folder, the daemons on ipc:// endpoints inside it, stopped (by
// the pid we started) and removed when the test ends.
#ifndef NATTER_TESTS_INTEGRATION_TEST_CELL_H_
#define NATTER_TESTS_INTEGRATION_TEST_CELL_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "client/client.h"
#include "tests/unit/temp_dir.h"

namespace natter {

// Where the programs are: $NATTER_BIN, else ./bin.
std::string BinPath(const std::string& program);

// Runs a command line through sh; returns the exit status and stdout.
int RunCommand(const std::string& command, std::string* out = nullptr);

class TestCell {
 public:
  // extra_conf is appended to the cell's natter.conf before it starts.
  explicit TestCell(unsigned shards, const std::string& extra_conf = "");
  ~TestCell();

  const std::string& dir() const { return dir_.path(); }
  std::string Token(uint64_t user, long ttl_s = 3600,
                    const std::string& device = "") const;
  ClientOptions Options(uint64_t user, const std::string& device) const;
  // natter's flags for this cell, before the subcommand.
  std::string NatterArgs(uint64_t user) const;
  // The pid natterctl wrote for a daemon ("stored-1").
  pid_t DaemonPid(const std::string& name) const;

 private:
  TempDir dir_;
  pid_t up_pid_ = -1;
};

// Two users whose home shards differ (when there is more than one).
std::pair<UserId, UserId> TwoUsers(unsigned shards);

}  // namespace natter

#endif  // NATTER_TESTS_INTEGRATION_TEST_CELL_H_
