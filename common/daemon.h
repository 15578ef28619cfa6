// The skeleton every natter daemon runs in (Postfix's single_server): parse
// the flags and natter.conf, set up logging and signals, start the service,
// tell the supervisor it is ready, loop until told to stop, and turn errors
// into sysexits codes (78 for a bad configuration).
#ifndef NATTER_COMMON_DAEMON_H_
#define NATTER_COMMON_DAEMON_H_

#include <functional>
#include <memory>

#include <zmq.hpp>

#include "common/config.h"
#include "common/control.h"
#include "common/status.h"

namespace natter {

// A daemon's logic.  Driven from one thread.
class Service {
 public:
  virtual ~Service() = default;
  // Binds, connects, opens storage.  A failure ends the daemon (EX_CONFIG
  // for kBadRequest, EX_UNAVAILABLE otherwise).
  virtual Status Start() = 0;
  // True once the daemon can serve: its connections to the daemons it
  // needs have completed their handshakes.  Until then it runs, and the
  // skeleton waits (at most kReadyWait) before it tells the supervisor.
  virtual bool Ready() { return true; }
  // What Ready waits for, for the log.
  virtual std::string Waiting() { return ""; }
  // Waits up to timeout_ms for work and does it.
  virtual void RunOnce(int timeout_ms) = 0;
  // Finishes the work in hand before the daemon exits.
  virtual void Stop() {}
  // SIGHUP: reads its keys again, without dropping connections.
  virtual void Reload() {}
  // The daemon's CURVE identity, which its control socket uses too; null
  // before Start.
  virtual const CurveIdentity* Identity() { return nullptr; }
  // Adds the daemon's own metrics (natterctl status, Prometheus).
  virtual void Stats(MetricSet*) {}
  // A control request other than stats (natterctl backup); false if the
  // daemon does not take it.  reply may be called later, from RunOnce.
  virtual bool Control(const Frame&, const ControlServer::Reply&) { return false; }
};

struct DaemonSpec {
  const char* program;  // "natter-stored"
  const char* section;  // "stored"
  std::function<std::unique_ptr<Service>(const Config&, zmq::context_t&)>
      make;
};

int DaemonMain(int argc, char** argv, const DaemonSpec& spec);

// The folder of the running program (where natterctl finds the daemons,
// installed or in bin/).
std::string ProgramDir();

// The process's open-files limit (the soft RLIMIT_NOFILE).
uint64_t OpenFilesLimit();

// Calls handler on SIGINT and SIGTERM (interrupting blocking calls, so
// polls return), and ignores SIGPIPE.
void CatchStopSignals(void (*handler)(int));

// Tells the supervisor (natterctl up) that the daemon serves: writes "ready"
// to the descriptor named by $NATTER_READY_FD, if set; and tells systemd
// (Type=notify) with READY=1.
void NotifyReady();

// Sends a state ("READY=1", "STOPPING=1", ...) to systemd's notification
// socket ($NOTIFY_SOCKET, sd_notify(3)'s protocol); nothing without one.
void NotifySystemd(const std::string& state);

}  // namespace natter

#endif  // NATTER_COMMON_DAEMON_H_
