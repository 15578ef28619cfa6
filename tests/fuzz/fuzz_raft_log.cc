// libFuzzer: a shard's Raft log as it may be found on disk after a crash
// or damage (daemons/stored/raft_log.h).  The input is one or two segment
// files (its first two bytes say where the first ends); opening them must
// give a log or an error, never a crash, and a log that opens must take a
// Save and open again.  When the first byte is odd, the bytes are
// payloads rather than whole files (each led by a byte, its length) and
// are given good frame headers, so that the records inside are read.
#include <sodium.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "common/log.h"
#include "daemons/stored/raft_log.h"

using namespace natter;
using namespace natter::stored;

namespace {

const std::string& Folder() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/natter-fuzz-raft-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    return std::string(made != nullptr ? made : "/tmp") + "/raft";
  }();
  return path;
}

void Write(const std::string& file, const char* data, size_t size) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(data, static_cast<std::streamsize>(size));
}

// Payloads, each led by its length (one byte), as frames: a u32 length
// and the payload's SipHash-2-4 (key all zero), then the payload.
std::string Framed(const char* data, size_t size) {
  static const unsigned char kKey[crypto_shorthash_KEYBYTES] = {0};
  std::string out;
  for (size_t at = 0; at < size;) {
    const size_t n =
        std::min<size_t>(static_cast<unsigned char>(data[at]), size - at - 1);
    const char* payload = data + at + 1;
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
    unsigned char sum[crypto_shorthash_BYTES];
    crypto_shorthash(sum, reinterpret_cast<const unsigned char*>(payload), n,
                     kKey);
    out.append(reinterpret_cast<const char*>(sum), sizeof sum);
    out.append(payload, n);
    at += n + 1;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = [] {
    LogInit("fuzz_raft_log", false, LogLevel::kError);
    return true;
  }();
  (void)quiet;
  if (size < 2) return 0;
  const std::string& path = Folder();
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
  std::string bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (data[0] & 1) bytes = Framed(bytes.data(), bytes.size());
  const size_t split = (data[0] | (size_t{data[1]} << 8)) % (bytes.size() + 1);
  Write(path + "/0000000000000001.wal", bytes.data(), split);
  if (split < bytes.size()) {
    Write(path + "/0000000000000002.wal", bytes.data() + split,
          bytes.size() - split);
  }
  std::unique_ptr<RaftLog> log;
  if (!RaftLog::Open(path, &log, 4096).ok()) return 0;
  const uint64_t last = log->last_index();
  raft::Ready rd;
  raft::Entry e;
  e.index = last + 1;
  e.term = log->restored().hard_state.term;
  e.data = "after";
  rd.entries.push_back(e);
  if (!log->Save(rd).ok()) return 0;
  log.reset();
  if (!RaftLog::Open(path, &log, 4096).ok() || log->last_index() != last + 1)
    __builtin_trap();  // a log that opened and took a Save must open again
  return 0;
}
