#include "common/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/text.h"

namespace natter {
namespace {

const auto kStarted = std::chrono::steady_clock::now();

// Prometheus values: plain decimal, integers without a fraction.
std::string Number(double v) {
  char buf[64];
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.9g", v);
  }
  return buf;
}

std::string Braces(const std::string& labels, const std::string& more = "") {
  std::string inside = labels;
  if (!more.empty()) inside += (inside.empty() ? "" : ",") + more;
  return inside.empty() ? "" : "{" + inside + "}";
}

}  // namespace

size_t LatencyHistogram::Bucket(double us) {
  if (!(us > 1)) return 0;
  // Four buckets per power of two: log2 in quarters.
  double quarters = std::log2(us) * 4;
  size_t b = static_cast<size_t>(quarters) + 1;
  return b < kBuckets ? b : kBuckets - 1;
}

double LatencyHistogram::UpperEdge(size_t bucket) {
  return bucket == 0 ? 1 : std::exp2(static_cast<double>(bucket) / 4);
}

void LatencyHistogram::Record(double us) {
  ++buckets_[Bucket(us)];
  ++count_;
  sum_us_ += us > 0 ? us : 0;
}

double LatencyHistogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  uint64_t rank =
      static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (size_t b = 0; b < kBuckets; ++b) {
    seen += buckets_[b];
    if (seen >= rank) return UpperEdge(b);
  }
  return UpperEdge(kBuckets - 1);
}

void MetricSet::Add(const std::string& name, const std::string& help,
                    const char* type, double value) {
  Metric m;
  m.name = name;
  m.help = help;
  m.type = type;
  m.value = value;
  metrics_.push_back(std::move(m));
}

void MetricSet::Counter(const std::string& name, const std::string& help,
                        double value) {
  Add(name, help, "counter", value);
}

void MetricSet::Gauge(const std::string& name, const std::string& help,
                      double value) {
  Add(name, help, "gauge", value);
}

void MetricSet::Summary(const std::string& name, const std::string& help,
                        const LatencyHistogram& h) {
  Metric m;
  m.name = name;
  m.help = help;
  m.type = "summary";
  for (double q : {0.5, 0.99, 0.999})
    m.quantiles.emplace_back(q, h.Quantile(q) / 1e6);
  m.count = h.count();
  m.sum = h.sum_us() / 1e6;
  metrics_.push_back(std::move(m));
}

std::string PrometheusText(const std::vector<Metric>& metrics,
                           const std::string& labels) {
  std::ostringstream out;
  for (const Metric& m : metrics) {
    out << "# HELP " << m.name << ' ' << m.help << '\n';
    out << "# TYPE " << m.name << ' ' << m.type << '\n';
    if (m.type != "summary") {
      out << m.name << Braces(labels) << ' ' << Number(m.value) << '\n';
      continue;
    }
    for (const auto& [q, v] : m.quantiles) {
      out << m.name << Braces(labels, "quantile=\"" + Number(q) + "\"") << ' '
          << Number(v) << '\n';
    }
    out << m.name << "_sum" << Braces(labels) << ' ' << Number(m.sum) << '\n';
    out << m.name << "_count" << Braces(labels) << ' '
        << Number(static_cast<double>(m.count)) << '\n';
  }
  return out.str();
}

void AddProcessMetrics(MetricSet* set) {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  double cpu =
      static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
      static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  set->Counter("process_cpu_seconds_total",
               "CPU time of the process, user and system.", cpu);
  // /proc/self/statm: "size resident shared ...", in pages.
  std::string statm;
  std::getline(std::ifstream("/proc/self/statm"), statm);
  std::vector<std::string> pages = SplitList(statm);
  if (std::optional<uint64_t> resident =
          pages.size() > 1 ? ParseUint(pages[1]) : std::nullopt) {
    set->Gauge("process_resident_memory_bytes",
               "Resident memory of the process.",
               static_cast<double>(*resident) *
                   static_cast<double>(::sysconf(_SC_PAGESIZE)));
  }
  int fds = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++fds;
    ::closedir(d);
    fds -= 3;  // ".", ".." and the folder's own descriptor
  }
  set->Gauge("process_open_fds", "Open file descriptors of the process.", fds);
  set->Gauge(
      "natter_uptime_seconds", "Seconds since the daemon started.",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - kStarted)
          .count());
}

}  // namespace natter
