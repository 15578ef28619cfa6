// Commands, files and what they say, for the tests: a command line run
// through sh, its output and its exit status; a file read whole; how often
// a text holds another.
#ifndef NATTER_TESTS_SUPPORT_IO_H_
#define NATTER_TESTS_SUPPORT_IO_H_

#include <cstddef>
#include <string>

namespace natter {

// Runs a command line through sh: its exit status (-1 if it did not
// exit), with what it wrote to stdout in *out and to stderr in *err when
// they are given (stderr goes to the test's own stderr otherwise).
int RunCommand(const std::string& command, std::string* out = nullptr,
               std::string* err = nullptr);

// The whole file; empty if it cannot be read.
std::string ReadFile(const std::string& path);

// How many times `what` is in `text` (overlapping ones too).
size_t CountOf(const std::string& text, const std::string& what);

}  // namespace natter

#endif  // NATTER_TESTS_SUPPORT_IO_H_
