// A temporary folder for a test, or for a program that starts a cell in
// one (natter-chaos, natter-bench): made in the system's temporary folder
// (std::filesystem::temp_directory_path(): $TMPDIR, else /tmp) and removed
// with everything in it when the TempDir goes, unless it is kept.
#ifndef NATTER_TESTS_SUPPORT_TEMP_DIR_H_
#define NATTER_TESTS_SUPPORT_TEMP_DIR_H_

#include <string>

namespace natter {

class TempDir {
 public:
  // A test's folder, natter-test-XXXXXX; NATTER_TEST_KEEP=1 keeps it (its
  // logs and databases, to look at).
  TempDir();
  // prefix-XXXXXX, kept at the end if keep.  Throws std::runtime_error,
  // naming the folder, if it cannot be made.
  TempDir(const std::string& prefix, bool keep);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  bool kept() const { return keep_; }

 private:
  std::string path_;
  bool keep_;
};

}  // namespace natter

#endif  // NATTER_TESTS_SUPPORT_TEMP_DIR_H_
