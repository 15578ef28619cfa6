// CurveZMQ for natter's sockets: key files, endpoints that name their
// server's key, and the ZAP handler that decides who may connect.
//
// A key is written in one of two forms wherever natter reads one (key
// files, endpoints, natter's -k and server-key): 40 characters of Z85,
// ZeroMQ's own text form (what zmq_curve_keypair and natterctl write), or
// 64 hex digits.  Key files hold one line: NAME.key, the secret (mode
// 0600), and NAME.pub, the public.  A connecting socket learns its
// server's public key from the endpoint: "tcp://host:7421@KEY".  Z85's
// alphabet holds '@' (and '#', which is why config files take a comment
// only at the start of a line), so the key is told by its length at the end
// of the endpoint, not by the last '@'.
//
// Every binding socket of a daemon with a key is a CURVE server (but
// frontd's socket for clients, which speaks CURVE itself: daemons/frontd/
// zmtp.h).  Its ZAP domain "cell:ROLE,..." says who may connect: only the
// public keys in the cell's peer-keys folder (like ssh's authorized_keys)
// whose file names give them one of those roles, so that each socket admits
// only the daemons that talk to it, and the operator's key (admin) reaches
// the control sockets only.
#ifndef NATTER_COMMON_CURVE_H_
#define NATTER_COMMON_CURVE_H_

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/config.h"
#include "common/status.h"

namespace natter {

using CurveKey = std::array<uint8_t, 32>;

// Who holds a key of the cell.  A key's role is in its file name in the
// peer-keys folder: the name without ".pub" is a role ("frontd.pub"), or a
// role followed by one of '-', '.', '_', '@' and anything ("stored-1.pub",
// "frontd@host3.pub").
enum class PeerRole : uint8_t { kFrontd, kRouted, kStored, kNotifyd, kAdmin };
const char* PeerRoleName(PeerRole role);
// The role a key's name (without ".pub") gives it; none if it names none.
std::optional<PeerRole> PeerRoleOfName(const std::string& name);
// The naming rule, for error messages.
extern const char kPeerKeyNaming[];

// The ZAP domain of each binding socket: who may connect to it.
constexpr char kZapDomainRouted[] = "cell:frontd,stored";  // routed's ROUTER
constexpr char kZapDomainShard[] =
    "cell:routed,stored";  // a shard's ROUTER (routed; the other replicas)
constexpr char kZapDomainNotifydIn[] = "cell:stored";   // notifyd's PULL
constexpr char kZapDomainNotifydOut[] = "cell:frontd";  // notifyd's PUB
constexpr char kZapDomainControl[] = "cell:admin";      // control sockets
// Whether a "cell:..." domain admits a key of role; false for any other.
bool DomainAdmits(const std::string& domain, PeerRole role);
// Whether a message that came in on a CURVE server socket (curve: as
// SetCurveServer said) came from a peer whose key has role: ZapHandler
// names the roles it admitted a key for as the connection's User-Id; a
// message without one is refused.  On a socket without CURVE nobody's key
// was checked, and every message passes.
bool SentByRole(const zmq::message_t& message, PeerRole role, bool curve);

// The cell's allow-list: each key of a peer-keys folder with the roles its
// file names give it (a key listed under two names has both).
using PeerKeys = std::map<CurveKey, std::set<PeerRole>>;
// Reads every *.pub of dir; a file that holds no key, or whose name names
// no role, is an error.
Status LoadPeerKeys(const std::string& dir, PeerKeys* out);

// The two forms of a key's text, for error messages: "40 characters of Z85
// or 64 hex digits".
extern const char kCurveKeyForms[];
// Parses 40 characters of Z85 or 64 hex digits.
bool ParseCurveKey(const std::string& text, CurveKey* out);
std::string CurveKeyZ85(const CurveKey& key);
std::string CurveKeyHex(const CurveKey& key);
// Reads a key file (the first line).
Status ReadCurveKey(const std::string& path, CurveKey* out);
// Makes NAME.key (0600) and NAME.pub in dir; refuses to overwrite.
Status WriteCurveKeyPair(const std::string& dir, const std::string& name,
                         CurveKey* public_key);

// "tcp://h:1@KEY" -> endpoint and key; an endpoint without '@' has no key.
// KEY is the last 40 (Z85) or 64 (hex) characters, after an '@' that ends
// the address: "ipc:///run/a@b.sock@" followed by a Z85 key that holds '@'
// itself is the address "ipc:///run/a@b.sock" and that key.  An '@' with
// neither form after it is an error.
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
Status LoadCurveIdentity(const std::string& secret_key_file,
                         CurveIdentity* out);

// Makes socket a CURVE server of the domain, if the daemon has a key —
// unless it binds an ipc:// endpoint of the cell and curve-ipc is off (no
// CURVE, so no ZAP: whoever can open the socket file is let in, whatever
// its role).  True if the socket is a CURVE server.
bool SetCurveServer(zmq::socket_t& socket, const CurveIdentity& me,
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
  // are refused from their next connection on.  On an error the keys read
  // before stay.
  Status Reload();
  size_t key_count() const;

 private:
  void Run();
  Status Load(const std::string& dir);
  // Whether a key may connect to a socket of a "cell:..." domain (roles:
  // the roles it is admitted for, joined by commas); logs a refusal.
  bool AdmitPeer(const std::string& domain, const std::string& address,
                 const CurveKey& key, std::string* roles) const;

  zmq::context_t& ctx_;
  zmq::socket_t socket_;
  std::string dir_;
  mutable std::mutex mutex_;
  PeerKeys allowed_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A daemon's keys: its identity (secret-key) and, when it has one, the ZAP
// handler for the cell's allow-list (peer-keys).  A daemon with a key and
// no allow-list would take any key, so that is a configuration error.
class DaemonKeys {
 public:
  // No key: the daemon's sockets go without CURVE.
  DaemonKeys() = default;
  // Reads secret-key, curve-ipc and peer-keys.  A bad configuration is a
  // kBadRequest Status naming the key (a peer-keys folder that cannot be
  // read too, so that -n reports it).
  static Status Create(const Config& config, DaemonKeys* out);
  Status Start(zmq::context_t& ctx);
  void Reload();
  const CurveIdentity& identity() const { return identity_; }

 private:
  CurveIdentity identity_;
  std::string peer_keys_;
  std::unique_ptr<ZapHandler> zap_;
};

// The address to bind for an endpoint that may name its key.
std::string BindAddress(const std::string& endpoint);

}  // namespace natter

#endif  // NATTER_COMMON_CURVE_H_
