// Argmax: first index of the maximum, NaNs ignored, every length around the lane blockings (8
// scalar lanes, 16 floats per SSE2 step, 32 per AVX2 step), for every implementation this CPU runs.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "sampling/argmax.h"
#include "test_harness.h"

using mlos::sampling::Argmax;
using mlos::sampling::ArgmaxVariants;

TEST(argmax_matches_a_plain_scan_at_every_length) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-10.f, 10.f);
  for (size_t n = 1; n < 100; ++n) {
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<float> v(n);
      for (auto& x : v) x = dist(rng);
      if (rep % 4 == 1) v[rng() % n] = v[rng() % n];  // sometimes a tie
      size_t want = 0;
      for (size_t i = 1; i < n; ++i) if (v[i] > v[want]) want = i;
      CHECK_EQ(Argmax(v.data(), n), want);
      for (const auto& variant : ArgmaxVariants()) CHECK_EQ(variant.fn(v.data(), n), want);
    }
  }
}

TEST(argmax_offers_its_vector_versions_on_x86_64) {
  const auto variants = ArgmaxVariants();
  CHECK(variants.size() >= 1u);
#if defined(__x86_64__)
  CHECK(variants.size() >= 2u);  // sse2 is part of x86-64
#endif
}

TEST(argmax_takes_the_first_of_ties_and_ignores_nan) {
  for (const auto& variant : ArgmaxVariants()) {
    const auto Argmax = variant.fn;
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
    // NaNs and ties across vector steps: the maximum repeated in several lanes, NaN everywhere else.
    std::vector<float> wide(77, nan);
    wide[40] = 3;
    wide[37] = 3;
    wide[70] = 3;
    wide[5] = -2;
    CHECK_EQ(Argmax(wide.data(), wide.size()), 37u);
  }
}

TEST(argmax_of_a_vocabulary_sized_row) {
  std::vector<float> v(50257);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& x : v) x = dist(rng);
  v[31337] = 100.f;
  CHECK_EQ(Argmax(v.data(), v.size()), 31337u);
  v[50256] = 100.f;  // a tie in the scalar tail
  v[31337] = 99.f;
  for (const auto& variant : ArgmaxVariants()) CHECK_EQ(variant.fn(v.data(), v.size()), 50256u);
}
int main() { return mlos_test::RunAll(); }
