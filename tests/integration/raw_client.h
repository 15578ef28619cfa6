// A raw client for attack tests: a libzmq DEALER with CURVE to a cell's
// frontd that sends whatever frames a test builds (any header, any routing
// id) and reads whatever comes back, frame by frame.
#ifndef NATTER_TESTS_INTEGRATION_RAW_CLIENT_H_
#define NATTER_TESTS_INTEGRATION_RAW_CLIENT_H_

#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/net.h"
#include "common/proto.h"
#include "tests/integration/test_cell.h"

namespace natter {

// Makes s a CURVE client of the cell's frontd, with a key pair of its own.
inline void UseFrontdCurve(const TestCell& cell, zmq::socket_t* s) {
  char pub[41], sec[41];
  zmq_curve_keypair(pub, sec);
  CurveKey server;
  REQUIRE(ParseCurveKey(cell.Options(1, "x").server_key, &server));
  s->set(zmq::sockopt::curve_serverkey, zmq::const_buffer(server.data(), 32));
  s->set(zmq::sockopt::curve_publickey, pub);
  s->set(zmq::sockopt::curve_secretkey, sec);
}

struct RawClient {
  struct Options {
    std::string
        routing_id;        // chosen by the client (ZMQ_ROUTING_ID); empty: none
    std::string endpoint;  // empty: the cell's
    bool hello = true;     // say hello with a token for the user
    std::string device = "raw";
    std::string token;  // empty: a fresh one for the user
  };

  zmq::context_t ctx{1};
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  zmq::socket_t monitor;
  uint64_t corr = 1;

  RawClient(const TestCell& cell, uint64_t user)
      : RawClient(cell, user, Options()) {}
  RawClient(const TestCell& cell, uint64_t user, const Options& o) {
    ClientOptions co = cell.Options(user, o.device);
    UseFrontdCurve(cell, &s);
    s.set(zmq::sockopt::rcvtimeo, 10000);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::sndhwm, 100000);
    if (!o.routing_id.empty()) s.set(zmq::sockopt::routing_id, o.routing_id);
    static int monitors = 0;
    std::string name =
        "inproc://raw-client-monitor-" + std::to_string(++monitors);
    REQUIRE(zmq_socket_monitor(s.handle(), name.c_str(),
                               ZMQ_EVENT_DISCONNECTED |
                                   ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                   ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) == 0);
    monitor = zmq::socket_t(ctx, zmq::socket_type::pair);
    monitor.connect(name);
    s.connect(o.endpoint.empty() ? co.server : o.endpoint);
    if (o.hello) {
      Hello hello{o.token.empty() ? co.token : o.token, o.device};
      REQUIRE(Ask(hello).type() == MsgType::kWelcome);
    }
  }

  // Sends a frame with this header's user and device (frontd must ignore
  // them); returns its corr.
  template <typename T>
  uint64_t Send(const T& body, UserId claimed = UserId(),
                const std::string& device = "someone-else") {
    Header h;
    h.corr = corr++;
    h.user = claimed;
    h.device = device;
    s.send(zmq::buffer(EncodeFrame(h, body)), zmq::send_flags::none);
    return h.corr;
  }
  // A frame of type `type` whatever the body is (a body of the wrong
  // shape, say); returns its corr.
  template <typename T>
  uint64_t SendAs(MsgType type, const T& body, UserId claimed,
                  const std::string& device) {
    Header h;
    h.type = static_cast<uint8_t>(type);
    h.user = claimed;
    h.device = device;
    return SendHeader(h, body);
  }
  // A frame whose header says protocol `version`; returns its corr.
  template <typename T>
  uint64_t SendVersion(uint8_t version, const T& body) {
    Header h;
    h.version = version;
    h.type = static_cast<uint8_t>(FrameOf<T>::kType);
    return SendHeader(h, body);
  }
  // [h, body] as it is (h's corr the next); returns the corr.
  template <typename T>
  uint64_t SendHeader(Header h, const T& body) {
    h.corr = corr++;
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> p(b);
    p.pack_array(2);
    p.pack(h);
    p.pack(body);
    s.send(zmq::buffer(b.data(), b.size()), zmq::send_flags::none);
    return h.corr;
  }
  // The next frame within ms, if one comes.
  std::optional<Frame> Next(int ms = 10000) {
    s.set(zmq::sockopt::rcvtimeo, ms);
    zmq::message_t m;
    if (!s.recv(m)) return std::nullopt;
    Frame f;
    REQUIRE(DecodeFrame(m.data(), m.size(), &f).ok());
    // The body lives in the handle, which needs bytes that outlive m.
    f.handle = msgpack::unpack(static_cast<const char*>(m.data()), m.size());
    f.body = f.handle.get().via.array.ptr[1];
    return f;
  }
  // The next reply, past any live events pushed meanwhile.
  Frame NextReply() {
    for (;;) {
      std::optional<Frame> f = Next();
      REQUIRE(f.has_value());
      if (f->type() != MsgType::kEvent) return std::move(*f);
    }
  }
  template <typename T>
  Frame Ask(const T& body, UserId claimed = UserId()) {
    Send(body, claimed);
    return NextReply();
  }
  // Whether the socket monitor has seen an event of this id by now.
  bool Saw(uint16_t event) {
    uint16_t id;
    uint32_t value;
    bool seen = false;
    while (RecvMonitorEvent(monitor, &id, &value)) seen = seen || id == event;
    return seen;
  }
};

// An error frame's code (kOk if the frame is not an error).
inline ErrorCode ErrorCodeOf(const Frame& f) {
  if (f.type() != MsgType::kError) return ErrorCode::kOk;
  Error e;
  REQUIRE(DecodeBody(f, &e).ok());
  return e.code;
}

}  // namespace natter

#endif  // NATTER_TESTS_INTEGRATION_RAW_CLIENT_H_
