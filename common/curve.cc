#include "common/curve.h"

#include <dirent.h>
#include <sodium.h>

#include <cstring>

#include "common/log.h"
#include "common/text.h"
#include "common/token.h"

namespace natter {

namespace {

constexpr size_t kZ85Length = 40;
constexpr size_t kHexLength = 64;

}  // namespace

const char kCurveKeyForms[] = "40 characters of Z85 or 64 hex digits";

bool ParseCurveKey(const std::string& text, CurveKey* out) {
  if (text.size() == kZ85Length) {
    return zmq_z85_decode(out->data(), text.c_str()) != nullptr;
  }
  if (text.size() == kHexLength) return FromHex(text, out->data(), out->size());
  return false;
}

std::string CurveKeyZ85(const CurveKey& key) {
  char text[kZ85Length + 1];
  zmq_z85_encode(text, key.data(), key.size());
  return text;
}

std::string CurveKeyHex(const CurveKey& key) {
  return ToHex(key.data(), key.size());
}

Status ReadCurveKey(const std::string& path, CurveKey* out) {
  std::string line;
  if (!ReadFirstLine(path, &line)) {
    return Status(ErrorCode::kBadRequest, path + ": cannot read the key");
  }
  if (!ParseCurveKey(line, out)) {
    return Status(ErrorCode::kBadRequest,
                  path + ": not a CURVE key (" + kCurveKeyForms + ")");
  }
  return Status::Ok();
}

Status WriteCurveKeyPair(const std::string& dir, const std::string& name,
                         CurveKey* public_key) {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Status(ErrorCode::kInternal, "libzmq has no CURVE support");
  }
  Status s =
      WriteNewFile(dir + "/" + name + ".key", std::string(sec) + "\n", 0600);
  if (!s.ok()) return s;
  s = WriteNewFile(dir + "/" + name + ".pub", std::string(pub) + "\n", 0644);
  if (s.ok() && public_key != nullptr) zmq_z85_decode(public_key->data(), pub);
  return s;
}

Status ParseEndpoint(const std::string& text, Endpoint* out) {
  *out = Endpoint();
  out->address = text;
  if (text.find('@') == std::string::npos) return Status::Ok();
  // Hex holds no '@', so the two forms cannot be taken for each other.
  for (size_t length : {kHexLength, kZ85Length}) {
    if (text.size() <= length) continue;
    size_t at = text.size() - length - 1;
    if (text[at] == '@' &&
        ParseCurveKey(text.substr(at + 1), &out->server_key)) {
      out->address = text.substr(0, at);
      out->has_key = true;
      return Status::Ok();
    }
  }
  return Status(ErrorCode::kBadRequest,
                text + ": the server key after '@' must be " + kCurveKeyForms);
}

Status LoadCurveIdentity(const std::string& secret_key_file,
                         CurveIdentity* out) {
  *out = CurveIdentity();
  if (secret_key_file.empty()) return Status::Ok();
  Status s = ReadCurveKey(secret_key_file, &out->secret);
  if (!s.ok()) return s;
  crypto_scalarmult_base(out->public_key.data(), out->secret.data());
  out->enabled = true;
  return Status::Ok();
}

namespace {

bool IsIpc(const std::string& endpoint) {
  return endpoint.rfind("ipc://", 0) == 0;
}

constexpr PeerRole kRoles[] = {PeerRole::kFrontd, PeerRole::kRouted,
                               PeerRole::kStored, PeerRole::kNotifyd,
                               PeerRole::kAdmin};
constexpr char kRoleDomainPrefix[] = "cell:";

std::optional<PeerRole> RoleNamed(const std::string& name) {
  for (PeerRole role : kRoles) {
    if (name == PeerRoleName(role)) return role;
  }
  return std::nullopt;
}

std::string RolesText(const std::set<PeerRole>& roles) {
  std::string text;
  for (PeerRole role : roles) {
    text += (text.empty() ? "" : ",") + std::string(PeerRoleName(role));
  }
  return text.empty() ? "none" : text;
}

}  // namespace

const char kPeerKeyNaming[] =
    "a key's name is frontd, routed, stored, notifyd or admin, alone or "
    "followed by -, ., _ or @ and anything, as in stored-1 or frontd@host3";

bool SentByRole(const zmq::message_t& message, PeerRole role, bool curve) {
  if (!curve) return true;
  const char* roles = zmq_msg_gets(message.handle(), "User-Id");
  if (roles == nullptr) return false;
  const std::string name = PeerRoleName(role);
  for (const std::string& r : SplitList(roles)) {
    if (r == name) return true;
  }
  return false;
}

