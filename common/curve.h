// CurveZMQ for natter's sockets: key files, endpoints that name their
// server's key, and the ZAP handler that decides who may connect.
//
// Key files hold one line: a 40-character Z85 key (NAME.key, the secret,
// mode 0600; NAME.pub, the public) or 64 hex digits.  A connecting socket
// learns its server's public key from the endpoint: "tcp://host:7421@HEX"
// (64 hex digits after the last '@').
//
// Every binding socket of a daemon with a key is a CURVE server.  Its ZAP
// domain says who may connect: "cell" — only the public keys in the cell's
// peer-keys folder (like ssh's authorized_keys); "clients" — any key
// (identity comes from the access token).
#ifndef NATTER_COMMON_CURVE_H_
#define NATTER_COMMON_CURVE_H_

#include <array>
#include <functional>
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/config.h"
#include "common/status.h"

namespace natter {

using CurveKey = std::array<uint8_t, 32>;

constexpr char kZapDomainCell[] = "cell";
constexpr char kZapDomainClients[] = "clients";

// Parses 40 characters of Z85 or 64 hex digits.
bool ParseCurveKey(const std::string& text, CurveKey* out);
std::string CurveKeyHex(const CurveKey& key);
// Reads a key file (the first line).
Status ReadCurveKey(const std::string& path, CurveKey* out);
// Makes NAME.key (0600) and NAME.pub in dir; refuses to overwrite.
Status WriteCurveKeyPair(const std::string& dir, const std::string& name,
                         CurveKey* public_key);

// "tcp://h:1@HEX" -> endpoint and key; an endpoint without '@' has no key.
struct Endpoint {
  std::string address;
  bool has_key = false;
  CurveKey server_key{};
};
Status ParseEndpoint(const std::string& text, Endpoint* out);

// A daemon's own keypair (from its secret key file), or none.
struct CurveIdentity {
  bool enabled = false;
  // [cell] curve-ipc = no: the cell's own ipc:// hops go without CURVE.
  bool plain_ipc = false;
  CurveKey secret{};
  CurveKey public_key{};
};
Status LoadCurveIdentity(const std::string& secret_key_file, CurveIdentity* out);

// Makes socket a CURVE server of the domain, if the daemon has a key —
// unless it binds an ipc:// endpoint of the cell and curve-ipc is off.
void SetCurveServer(zmq::socket_t& socket, const CurveIdentity& me,
                    const char* domain, const std::string& endpoint);
// Connects socket to endpoint: as a CURVE client when the endpoint names
// its server's key (the daemon then needs a key of its own), unless it is
// an ipc:// endpoint and curve-ipc is off.
Status ConnectTo(zmq::socket_ref socket, const CurveIdentity& me,
                 const std::string& endpoint_text);

// The ZAP handler of one context: answers on inproc://zeromq.zap.01 from a
// thread of its own.  Thread-safe; Reload may be called from any thread.
class ZapHandler {
 public:
  explicit ZapHandler(zmq::context_t& ctx);
  ~ZapHandler();
  // Loads the allowed keys (*.pub) from dir and starts answering.
  Status Start(const std::string& dir);
  // Reads the folder again (SIGHUP): added keys are let in, removed ones
  // are refused from their next connection on.
  Status Reload();
  size_t key_count() const;
  // For the "clients" domain: called (from the handler's thread) before a
  // client is let in; a non-empty answer refuses it with ZAP status 400
  // (a CURVE ERROR the client sees in its handshake; the temporary 300
  // would close the connection silently, and the client could not tell
  // why).  Any key is welcome in this domain, so a client refused there
  // knows it is for this.  Set before Start.
  using Admission = std::function<std::string()>;
  void SetAdmission(Admission admit) { admit_ = std::move(admit); }

 private:
  void Run();
  Status Load(const std::string& dir);

  zmq::context_t& ctx_;
  zmq::socket_t socket_;
  std::string dir_;
  mutable std::mutex mutex_;
  std::set<CurveKey> allowed_;
  Admission admit_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A daemon's keys: its identity (secret-key) and, when it has one, the ZAP
// handler for the cell's allow-list (peer-keys).  A daemon with a key and
// no allow-list would take any key, so that is a configuration error.
class DaemonKeys {
 public:
  // Throws std::invalid_argument for a bad configuration.
  explicit DaemonKeys(const Config& config);
  Status Start(zmq::context_t& ctx);
  void Reload();
  const CurveIdentity& identity() const { return identity_; }
  // See ZapHandler::SetAdmission; before Start.
  void SetAdmission(ZapHandler::Admission admit) { admit_ = std::move(admit); }

 private:
  CurveIdentity identity_;
  ZapHandler::Admission admit_;
  std::string peer_keys_;
  std::unique_ptr<ZapHandler> zap_;
};

// The address to bind for an endpoint that may name its key.
std::string BindAddress(const std::string& endpoint);

}  // namespace natter

#endif  // NATTER_COMMON_CURVE_H_
