#include "common/log.h"

#include <sys/time.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>

#include "common/text.h"

namespace natter {
namespace {

std::string g_program = "natter";
bool g_syslog = false;
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_mutex;
std::string g_file_path;
FILE* g_file = nullptr;  // null: standard error

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

}  // namespace

bool ParseLogLevel(const std::string& name, LogLevel* out) {
  for (LogLevel l :
       {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (name == LevelName(l)) {
      *out = l;
      return true;
    }
  }
  return false;
}

void LogInit(const std::string& program, bool use_syslog, LogLevel level) {
  g_program = program;
  g_syslog = use_syslog;
  g_level = static_cast<int>(level);
  if (use_syslog) openlog(g_program.c_str(), LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

bool LogToFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "ae");
  if (f == nullptr) return false;
  std::setvbuf(f, nullptr, _IOLBF, 0);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_file != nullptr) std::fclose(g_file);
  g_file = f;
  g_file_path = path;
  return true;
}

void LogReopen() {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    path = g_file_path;
  }
  if (path.empty()) return;
  if (!LogToFile(path)) {
    const std::string error =
        std::strerror(errno);  // before LogValue allocates
    Logf(LogLevel::kError, "event=log-reopen-failed path=%s error=%s",
         LogValue(path).c_str(), LogValue(error).c_str());
  }
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level; }

std::string LogValue(std::string_view value) {
  if (IsPlainWord(value)) return std::string(value);
  return "\"" + Printable(value, "\"\\") + "\"";
}

void Logf(LogLevel level, const char* fmt, ...) {
  if (!LogEnabled(level)) return;
  char formatted[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(formatted, sizeof formatted, fmt, ap);
  va_end(ap);
  const std::string safe = Printable(formatted);
  const char* line = safe.c_str();
  if (g_syslog) {
    static const int kPriority[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
    syslog(kPriority[static_cast<int>(level)], "level=%s %s", LevelName(level),
           line);
    return;
  }
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(g_mutex);
  fprintf(g_file != nullptr ? g_file : stderr,
          "%s.%06ldZ %s[%d]: level=%s %s\n", stamp,
          static_cast<long>(tv.tv_usec), g_program.c_str(),
          static_cast<int>(getpid()), LevelName(level), line);
}

}  // namespace natter