const char* PeerRoleName(PeerRole role) {
  switch (role) {
    case PeerRole::kFrontd:
      return "frontd";
    case PeerRole::kRouted:
      return "routed";
    case PeerRole::kStored:
      return "stored";
    case PeerRole::kNotifyd:
      return "notifyd";
    case PeerRole::kAdmin:
      return "admin";
  }
  return "?";
}

std::optional<PeerRole> PeerRoleOfName(const std::string& name) {
  size_t end = name.find_first_of("-._@");
  return RoleNamed(name.substr(0, end));
}

bool DomainAdmits(const std::string& domain, PeerRole role) {
  const size_t prefix = sizeof kRoleDomainPrefix - 1;
  if (domain.compare(0, prefix, kRoleDomainPrefix) != 0) return false;
  for (const std::string& name : SplitList(domain.substr(prefix))) {
    if (RoleNamed(name) == role) return true;
  }
  return false;
}

Status LoadPeerKeys(const std::string& dir, PeerKeys* out) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return Status(ErrorCode::kBadRequest, dir + ": " + std::strerror(errno));
  }
  PeerKeys keys;
  Status status;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 5 || name.substr(name.size() - 4) != ".pub") continue;
    std::optional<PeerRole> role =
        PeerRoleOfName(name.substr(0, name.size() - 4));
    if (!role) {
      status = Status(
          ErrorCode::kBadRequest,
          dir + "/" + name + ": the name names no role; " + kPeerKeyNaming);
      break;
    }
    CurveKey key;
    status = ReadCurveKey(dir + "/" + name, &key);
    if (!status.ok()) break;
    keys[key].insert(*role);
  }
  ::closedir(d);
  if (!status.ok()) return status;
  *out = std::move(keys);
  return Status::Ok();
}

bool SetCurveServer(zmq::socket_t& socket, const CurveIdentity& me,
                    const char* domain, const std::string& endpoint) {
  if (!me.enabled) return false;
  if (me.plain_ipc && IsIpc(endpoint)) return false;
  socket.set(zmq::sockopt::zap_domain, domain);
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey,
             zmq::const_buffer(me.secret.data(), me.secret.size()));
  return true;
}

Status ConnectTo(zmq::socket_ref socket, const CurveIdentity& me,
                 const std::string& endpoint_text) {
  Endpoint ep;
  Status s = ParseEndpoint(endpoint_text, &ep);
  if (!s.ok()) return s;
  if (ep.has_key && !(me.plain_ipc && IsIpc(ep.address))) {
    if (!me.enabled) {
      return Status(ErrorCode::kBadRequest,
                    endpoint_text +
                        " names a server key, so this daemon needs "
                        "a secret-key of its own");
    }
    socket.set(zmq::sockopt::curve_serverkey,
               zmq::const_buffer(ep.server_key.data(), ep.server_key.size()));
    socket.set(zmq::sockopt::curve_publickey,
               zmq::const_buffer(me.public_key.data(), me.public_key.size()));
    socket.set(zmq::sockopt::curve_secretkey,
               zmq::const_buffer(me.secret.data(), me.secret.size()));
  }
  try {
    socket.connect(ep.address);
  } catch (const zmq::error_t& e) {
    return Status(ErrorCode::kBadRequest, ep.address + ": " + e.what());
  }
  return Status::Ok();
}

Status DaemonKeys::Create(const Config& config, DaemonKeys* out) {
  DaemonKeys keys;
  keys.peer_keys_ = config.Get("peer-keys");
  Status s = LoadCurveIdentity(config.Get("secret-key"), &keys.identity_);
  if (!s.ok())
    return Status(ErrorCode::kBadRequest, "secret-key: " + s.message());
  const std::string curve_ipc = config.Get("curve-ipc");
  if (curve_ipc != "yes" && curve_ipc != "no") {
    return Status(ErrorCode::kBadRequest,
                  "curve-ipc: '" + curve_ipc + "' is not yes or no");
  }
  keys.identity_.plain_ipc = curve_ipc == "no";
  if (keys.identity_.enabled) {
    if (keys.peer_keys_.empty()) {
      return Status(
          ErrorCode::kBadRequest,
          "peer-keys: a daemon with a secret-key needs the cell's peer keys");
    }
    PeerKeys peers;
    s = LoadPeerKeys(keys.peer_keys_, &peers);
    if (!s.ok())
      return Status(ErrorCode::kBadRequest, "peer-keys: " + s.message());
  }
  *out = std::move(keys);
  return Status::Ok();
}

