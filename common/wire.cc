#include "common/wire.h"

namespace natter {
namespace wire {

void Fail(const std::string& what) { throw Malformed(what); }

void Read(const msgpack::object& o, bool& v) {
  if (o.type != msgpack::type::BOOLEAN) Fail("a boolean is expected");
  v = o.via.boolean;
}

void Read(const msgpack::object& o, double& v) {
  switch (o.type) {
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      v = o.via.f64;
      return;
    case msgpack::type::POSITIVE_INTEGER:
      v = static_cast<double>(o.via.u64);
      return;
    case msgpack::type::NEGATIVE_INTEGER:
      v = static_cast<double>(o.via.i64);
      return;
    default:
      Fail("a number is expected");
  }
}

void Read(const msgpack::object& o, std::string& v) {
  if (o.type != msgpack::type::STR) Fail("a string is expected");
  v.assign(o.via.str.ptr, o.via.str.size);
}

void ReadUint(const msgpack::object& o, uint64_t max, uint64_t* v) {
  if (o.type != msgpack::type::POSITIVE_INTEGER)
    Fail("an unsigned integer is expected");
  if (o.via.u64 > max) Fail(std::to_string(o.via.u64) + " is out of range");
  *v = o.via.u64;
}

void CheckArray(const msgpack::object& o, size_t required, size_t all) {
  if (o.type != msgpack::type::ARRAY) Fail("an array is expected");
  const size_t n = o.via.array.size;
  if (n < required || n > all) {
    Fail("an array of " +
         (required == all
              ? std::to_string(all)
              : std::to_string(required) + " to " + std::to_string(all)) +
         " elements is expected, not " + std::to_string(n));
  }
}

void FailField(const char* names, size_t index, const std::exception& e) {
  // The index-th name of "a, b, c".
  std::string list = names;
  size_t begin = 0;
  for (size_t i = 0; i < index && begin != std::string::npos; ++i) {
    begin = list.find(',', begin);
    if (begin != std::string::npos) ++begin;
  }
  std::string name;
  if (begin != std::string::npos) {
    size_t end = list.find(',', begin);
    name = list.substr(
        begin, end == std::string::npos ? std::string::npos : end - begin);
    name.erase(0, name.find_first_not_of(' '));
  }
  Fail("element " + std::to_string(index) +
       (name.empty() ? "" : " (" + name + ")") + ": " + e.what());
}

}  // namespace wire
}  // namespace natter
