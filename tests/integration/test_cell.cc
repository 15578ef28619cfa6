#include "tests/integration/test_cell.h"

#include <stdexcept>

#include "common/shard.h"

namespace natter {

std::string BinPath(const std::string& program) {
  return TestBinDir() + "/" + program;
}

TestCell::TestCell(unsigned shards, const std::string& extra_conf,
                   const std::string& listen)
    : cell_(std::make_unique<LocalCell>(BinPath("."), dir_.path(), shards,
                                        extra_conf, nullptr, listen)) {}

TestCell::TestCell(unsigned shards, Replicas replicas,
                   const std::string& extra_conf)
    : cell_(std::make_unique<LocalCell>(BinPath("."), dir_.path(), shards,
                                        extra_conf, nullptr, "",
                                        replicas.count)) {}

TestCell::TestCell(unsigned shards, Frontds frontds,
                   const std::string& extra_conf)
    : cell_(std::make_unique<LocalCell>(BinPath("."), dir_.path(), shards,
                                        extra_conf, nullptr, "", 1,
                                        frontds.count)) {}

TestCell::TestCell(unsigned shards, const std::string& extra_conf,
                   const std::function<void(const std::string&)>& before_up,
                   std::function<void()> after_stop, Replicas replicas)
    : after_stop_(std::move(after_stop)) {
  try {
    cell_ =
        std::make_unique<LocalCell>(BinPath("."), dir_.path(), shards,
                                    extra_conf, before_up, "", replicas.count);
  } catch (...) {
    if (after_stop_) after_stop_();
    throw;
  }
}

TestCell::~TestCell() {
  cell_.reset();
  if (after_stop_) after_stop_();
}

std::string TestCell::NatterArgs(uint64_t user) const {
  return BinPath("natter") + " -c " + dir() + "/client.conf -s ipc://" + dir() +
         "/run/frontd.sock --state-dir " + dir() + "/cli-state -t " +
         Token(user);
}

nlohmann::json CellStatus(const TestCell& cell) {
  std::string out;
  if (RunCommand(BinPath("natterctl") + " status --json --dir " + cell.dir() +
                     " 2>/dev/null",
                 &out) != 0) {
    throw std::runtime_error("natterctl status failed in " + cell.dir());
  }
  return nlohmann::json::parse(out);
}

std::pair<UserId, UserId> TwoUsers(unsigned shards) {
  UserId a(101);
  for (uint64_t u = 202;; ++u) {
    if (shards < 2 || HomeShard(UserId(u), shards) != HomeShard(a, shards)) {
      return {a, UserId(u)};
    }
  }
}

}  // namespace natter
