// Argmax: first index of the maximum, NaNs ignored, every length around the 8-lane blocking.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "sampling/argmax.h"
#include "test_harness.h"

using mlos::sampling::Argmax;

TEST(argmax_matches_a_plain_scan_at_every_length) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-10.f, 10.f);
  for (size_t n = 1; n < 70; ++n) {
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<float> v(n);
      for (auto& x : v) x = dist(rng);
      size_t want = 0;
      for (size_t i = 1; i < n; ++i) if (v[i] > v[want]) want = i;
      CHECK_EQ(Argmax(v.data(), n), want);
    }
  }
}

TEST(argmax_takes_the_first_of_ties_and_ignores_nan) {
  std::vector<float> v = {1, 5, 3, 5, 5, 0, 0, 0, 0, 5};
  CHECK_EQ(Argmax(v.data(), v.size()), 1u);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> w = {nan, -1, nan, 2, nan, 2, nan, nan, nan, nan, nan};
  CHECK_EQ(Argmax(w.data(), w.size()), 3u);
  std::vector<float> all(9, nan);
  CHECK_EQ(Argmax(all.data(), all.size()), 0u);
  CHECK_EQ(Argmax(nullptr, 0), 0u);
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> neg(11, -inf);
  CHECK_EQ(Argmax(neg.data(), neg.size()), 0u);
  neg[10] = inf;
  CHECK_EQ(Argmax(neg.data(), neg.size()), 10u);
}

TEST(argmax_of_a_vocabulary_sized_row) {
  std::vector<float> v(50257);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& x : v) x = dist(rng);
  v[31337] = 100.f;
  CHECK_EQ(Argmax(v.data(), v.size()), 31337u);
}
int main() { return mlos_test::RunAll(); }
