// The skeleton every natter daemon runs in (Postfix's single_server): parse
// the flags and natter.conf, set up logging and signals, start the service,
// tell the supervisor it is ready, loop until told to stop, and turn errors
// into sysexits codes (78 for a bad configuration).
#ifndef NATTER_COMMON_DAEMON_H_
#define NATTER_COMMON_DAEMON_H_

#include <functional>
#include <memory>
#include <string>
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
  // SIGHUP: reads its keys again, without dropping connections; config is
  // natter.conf as read again (null if it could not be read).
  virtual void Reload(const Config* config) { (void)config; }
  // The daemon's CURVE identity, which its control socket uses too; null
  // before Start.
  virtual const CurveIdentity* Identity() { return nullptr; }
  // Adds the daemon's own metrics (natterctl status, Prometheus).
  virtual void Stats(MetricSet*) {}
  // A control request other than stats (natterctl backup); false if the
  // daemon does not take it.  reply may be called later, from RunOnce.
  virtual bool Control(const Frame&, const ControlServer::Reply&) {
    return false;
  }
};

// What a daemon tells the skeleton about itself; the skeleton knows no
// daemon but through this.  Each daemon's Spec() makes its own, and its
// main hands it to DaemonMain.
struct DaemonSpec {
  using MakeFn = std::function<Status(const Config&, zmq::context_t&,
                                      std::unique_ptr<Service>*)>;
  DaemonSpec(const char* program, const char* section, MakeFn make)
      : program(program), section(section), make(std::move(make)) {}

  const char* program;  // "natter-stored": its usage and its log lines
  const char* section;  // "stored": its keys in natter.conf
  // Makes the service from the configuration, checking everything Start
  // will need (so -n, which stops here, checks what a start would).  An
  // error is a bad configuration (EX_CONFIG, the message on stderr).
  MakeFn make;
  // Its name on the control socket (natterctl status) and in the log's
  // ready line: "frontd", "stored-2".  Null: the section.
  std::function<std::string(const Config&)> name;
};

// DaemonSpec::make for a service class T that has
//   static Status Create(const Config&, zmq::context_t&, std::unique_ptr<T>*);
template <class T>
Status MakeService(const Config& config, zmq::context_t& ctx,
                   std::unique_ptr<Service>* out) {
  std::unique_ptr<T> service;
  Status s = T::Create(config, ctx, &service);
  if (s.ok()) *out = std::move(service);
  return s;
}

// What the skeleton itself takes from a daemon's configuration.
struct DaemonSettings {
  std::string name;            // the spec's name for the daemon
  int io_threads = 1;          // the ZeroMQ context's: one and the daemon's own
  std::string control;         // [section] control; empty: none
  std::string metrics_listen;  // [section] metrics-listen; empty: none
};
// An error is a bad configuration (EX_CONFIG).
Status ReadDaemonSettings(const DaemonSpec& spec, const Config& config,
                          DaemonSettings* out);

// Parses the flags and the config, makes the service with spec.make, runs
// it; returns the exit code: EX_USAGE for a bad flag, EX_CONFIG for a bad
// configuration, EX_UNAVAILABLE when the service cannot start, and
// EX_SOFTWARE, with one line on stderr, for a mistake in the code (such as
// reading an option options.cc does not declare: Config::Get).
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
