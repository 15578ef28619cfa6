#include "client/request_queue.h"

#include <algorithm>

namespace natter {

RequestQueue::RequestQueue(Options options, Transmit transmit, uint32_t seed)
    : options_(options),
      transmit_(std::move(transmit)),
      rng_(seed),
      write_window_(options.max_in_flight) {}

RequestQueue::Clock::duration RequestQueue::Jittered(int ms) {
  // Between 3/4 and 5/4 of ms.
  std::uniform_int_distribution<int> spread(0, std::max(ms / 2, 1));
  return std::chrono::milliseconds(ms - ms / 4 + spread(rng_));
}

void RequestQueue::Add(uint64_t corr, MsgType type, std::string frame,
                       std::string client_msg_id, bool app, Time now) {
  Request r;
  r.corr = corr;
  r.type = type;
  r.frame = std::move(frame);
  r.client_msg_id = std::move(client_msg_id);
  r.app = app;
  r.sent = now;
  r.deadline = now + std::chrono::milliseconds(options_.timeout_ms);
  r.retry_at = now + Jittered(options_.retry_ms);
  if (type == MsgType::kSend) {
    sends_[r.client_msg_id] = corr;
    ++sends_unanswered_;
  }
  if (type == MsgType::kHello) {
    transmit_(r.frame);
    Due(r);
    pending_[corr] = std::move(r);
    return;
  }
  pending_[corr] = std::move(r);
  (IsWrite(type) ? queued_writes_ : queued_).push_back(corr);
  Pump(now);
}

void RequestQueue::Open(Time now) {
  open_ = true;
  for (auto& [corr, r] : pending_) {
    if (!r.launched) continue;
    transmit_(r.frame);
    r.sent = now;
    r.retry_at = now + Jittered(options_.retry_ms);
    Due(r);
  }
  Pump(now);
}

void RequestQueue::Pump(Time now) {
  if (!open_) return;
  const bool writes_open = now >= writes_held_until_;
  while (launched_ < options_.max_in_flight) {
    // The older of the next read and the next write, if the write may go.
    bool write = writes_open && !queued_writes_.empty() &&
                 writes_launched_ < write_window_;
    if (!write && queued_.empty()) break;
    write =
        write && (queued_.empty() || queued_writes_.front() < queued_.front());
    std::deque<uint64_t>& queue = write ? queued_writes_ : queued_;
    auto it = pending_.find(queue.front());
    queue.pop_front();
    if (it == pending_.end()) continue;
    if (write) ++writes_launched_;
    Launch(&it->second, now);
  }
}

void RequestQueue::Launch(Request* r, Time now) {
  r->launched = true;
  ++launched_;
  r->sent = now;
  r->deadline = now + std::chrono::milliseconds(options_.timeout_ms);
  r->retry_at = now + Jittered(options_.retry_ms);
  Due(*r);
  transmit_(r->frame);
}

std::vector<RequestQueue::Request> RequestQueue::Tick(Time now) {
  std::vector<Request> expired;
  // The scan of the requests on the wire only when one of them is due
  // (with hundreds in flight, a scan at every Poll was most of a busy
  // client's time).
  if (now < next_due_) return expired;
  next_due_ = Time::max();
  for (auto it = pending_.begin(); it != pending_.end();) {
    Request& r = it->second;
    if (!r.launched && r.type != MsgType::kHello) {
      ++it;
      continue;
    }
    if (now >= r.deadline) {
      expired.push_back(r);
      it = Finish(it);
      continue;
    }
    if ((open_ || r.type == MsgType::kHello) && now >= r.retry_at) {
      // Unanswered: again, less and less often (up to four times
      // retry_ms), with jitter.
      transmit_(r.frame);
      r.sent = now;
      r.retries = std::min(r.retries + 1, 2);
      r.retry_at = now + Jittered(options_.retry_ms << r.retries);
    }
    Due(r);
    ++it;
  }
  return expired;
}

const RequestQueue::Request* RequestQueue::Find(uint64_t corr) const {
  auto it = pending_.find(corr);
  return it == pending_.end() ? nullptr : &it->second;
}

bool RequestQueue::Passed(uint64_t corr) {
  auto it = pending_.find(corr);
  if (it == pending_.end()) return false;
  if (IsWrite(it->second.type)) WritePassed();
  if (!it->second.answered) return true;
  Finish(it);  // its answer was handed out already; its place is freed now
  return false;
}

void RequestQueue::Finish(uint64_t corr) {
  auto it = pending_.find(corr);
  if (it != pending_.end()) Finish(it);
}

RequestQueue::Map::iterator RequestQueue::Finish(Map::iterator it) {
  const Request& r = it->second;
  if (r.launched) {
    --launched_;
    if (IsWrite(r.type)) --writes_launched_;
  }
  if (r.type == MsgType::kSend) {
    sends_.erase(r.client_msg_id);
    if (!r.answered) --sends_unanswered_;
  }
  return pending_.erase(it);
}

std::optional<RequestQueue::Request> RequestQueue::Refused(uint64_t corr,
                                                           ErrorCode code,
                                                           Time now) {
  auto it = pending_.find(corr);
  if (it == pending_.end()) return std::nullopt;
  Request& r = it->second;
  if (r.answered && !IsRetryable(code)) {
    Finish(it);
    return std::nullopt;
  }
  // An answer to an earlier copy of a write held back (below): it goes
  // again anyway.
  if (IsWrite(r.type) && !r.launched) return std::nullopt;
  if (code == ErrorCode::kBusy && IsWrite(r.type)) {
    if (r.answered) {
      Finish(it);
    } else {
      HoldWrite(it, now);
    }
    return std::nullopt;
  }
  if (IsRetryable(code) && now < r.deadline) {
    // Sent again soon, then less and less often, up to retry_ms.
    r.backoff_ms =
        std::min(options_.retry_ms, r.backoff_ms == 0 ? 50 : r.backoff_ms * 2);
    r.retry_at = now + Jittered(r.backoff_ms);
    Due(r);
    return std::nullopt;
  }
  Request failed = r;
  Finish(it);
  if (failed.answered) return std::nullopt;
  return failed;
}

void RequestQueue::HoldWrite(Map::iterator it, Time now) {
  it->second.launched = false;
  --launched_;
  --writes_launched_;
  queued_writes_.insert(
      std::lower_bound(queued_writes_.begin(), queued_writes_.end(), it->first),
      it->first);
  write_window_ = 1;
  // The refusals of the writes that were on the wire together come
  // together: the first one sets the hold.
  if (now >= writes_held_until_) {
    write_backoff_ms_ = std::min(
        options_.retry_ms, write_backoff_ms_ == 0 ? 50 : write_backoff_ms_ * 2);
    writes_held_until_ = now + Jittered(write_backoff_ms_);
  }
}

void RequestQueue::WritePassed() {
  write_backoff_ms_ = 0;
  if (write_window_ < options_.max_in_flight) ++write_window_;
}

std::optional<uint64_t> RequestQueue::AnswerSend(
    const std::string& client_msg_id) {
  auto send = sends_.find(client_msg_id);
  if (send == sends_.end()) return std::nullopt;
  const uint64_t corr = send->second;
  sends_.erase(send);
  auto it = pending_.find(corr);
  if (it != pending_.end() && !it->second.answered) {
    it->second.answered = true;
    --sends_unanswered_;
  }
  return corr;
}

void RequestQueue::ResendIfDue(uint64_t corr, Time now) {
  auto it = pending_.find(corr);
  if (it == pending_.end() || now < it->second.retry_at) return;
  Request& r = it->second;
  transmit_(r.frame);
  r.sent = now;
  r.retry_at = now + Jittered(options_.retry_ms);
  Due(r);
}

void RequestQueue::Resend(uint64_t corr) {
  auto it = pending_.find(corr);
  if (it != pending_.end()) transmit_(it->second.frame);
}

}  // namespace natter
