#include "tests/support/proc_status.h"

#include <fstream>

#include "common/text.h"

namespace natter {

std::optional<uint64_t> ProcStatusBytes(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  const std::string key = field + ":";
  for (std::string line; std::getline(status, line);) {
    if (line.compare(0, key.size(), key) != 0) continue;
    // "VmHWM:\t   10240 kB"
    size_t from = line.find_first_not_of(" \t", key.size());
    size_t to = line.rfind(" kB");
    if (from == std::string::npos || to == std::string::npos || to < from)
      return std::nullopt;
    std::optional<uint64_t> kib =
        ParseUint(std::string_view(line).substr(from, to - from));
    if (!kib) return std::nullopt;
    return *kib * 1024;
  }
  return std::nullopt;
}

}  // namespace natter
