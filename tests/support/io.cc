#include "tests/support/io.h"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "tests/support/temp_dir.h"

namespace natter {

int RunCommand(const std::string& command, std::string* out, std::string* err) {
  std::unique_ptr<TempDir> stderr_dir;
  std::string line = command;
  if (err != nullptr) {
    stderr_dir = std::make_unique<TempDir>("natter-stderr", false);
    line += " 2>" + stderr_dir->path() + "/stderr";
  }
  FILE* p = ::popen(line.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    if (out != nullptr) out->append(buf, n);
  }
  int status = ::pclose(p);
  if (err != nullptr) *err = ReadFile(stderr_dir->path() + "/stderr");
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

size_t CountOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos;
       at = text.find(what, at + 1))
    ++n;
  return n;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace natter
