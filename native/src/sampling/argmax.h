// Picking the most likely token: the index of the largest value of a logits row. The generation
// engine does it for every sequence at every step (a 50k-token vocabulary, 32 sequences); a plain
// JavaScript loop spends ~50-100 us per row on it. On x86-64 it runs on SSE2 or, where the CPU has
// it, AVX2 (picked once at run time): the compiler's scalar code had spent ~14% of a 32-stream
// generation's CPU time here.
#pragma once

#include <cstddef>
#include <vector>

namespace mlos::sampling {

// The index of the largest value of values[0, n) (the first one on ties); NaNs never win. 0 when
// n is 0 or every value is NaN.
size_t Argmax(const float* values, size_t n);

// Every implementation this CPU can run ("scalar", "sse2", "avx2"), each with Argmax's contract,
// so that tests check them all and not only the one Argmax picked.
struct ArgmaxVariant {
  const char* name;
  size_t (*fn)(const float* values, size_t n);
};
std::vector<ArgmaxVariant> ArgmaxVariants();

}  // namespace mlos::sampling