Status DaemonKeys::Start(zmq::context_t& ctx) {
  if (!identity_.enabled) return Status::Ok();
  zap_ = std::make_unique<ZapHandler>(ctx);
  Status s = zap_->Start(peer_keys_);
  if (!s.ok())
    return Status(ErrorCode::kBadRequest, "peer-keys: " + s.message());
  NLOG_INFO("event=curve public_key=%s peer_keys=%zu",
            LogValue(CurveKeyHex(identity_.public_key)).c_str(),
            zap_->key_count());
  return Status::Ok();
}

void DaemonKeys::Reload() {
  if (!zap_) return;
  Status s = zap_->Reload();
  if (s.ok()) {
    NLOG_INFO("event=peer-keys-reloaded keys=%zu", zap_->key_count());
  } else {
    NLOG_ERROR("event=peer-keys-reload-failed error=%s kept=%zu",
               LogValue(s.message()).c_str(), zap_->key_count());
  }
}

std::string BindAddress(const std::string& endpoint) {
  Endpoint ep;
  if (!ParseEndpoint(endpoint, &ep).ok()) return endpoint;
  return ep.address;
}

ZapHandler::ZapHandler(zmq::context_t& ctx) : ctx_(ctx) {}

ZapHandler::~ZapHandler() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

Status ZapHandler::Load(const std::string& dir) {
  PeerKeys keys;
  Status s = LoadPeerKeys(dir, &keys);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> lock(mutex_);
  allowed_ = std::move(keys);
  return Status::Ok();
}

Status ZapHandler::Start(const std::string& dir) {
  dir_ = dir;
  Status s = Load(dir);
  if (!s.ok()) return s;
  socket_ = zmq::socket_t(ctx_, zmq::socket_type::rep);
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind("inproc://zeromq.zap.01");
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

Status ZapHandler::Reload() { return Load(dir_); }

size_t ZapHandler::key_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return allowed_.size();
}

bool ZapHandler::AdmitPeer(const std::string& domain,
                           const std::string& address, const CurveKey& key,
                           std::string* admitted) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = allowed_.find(key);
  std::set<PeerRole> roles;
  if (it != allowed_.end()) roles = it->second;
  admitted->clear();
  for (PeerRole role : roles) {
    if (!DomainAdmits(domain, role)) continue;
    *admitted +=
        (admitted->empty() ? "" : ",") + std::string(PeerRoleName(role));
  }
  if (!admitted->empty()) return true;
  // The domain and the roles are the daemon's own words; the address is
  // libzmq's.
  NLOG_WARN("event=peer-refused domain=%s address=%s role=%s key=%s",
            domain.c_str(), LogValue(address).c_str(), RolesText(roles).c_str(),
            CurveKeyHex(key).c_str());
  return false;
}

void ZapHandler::Run() {
  // RFC 27: version, request id, domain, address, identity, mechanism,
  // credentials...; the answer: version, request id, status, text, user
  // id, metadata.
  while (!stop_) {
    zmq::pollitem_t item = {socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 100) <= 0) continue;
    std::vector<zmq::message_t> req;
    try {
      if (!zmq::recv_multipart(socket_, std::back_inserter(req))) continue;
    } catch (const zmq::error_t&) {
      continue;
    }
    std::string version = req.size() > 0 ? req[0].to_string() : "";
    std::string request_id = req.size() > 1 ? req[1].to_string() : "";
    std::string domain = req.size() > 2 ? req[2].to_string() : "";
    std::string address = req.size() > 3 ? req[3].to_string() : "";
    std::string mechanism = req.size() > 5 ? req[5].to_string() : "";
    bool ok = false;
    std::string roles;
    std::string code = "400";
    std::string text = "not a key this socket admits";
    if (version == "1.0" && mechanism == "CURVE" && req.size() >= 7 &&
        req[6].size() == 32) {
      CurveKey key;
      std::memcpy(key.data(), req[6].data(), 32);
      ok = AdmitPeer(domain, address, key, &roles);
    }
    std::vector<zmq::message_t> reply;
    reply.emplace_back(version.data(), version.size());
    reply.emplace_back(request_id.data(), request_id.size());
    if (ok) {
      code = "200";
      text = "OK";
    }
    reply.emplace_back(code.data(), code.size());
    reply.emplace_back(text.data(), text.size());
    reply.emplace_back(roles.data(), roles.size());  // the User-Id
    reply.emplace_back();
    try {
      zmq::send_multipart(socket_, reply);
    } catch (const zmq::error_t&) {
    }
  }
  socket_.close();
}

}  // namespace natter
