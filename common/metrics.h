// A daemon's metrics: counters, gauges and latency summaries.  natterctl
// status reads them with a control request; Prometheus scrapes them as
// text from the daemon's metrics-listen endpoint (natter(7) METRICS).
#ifndef NATTER_COMMON_METRICS_H_
#define NATTER_COMMON_METRICS_H_

#include <array>
#include <cstdint>
#include <msgpack.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/wire.h"

namespace natter {

// Latencies in microseconds, in buckets four to a power of two (each
// bucket at most 19 % wide), from 1 µs to about 30 minutes.  Fixed size, no
// allocation: a hot path may record into it.
class LatencyHistogram {
 public:
  void Record(double us);
  // The q-quantile (0 < q <= 1), as the upper edge of its bucket; 0 when
  // empty.
  double Quantile(double q) const;
  uint64_t count() const { return count_; }
  double sum_us() const { return sum_us_; }

 private:
  static constexpr size_t kBuckets = 128;
  static size_t Bucket(double us);
  static double UpperEdge(size_t bucket);
  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
  double sum_us_ = 0;
};

// One metric as natterctl status and Prometheus see it.
struct Metric {
  std::string name;  // natter_frontd_requests_total
  std::string help;
  std::string type;  // "counter", "gauge" or "summary"
  double value = 0;  // counter, gauge
  // summary (seconds): p50, p99, p99.9, and how many and their sum.
  std::vector<std::pair<double, double>> quantiles;
  uint64_t count = 0;
  double sum = 0;
  NATTER_WIRE(7, name, help, type, value, quantiles, count, sum)
};

// What a daemon adds its metrics to.
class MetricSet {
 public:
  void Counter(const std::string& name, const std::string& help, double value);
  void Gauge(const std::string& name, const std::string& help, double value);
  // A summary in seconds of a histogram of microseconds.
  void Summary(const std::string& name, const std::string& help,
               const LatencyHistogram& h);
  const std::vector<Metric>& metrics() const { return metrics_; }
  std::vector<Metric>& metrics() { return metrics_; }

 private:
  void Add(const std::string& name, const std::string& help, const char* type,
           double value);
  std::vector<Metric> metrics_;
};

// The Prometheus text exposition format (version 0.0.4) of the metrics,
// each sample labelled with labels ("daemon=\"stored-0\"", may be empty).
std::string PrometheusText(const std::vector<Metric>& metrics,
                           const std::string& labels);

// The process's own: CPU seconds, resident memory, open descriptors,
// seconds since start.
void AddProcessMetrics(MetricSet* set);

}  // namespace natter

#endif  // NATTER_COMMON_METRICS_H_
