// How natter's wire structs become MessagePack and back (natter(7), Wire
// protocol).  Each struct is an array of its fields in order:
//
//   struct Send {
//     std::string client_msg_id;
//     UserId to;
//     std::string text;
//     NATTER_WIRE(3, client_msg_id, to, text);
//   };
//
// NATTER_WIRE(required, fields...) packs every field, and reads strictly:
// the value must be an array of at least `required` and at most all the
// fields (the ones past `required` are optional trailing elements, left at
// their defaults when absent), each element of exactly its field's type —
// an unsigned integer in range for integers and ids, a string (not binary)
// for strings, a boolean for booleans, nil or the value for optionals, a
// known value for enums.  Anything else throws wire::Malformed, naming the
// field.  Decoding a frame turns that into a `malformed` error (proto.h).
//
// Enums travel as their integer values, through WireEnum<E> (one mapping
// per enum: which values are known).
#ifndef NATTER_COMMON_WIRE_H_
#define NATTER_COMMON_WIRE_H_

#include <cstdint>
#include <limits>
#include <msgpack.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/types.h"

namespace natter {

// Which values of an enum are known on the wire; specialized for each enum
// that travels (and only those are packed and read as integers).
template <typename E>
struct WireEnum {
  static constexpr bool kTravels = false;
};

namespace wire {

// A value that is not what its field must be.
class Malformed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void Fail(const std::string& what);

void Read(const msgpack::object& o, bool& v);
void Read(const msgpack::object& o, double& v);
void Read(const msgpack::object& o, std::string& v);
// Unsigned integers of every width.
void ReadUint(const msgpack::object& o, uint64_t max, uint64_t* v);

template <typename T>
std::enable_if_t<std::is_integral_v<T> && std::is_unsigned_v<T> &&
                 !std::is_same_v<T, bool>>
Read(const msgpack::object& o, T& v) {
  uint64_t x = 0;
  ReadUint(o, std::numeric_limits<T>::max(), &x);
  v = static_cast<T>(x);
}

template <typename Tag>
void Read(const msgpack::object& o, Id<Tag>& v) {
  ReadUint(o, std::numeric_limits<uint64_t>::max(), &v.value);
}

template <typename E>
std::enable_if_t<std::is_enum_v<E> && WireEnum<E>::kTravels> Read(
    const msgpack::object& o, E& v) {
  uint64_t x = 0;
  ReadUint(o, std::numeric_limits<std::underlying_type_t<E>>::max(), &x);
  if (!WireEnum<E>::Known(x)) Fail("an unknown value " + std::to_string(x));
  v = static_cast<E>(x);
}

template <typename T>
void Read(const msgpack::object& o, std::optional<T>& v);
template <typename T>
void Read(const msgpack::object& o, std::vector<T>& v);
template <typename A, typename B>
void Read(const msgpack::object& o, std::pair<A, B>& v);

// A struct reads itself (NATTER_WIRE, or a msgpack_unpack of its own).
template <typename T>
auto Read(const msgpack::object& o, T& v)
    -> decltype(v.msgpack_unpack(o), void()) {
  v.msgpack_unpack(o);
}

template <typename T>
void Read(const msgpack::object& o, std::optional<T>& v) {
  if (o.type == msgpack::type::NIL) {
    v.reset();
    return;
  }
  Read(o, v.emplace());
}

template <typename T>
void Read(const msgpack::object& o, std::vector<T>& v) {
  if (o.type != msgpack::type::ARRAY) Fail("an array is expected");
  v.clear();
  v.resize(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i)
    Read(o.via.array.ptr[i], v[i]);
}

template <typename A, typename B>
void Read(const msgpack::object& o, std::pair<A, B>& v) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 2)
    Fail("a pair is expected");
  Read(o.via.array.ptr[0], v.first);
  Read(o.via.array.ptr[1], v.second);
}

// The array o into fields, in order; names is the fields' names as the
// source spells them ("a, b, c"), for the error.
void CheckArray(const msgpack::object& o, size_t required, size_t all);
[[noreturn]] void FailField(const char* names, size_t index,
                            const std::exception& e);

template <typename... Fields>
void ReadArray(const msgpack::object& o, size_t required, const char* names,
               Fields&... fields) {
  CheckArray(o, required, sizeof...(Fields));
  size_t i = 0;
  auto one = [&](auto& field) {
    if (i < o.via.array.size) {
      try {
        Read(o.via.array.ptr[i], field);
      } catch (const std::exception& e) {
        FailField(names, i, e);
      }
    }
    ++i;
  };
  (one(fields), ...);
  (void)one;  // a struct with no fields
}

}  // namespace wire
}  // namespace natter

// MessagePack's own adaptors for the types natter adds: ids as unsigned
// integers, and the enums that travel as their values.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <typename Tag>
  struct convert<natter::Id<Tag>> {
    const msgpack::object& operator()(const msgpack::object& o,
                                      natter::Id<Tag>& v) const {
      natter::wire::Read(o, v);
      return o;
    }
  };
  template <typename Tag>
  struct pack<natter::Id<Tag>> {
    template <typename Stream>
    packer<Stream>& operator()(packer<Stream>& o,
                               const natter::Id<Tag>& v) const {
      o.pack_uint64(v.value);
      return o;
    }
  };
  template <typename E>
  struct pack<E, std::enable_if_t<natter::WireEnum<E>::kTravels>> {
    template <typename Stream>
    packer<Stream>& operator()(packer<Stream>& o, const E& v) const {
      o.pack_uint64(static_cast<uint64_t>(v));
      return o;
    }
  };
  template <typename E>
  struct convert<E, std::enable_if_t<natter::WireEnum<E>::kTravels>> {
    const msgpack::object& operator()(const msgpack::object& o, E& v) const {
      natter::wire::Read(o, v);
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

// The members that make a struct a wire struct (see the top).
#define NATTER_WIRE(required, ...)                                       \
  template <typename Packer>                                             \
  void msgpack_pack(Packer& packer) const {                              \
    msgpack::type::make_define_array(__VA_ARGS__).msgpack_pack(packer);  \
  }                                                                      \
  void msgpack_unpack(const msgpack::object& o) {                        \
    ::natter::wire::ReadArray(o, required, #__VA_ARGS__, ##__VA_ARGS__); \
  }

#endif  // NATTER_COMMON_WIRE_H_
