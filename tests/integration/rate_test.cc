// Each user's rate of writes at its home shard (natter-stored(8): user-rate,
// user-burst): a user who writes too fast is slowed down to it, what it
// writes is bounded by rate × time + burst, its messages keep their order,
// and the shard's other users are served as before.
#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/devices.h"

using namespace natter;

namespace {

// Small, so that a test takes seconds.
constexpr int kRate = 40, kBurst = 40;
const std::string kRateConf = "[stored]\nuser-rate = " + std::to_string(kRate) +
                              "\nuser-burst = " + std::to_string(kBurst);

double StoredMetric(const TestCell& cell, const char* name) {
  return CellStatus(cell)["stored-0"]["metrics"][name].get<double>();
}

// What a send costs its user: one unit, and one for each full KiB of text.
int Cost(const std::string& text) {
  return 1 + static_cast<int>(text.size() / 1024);
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

TEST_CASE(
    "a user over its rate is slowed down to it, in order, while another user "
    "of its shard "
    "is served as before") {
  TestCell cell(1, kRateConf);
  const UserId flooder(1), bob(2), carol(3);
  auto f = Open(cell, flooder, "bot");
  auto c = Open(cell, carol, "phone");
  AwaitCaughtUp({f.get(), c.get()});

  // 120 messages at once, every other one over 2 KiB (3 units): 240 units,
  // 200 past the burst, so 5 s at the rate.
  const int kMessages = 120;
  std::map<std::string, int> index;  // client_msg_id -> order sent
  std::vector<std::string> texts;
  auto start = Clock::now();
  for (int i = 0; i < kMessages; ++i) {
    texts.push_back(i % 2 == 1 ? std::string(2100, 'x') + std::to_string(i)
                               : "short " + std::to_string(i));
    index[f->client->Send(bob, texts.back())] = i;
  }
  // Meanwhile carol sends, one message at a time.
  const int kCarol = 20;
  int carol_sent = 0;
  size_t f_when_carol_done = 0;  // the flood's receipts when carol had all hers
  size_t f_seen = 0, units = 0, f_processed = 0, c_seen = 0, c_processed = 0;
  int last_index = -1;
  bool in_order = true, within_bound = true;
  double took = 0;
  auto step = [&] {
    if (carol_sent == static_cast<int>(c_processed) && carol_sent < kCarol) {
      c->client->Send(bob, "carol " + std::to_string(carol_sent++));
    }
    f->Poll(2);
    c->Poll(2);
    for (; f_seen < f->got.size(); ++f_seen) {
      const Incoming& in = f->got[f_seen];
      if (in.kind != Incoming::Kind::kProcessed) continue;
      int i = index.at(in.processed.client_msg_id);
      in_order = in_order && i > last_index;
      last_index = i;
      units += Cost(texts[i]);
      // Admitted no sooner than the receipt came: the bound holds here.
      double t = SecondsSince(start);
      within_bound = within_bound && units <= kBurst + kRate * t;
      if (++f_processed == static_cast<size_t>(kMessages)) took = t;
    }
    for (; c_seen < c->got.size(); ++c_seen) {
      if (c->got[c_seen].kind != Incoming::Kind::kProcessed) continue;
      if (++c_processed == kCarol) f_when_carol_done = f_processed;
    }
  };
  WaitUntil(
      "the flood's sends and carol's to be processed",
      [&] {
        return f_processed >= static_cast<size_t>(kMessages) &&
               c_processed >= kCarol;
      },
      60, step,
      [&] {
        return std::to_string(f_processed) + " and " +
               std::to_string(c_processed) + " are";
      });
  INFO("the flood took " << took << " s; carol was done after "
                         << f_when_carol_done << " of its receipts");
  REQUIRE(f_processed == static_cast<size_t>(kMessages));
  REQUIRE(c_processed == static_cast<size_t>(kCarol));
  CHECK(within_bound);
  CHECK(took >= static_cast<double>(2 * kMessages - kBurst) / kRate - 0.1);
  CHECK(in_order);  // a refused send is not overtaken by the ones behind it
  CHECK(f->Count(Incoming::Kind::kError) == 0);  // busy is retried, not shown
  CHECK(c->Count(Incoming::Kind::kError) == 0);
  // carol's sends, one after another, were not held behind the flood.
  CHECK(f_when_carol_done < static_cast<size_t>(kMessages));
  CHECK(StoredMetric(cell, "natter_stored_rate_refused_total") > 0);
}

TEST_CASE(
    "natter send of more lines than the rate allows slows down, exits 0 and "
    "keeps "
    "their order") {
  TestCell cell(1, kRateConf);
  const int kLines = 100;  // 60 past the burst: 1.5 s at the rate
  std::string out, err;
  auto start = Clock::now();
  int code = RunCommand("seq 1 " + std::to_string(kLines) + " | " +
                            cell.NatterArgs(1) + " --timeout 5 send 2",
                        &out, &err);
  double took = SecondsSince(start);
  INFO(err);
  REQUIRE(code == 0);
  CHECK(std::count(out.begin(), out.end(), '\n') == kLines);
  CHECK(took >= static_cast<double>(kLines - kBurst) / kRate - 0.1);
  CHECK(StoredMetric(cell, "natter_stored_rate_refused_total") > 0);

  std::string history;
  REQUIRE(RunCommand(cell.NatterArgs(2) + " --json history 1 --limit 500",
                     &history) == 0);
  std::istringstream lines(history);
  int next = 1;
  for (std::string line; std::getline(lines, line);) {
    CHECK(nlohmann::json::parse(line)["text"] == std::to_string(next));
    ++next;
  }
  CHECK(next == kLines + 1);
}

TEST_CASE("user-rate 0 lets a user write as fast as it can") {
  TestCell cell(1, "[stored]\nuser-rate = 0");
  auto f = Open(cell, UserId(1), "bot");
  AwaitCaughtUp({f.get()});
  // Twice the default burst, at once.
  const size_t kMessages = 1000;
  for (size_t i = 0; i < kMessages; ++i)
    f->client->Send(UserId(2), "m" + std::to_string(i));
  PollUntil(
      {f.get()}, "all 1000 sends to be processed",
      [&] { return f->Count(Incoming::Kind::kProcessed) == kMessages; }, 60);
  REQUIRE(f->Count(Incoming::Kind::kProcessed) == kMessages);
  CHECK(StoredMetric(cell, "natter_stored_rate_refused_total") == 0);
}
