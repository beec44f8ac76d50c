// Picking the most likely token: the index of the largest value of a logits row. The generation
// engine does it for every sequence at every step (a 50k-token vocabulary, 32 sequences); a plain
// JavaScript loop spends ~50-100 us per row on it, this ~10x less.
#pragma once

#include <cstddef>

namespace mlos::sampling {

// The index of the largest value of values[0, n) (the first one on ties); NaNs never win. 0 when
// n is 0 or every value is NaN.
size_t Argmax(const float* values, size_t n);

}  // namespace mlos::sampling
