// A real local cell for a test, in a temporary folder removed at the end.
#ifndef NATTER_TESTS_INTEGRATION_TEST_CELL_H_
#define NATTER_TESTS_INTEGRATION_TEST_CELL_H_

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "tests/support/io.h"
#include "tests/support/local_cell.h"
#include "tests/support/temp_dir.h"

namespace natter {

// A program of the cell, in TestBinDir().
std::string BinPath(const std::string& program);

// Each shard's replicas, for a TestCell of replicated shards.
struct Replicas {
  unsigned count = 1;
};
// How many frontds a test's cell runs (natterctl init --frontds).
struct Frontds {
  unsigned count = 1;
};

class TestCell {
 public:
  // Shards of `replicas` replicas each.
  TestCell(unsigned shards, Replicas replicas,
           const std::string& extra_conf = "");
  // Several frontds; Options names them all.
  TestCell(unsigned shards, Frontds frontds,
           const std::string& extra_conf = "");
  // extra_conf is appended to the cell's natter.conf before it starts;
  // listen is frontd's endpoint (default: ipc:// in the folder).
  explicit TestCell(unsigned shards, const std::string& extra_conf = "",
                    const std::string& listen = "");
  // before_up runs between natterctl init and up; after_stop once the
  // cell has stopped, before the folder is removed.
  TestCell(unsigned shards, const std::string& extra_conf,
           const std::function<void(const std::string& dir)>& before_up,
           std::function<void()> after_stop, Replicas replicas = {});
  ~TestCell();

  const std::string& dir() const { return dir_.path(); }
  std::string Token(uint64_t user, long ttl_s = 3600,
                    const std::string& device = "") const {
    return cell_->Token(user, ttl_s, device);
  }
  ClientOptions Options(uint64_t user, const std::string& device) const {
    return cell_->Options(user, device);
  }
  pid_t DaemonPid(const std::string& name) const {
    return cell_->DaemonPid(name);
  }
  // natter's flags for this cell, before the subcommand.
  std::string NatterArgs(uint64_t user) const;

 private:
  TempDir dir_;  // outlives the cell
  std::unique_ptr<LocalCell> cell_;
  std::function<void()> after_stop_;
};

// natterctl status --json for the cell: each daemon's state and metrics.
nlohmann::json CellStatus(const TestCell& cell);

// Extra configuration for a test that sends thousands of messages from one
// user at full speed: no rate for the user's writes (natter-stored(8)).
constexpr const char* kNoUserRate = "[stored]\nuser-rate = 0";

// Two users whose home shards differ (when there is more than one).
std::pair<UserId, UserId> TwoUsers(unsigned shards);

}  // namespace natter

#endif  // NATTER_TESTS_INTEGRATION_TEST_CELL_H_
