// Command-line options of natter's programs (boost::program_options) that
// hold a whole decimal number, read with ParseUint like every other
// decimal number: boost's own reading of an unsigned number takes "-1" for
// the largest one.
#ifndef NATTER_COMMON_FLAGS_H_
#define NATTER_COMMON_FLAGS_H_

#include <boost/program_options.hpp>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

#include "common/text.h"

namespace natter {

// The value of option `name` (for its error), stored in *out when given:
//   opts.add_options()("shards", UintValue("shards", &shards));
// A number past T's range is refused as any other that is not a number.
template <typename T>
boost::program_options::typed_value<std::string>* UintValue(
    const std::string& name, T* out) {
  static_assert(std::is_unsigned_v<T>, "UintValue is for unsigned numbers");
  return boost::program_options::value<std::string>()->notifier(
      [name, out](const std::string& text) {
        std::optional<uint64_t> v = ParseUint(text);
        if (!v || *v > std::numeric_limits<T>::max()) {
          boost::program_options::invalid_option_value error(text);
          error.set_option_name(name);
          error.set_prefix(
              boost::program_options::command_line_style::allow_long);
          throw error;
        }
        *out = static_cast<T>(*v);
      });
}

}  // namespace natter

#endif  // NATTER_COMMON_FLAGS_H_
