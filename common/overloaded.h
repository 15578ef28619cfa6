// Overloaded{lambdas...}: one callable of several lambdas, for std::visit
// over a std::variant (the explicit bodies of proto.h).
#ifndef NATTER_COMMON_OVERLOADED_H_
#define NATTER_COMMON_OVERLOADED_H_

namespace natter {

template <typename... Fs>
struct Overloaded : Fs... {
  using Fs::operator()...;
};
template <typename... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;

}  // namespace natter

#endif  // NATTER_COMMON_OVERLOADED_H_
