// Logging: one line per event, key=value pairs, to stderr in the foreground
// or to syslog(3) with --syslog (OpenSMTPD's log.c).  Thread-safe.
#ifndef NATTER_COMMON_LOG_H_
#define NATTER_COMMON_LOG_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace natter {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// false if the name is not debug, info, warn or error.
bool ParseLogLevel(const std::string& name, LogLevel* out);

void LogInit(const std::string& program, bool use_syslog, LogLevel level);
// Logs to a file (appended) instead of standard error; false with errno
// set if it cannot be opened.
bool LogToFile(const std::string& path);
// Opens the log file again (after logrotate moved it); SIGHUP does this.
void LogReopen();
bool LogEnabled(LogLevel level);
// Formats one line.  Whatever the values, nothing raw reaches the log: a
// control character left in the line is written as Printable writes it.
void Logf(LogLevel level, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));

// A string value of a log line, so that key=value stays unambiguous: as it
// is when IsPlainWord (paths, endpoints, keys, names), else in double
// quotes with `"` and `\` escaped by a backslash and control characters
// as Printable writes them.  Every %s of a log line takes one:
//   NLOG_INFO("event=open path=%s", LogValue(path).c_str());
std::string LogValue(std::string_view value);

#define NLOG_DEBUG(...)                                        \
  do {                                                         \
    if (::natter::LogEnabled(::natter::LogLevel::kDebug))      \
      ::natter::Logf(::natter::LogLevel::kDebug, __VA_ARGS__); \
  } while (0)
#define NLOG_INFO(...) ::natter::Logf(::natter::LogLevel::kInfo, __VA_ARGS__)
#define NLOG_WARN(...) ::natter::Logf(::natter::LogLevel::kWarn, __VA_ARGS__)
#define NLOG_ERROR(...) ::natter::Logf(::natter::LogLevel::kError, __VA_ARGS__)

// Trace ids (Header::trace): frontd gives one to each request; the top bit
// says the client asked for its path in the logs.
constexpr uint64_t kTraceLoud = 1ULL << 63;
inline bool TraceLogged(uint64_t trace) {
  return trace != 0 &&
         ((trace & kTraceLoud) != 0 || LogEnabled(LogLevel::kDebug));
}
// One hop of a traced request: "trace=<16 hex digits> " and the rest; at
// level info when the client asked for it, else at debug.
#define NLOG_TRACE(trace, fmt, ...)                                          \
  do {                                                                       \
    uint64_t natter_trace_ = (trace);                                        \
    if (::natter::TraceLogged(natter_trace_)) {                              \
      ::natter::Logf((natter_trace_ & ::natter::kTraceLoud)                  \
                         ? ::natter::LogLevel::kInfo                         \
                         : ::natter::LogLevel::kDebug,                       \
                     "trace=%016llx " fmt,                                   \
                     static_cast<unsigned long long>(natter_trace_ &         \
                                                     ~::natter::kTraceLoud), \
                     __VA_ARGS__);                                           \
    }                                                                        \
  } while (0)

}  // namespace natter

#endif  // NATTER_COMMON_LOG_H_
