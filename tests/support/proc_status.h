// What /proc/PID/status says of a process's memory, for the tests and
// natter-bench, which watch the daemons of a local cell.
#ifndef NATTER_TESTS_SUPPORT_PROC_STATUS_H_
#define NATTER_TESTS_SUPPORT_PROC_STATUS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace natter {

// A field of /proc/PID/status given in kB (VmRSS: resident now, VmHWM: the
// most resident so far), in bytes; nullopt if the process or the field is
// not there.
std::optional<uint64_t> ProcStatusBytes(pid_t pid, const std::string& field);

}  // namespace natter

#endif  // NATTER_TESTS_SUPPORT_PROC_STATUS_H_
