// A temporary folder for a test, removed with everything in it at the end.
#ifndef NATTER_TESTS_SUPPORT_TEMP_DIR_H_
#define NATTER_TESTS_SUPPORT_TEMP_DIR_H_

#include <cstdlib>
#include <stdexcept>
#include <string>

#include <ftw.h>
#include <unistd.h>

namespace natter {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/natter-test-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    // NATTER_TEST_KEEP=1 keeps the folders (logs, databases) to look at.
    const char* keep = std::getenv("NATTER_TEST_KEEP");
    if (keep != nullptr && *keep == '1') return;
    ::nftw(path_.c_str(),
           [](const char* p, const struct stat*, int, struct FTW*) {
             return ::remove(p);
           },
           16, FTW_DEPTH | FTW_PHYS);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace natter

#endif  // NATTER_TESTS_SUPPORT_TEMP_DIR_H_
