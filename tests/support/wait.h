// Waiting in a test: for a condition, not for a time.  A wait that runs
// out fails the test and says what it waited for.  (A test that lets time
// pass on purpose, to see that nothing happens meanwhile, says so where it
// does.)
#ifndef NATTER_TESTS_SUPPORT_WAIT_H_
#define NATTER_TESTS_SUPPORT_WAIT_H_

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace natter {

// Checks done() until it holds, calling step() between checks: what brings
// the condition about (polling a client, turning a loop), or by default a
// pause of 10 ms.  If `seconds` pass first, the test fails: "timed out
// after S s waiting for WHAT", with what state() says, if given.
inline void WaitUntil(const std::string& what,
                      const std::function<bool()>& done, double seconds,
                      const std::function<void()>& step = {},
                      const std::function<std::string()>& state = {}) {
  using Clock = std::chrono::steady_clock;
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(seconds));
  while (!done()) {
    if (Clock::now() >= deadline) {
      FAIL("timed out after " << seconds << " s waiting for " << what
                              << (state ? "; " + state() : std::string()));
    }
    if (step) {
      step();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

// A step for WaitUntil that only pauses, for conditions that are dear to
// check (a command run, a file read, a round trip).
inline std::function<void()> Pause(int ms) {
  return [ms] { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
}

}  // namespace natter

#endif  // NATTER_TESTS_SUPPORT_WAIT_H_
