#include "common/daemon.h"

#include <signal.h>
#include <sodium.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "common/log.h"
#include "common/text.h"

namespace natter {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};

void OnStopSignal(int) { g_stop = true; }
void OnReloadSignal(int) { g_reload = true; }

}  // namespace

std::string ProgramDir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

uint64_t OpenFilesLimit() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
    return 1024 * 1024;
  }
  return rl.rlim_cur;
}

void CatchStopSignals(void (*handler)(int)) {
  struct sigaction sa = {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

void NotifySystemd(const std::string& state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return;
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  ssize_t n =
      ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
               reinterpret_cast<const sockaddr*>(&addr),
               static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
  (void)n;
  ::close(fd);
}

void NotifyReady() {
  NotifySystemd("READY=1\nSTATUS=serving\nMAINPID=" +
                std::to_string(::getpid()));
  const char* fd_text = std::getenv("NATTER_READY_FD");
  if (fd_text == nullptr) return;
  auto fd = ParseUint(fd_text);
  if (!fd) return;
  ssize_t n = ::write(static_cast<int>(*fd), "ready\n", 6);
  (void)n;
  ::close(static_cast<int>(*fd));
  ::unsetenv("NATTER_READY_FD");
}

Status ReadDaemonSettings(const DaemonSpec& spec, const Config& config,
                          DaemonSettings* out) {
  DaemonSettings settings;
  settings.name = spec.name ? spec.name(config) : spec.section;
  settings.io_threads = 1;
  settings.control = config.Get("control");
  settings.metrics_listen = config.Get("metrics-listen");
  *out = std::move(settings);
  return Status::Ok();
}

namespace {

int RunDaemon(int argc, char** argv, const DaemonSpec& spec) {
  if (sodium_init() < 0) {
    std::fprintf(stderr, "%s: libsodium failed to start\n", spec.program);
    return EX_SOFTWARE;
  }
  Config config;
  DaemonFlags flags;
  bool usage_error = false;
  Status s =
      Config::Load(spec.section, argc, argv, &config, &flags, &usage_error);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", spec.program, s.message().c_str());
    return usage_error ? EX_USAGE : EX_CONFIG;
  }
  if (flags.help) {
    std::cout << Config::Usage(spec.program, spec.section);
    return EX_OK;
  }
  LogLevel level;
  if (!ParseLogLevel(flags.log_level, &level)) {
    std::fprintf(stderr,
                 "%s: --log-level: '%s' is not debug, info, warn or error\n",
                 spec.program, flags.log_level.c_str());
    return EX_USAGE;
  }
  LogInit(spec.program, flags.use_syslog, level);
  if (!flags.log_file.empty() && !LogToFile(flags.log_file)) {
    std::fprintf(stderr, "%s: --log-file %s: %s\n", spec.program,
                 flags.log_file.c_str(), std::strerror(errno));
    return EX_CANTCREAT;
  }

  DaemonSettings settings;
  s = ReadDaemonSettings(spec, config, &settings);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", spec.program, s.message().c_str());
    return EX_CONFIG;
  }
  // One ZeroMQ I/O thread for the cell's own connections and the control
  // socket (every socket's affinity, see MakeSocket), and the daemon's own
  // more (frontd's, for the clients' connections alone: clients that keep
  // its CURVE busy never delay the answers and events it passes on).
  zmq::context_t ctx(settings.io_threads);
  // Before the service, so that it outlives replies the service still owes.
  ControlServer control(ctx, settings.name);
  std::unique_ptr<Service> service;
  s = spec.make(config, ctx, &service);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", spec.program, s.message().c_str());
    return EX_CONFIG;
  }
  if (flags.check_only) {
    std::fprintf(stderr, "%s: configuration %s is valid\n", spec.program,
                 flags.config_path.c_str());
    return EX_OK;
  }
  CatchStopSignals(OnStopSignal);
  struct sigaction hup = {};
  hup.sa_handler = OnReloadSignal;
  sigemptyset(&hup.sa_mask);
  sigaction(SIGHUP, &hup, nullptr);
  try {
    s = service->Start();
    if (!s.ok()) {
      NLOG_ERROR("event=start-failed error=%s", LogValue(s.ToString()).c_str());
      return s.code() == ErrorCode::kBadRequest ? EX_CONFIG : EX_UNAVAILABLE;
    }
    // Serve while waiting for the peers: requests that arrive are answered.
    auto wait_until =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!g_stop && !service->Ready() &&
           std::chrono::steady_clock::now() < wait_until) {
      service->RunOnce(20);
    }
    if (service->Ready()) {
      NLOG_INFO("event=ready daemon=%s", LogValue(settings.name).c_str());
    } else {
      NLOG_WARN("event=ready daemon=%s waiting=%s",
                LogValue(settings.name).c_str(),
                LogValue(service->Waiting()).c_str());
    }
    const CurveIdentity* identity = service->Identity();
    s = control.Start(settings.control, settings.metrics_listen,
                      identity != nullptr ? *identity : CurveIdentity());
    if (!s.ok()) {
      NLOG_ERROR("event=start-failed error=%s", LogValue(s.ToString()).c_str());
      return EX_CONFIG;
    }
    NotifyReady();
    auto stats = [&](MetricSet* set) { service->Stats(set); };
    auto command = [&](const Frame& f, const ControlServer::Reply& reply) {
      return service->Control(f, reply);
    };
    while (!g_stop) {
      // Short turns, so the control socket answers within 50 ms.
      service->RunOnce(50);
      control.Serve(stats, command);
      if (g_reload.exchange(false)) {
        NotifySystemd("RELOADING=1");
        LogReopen();
        NLOG_INFO("event=reload");
        Config again;
        DaemonFlags ignored;
        bool usage = false;
        Status read =
            Config::Load(spec.section, argc, argv, &again, &ignored, &usage);
        if (!read.ok()) {
          NLOG_ERROR("event=reload-config-failed error=%s",
                     LogValue(read.message()).c_str());
        }
        service->Reload(read.ok() ? &again : nullptr);
        NotifySystemd("READY=1");
      }
    }
    NotifySystemd("STOPPING=1");
    NLOG_INFO("event=stopping");
    service->Stop();
  } catch (const std::exception& e) {
    NLOG_ERROR("event=fatal error=%s", LogValue(e.what()).c_str());
    return EX_SOFTWARE;
  }
  service.reset();
  NLOG_INFO("event=stopped");
  return EX_OK;
}

}  // namespace

int DaemonMain(int argc, char** argv, const DaemonSpec& spec) {
  // The border for what escapes the daemon's code before it serves: a
  // mistake in the code (Config::Get of an option options.cc does not
  // declare throws std::logic_error), never a bad configuration.
  try {
    return RunDaemon(argc, argv, spec);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", spec.program, e.what());
    return EX_SOFTWARE;
  }
}

}  // namespace natter
