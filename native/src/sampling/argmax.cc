// See argmax.h.
#include "sampling/argmax.h"

#include <limits>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define MLOS_ARGMAX_X86 1
#endif

namespace mlos::sampling {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The first position of `best` in values[from, n), scalar. best is never NaN, so NaNs never match.
size_t FirstEqual(const float* values, size_t from, size_t n, float best) {
  for (size_t j = from; j < n; ++j) {
    if (values[j] == best) return j;
  }
  return 0;  // empty, or nothing but NaN (and -inf rows end on their first element)
}

// Both passes go over the row once each: the maximum first, then its first position (the row is in
// cache by then). Tracking the index beside the maximum in one pass needs twice the registers and
// a blend per step; two cheap passes are faster at these sizes, and first-of-ties comes for free.

size_t ArgmaxScalar(const float* values, size_t n) {
  // 8 independent lanes, so that no lane waits on another's comparison.
  constexpr size_t kLanes = 8;
  float lane[kLanes];
  for (size_t l = 0; l < kLanes; ++l) lane[l] = kNegInf;
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) {
      const float v = values[i + l];
      lane[l] = v > lane[l] ? v : lane[l];  // false for NaN: NaN never replaces a value
    }
  }
  float best = kNegInf;
  for (size_t l = 0; l < kLanes; ++l) best = lane[l] > best ? lane[l] : best;
  for (; i < n; ++i) best = values[i] > best ? values[i] : best;
  return FirstEqual(values, 0, n, best);
}

#ifdef MLOS_ARGMAX_X86

// SSE2 is part of x86-64, so this needs no check. maxps(v, m) returns m when v is NaN (it returns
// its second operand when the two are unordered), so a NaN never replaces a value.
size_t ArgmaxSse2(const float* values, size_t n) {
  __m128 m0 = _mm_set1_ps(kNegInf), m1 = m0, m2 = m0, m3 = m0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    m0 = _mm_max_ps(_mm_loadu_ps(values + i), m0);
    m1 = _mm_max_ps(_mm_loadu_ps(values + i + 4), m1);
    m2 = _mm_max_ps(_mm_loadu_ps(values + i + 8), m2);
    m3 = _mm_max_ps(_mm_loadu_ps(values + i + 12), m3);
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3)));
  float best = kNegInf;
  for (float l : lanes) best = l > best ? l : best;
  for (; i < n; ++i) best = values[i] > best ? values[i] : best;
  const __m128 want = _mm_set1_ps(best);
  size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const int hits = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(values + j), want));
    if (hits != 0) return j + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(hits)));
  }
  return FirstEqual(values, j, n, best);
}

__attribute__((target("avx2"))) size_t ArgmaxAvx2(const float* values, size_t n) {
  __m256 m0 = _mm256_set1_ps(kNegInf), m1 = m0, m2 = m0, m3 = m0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm256_max_ps(_mm256_loadu_ps(values + i), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(values + i + 8), m1);
    m2 = _mm256_max_ps(_mm256_loadu_ps(values + i + 16), m2);
    m3 = _mm256_max_ps(_mm256_loadu_ps(values + i + 24), m3);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
  float best = kNegInf;
  for (float l : lanes) best = l > best ? l : best;
  for (; i < n; ++i) best = values[i] > best ? values[i] : best;
  const __m256 want = _mm256_set1_ps(best);
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const int hits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(values + j), want, _CMP_EQ_OQ));
    if (hits != 0) return j + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(hits)));
  }
  return FirstEqual(values, j, n, best);
}

using ArgmaxFn = size_t (*)(const float*, size_t);

bool HasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

#endif

}  // namespace

size_t Argmax(const float* values, size_t n) {
#ifdef MLOS_ARGMAX_X86
  static const ArgmaxFn impl = HasAvx2() ? ArgmaxAvx2 : ArgmaxSse2;
  return impl(values, n);
#else
  return ArgmaxScalar(values, n);
#endif
}

std::vector<ArgmaxVariant> ArgmaxVariants() {
  std::vector<ArgmaxVariant> out{{"scalar", ArgmaxScalar}};
#ifdef MLOS_ARGMAX_X86
  out.push_back({"sse2", ArgmaxSse2});
  if (HasAvx2()) out.push_back({"avx2", ArgmaxAvx2});
#endif
  return out;
}

}  // namespace mlos::sampling
