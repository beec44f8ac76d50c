// See argmax.h.
#include "sampling/argmax.h"

#include <limits>

namespace mlos::sampling {

size_t Argmax(const float* values, size_t n) {
  // Pass 1: the maximum, over 8 independent lanes so that the compiler vectorises it and no lane
  // waits on another's comparison (a single running maximum is one long dependency chain).
  constexpr size_t kLanes = 8;
  float lane[kLanes];
  for (size_t l = 0; l < kLanes; ++l) lane[l] = -std::numeric_limits<float>::infinity();
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) {
      const float v = values[i + l];
      lane[l] = v > lane[l] ? v : lane[l];  // false for NaN: NaN never replaces a value
    }
  }
  float best = -std::numeric_limits<float>::infinity();
  for (size_t l = 0; l < kLanes; ++l) best = lane[l] > best ? lane[l] : best;
  for (; i < n; ++i) best = values[i] > best ? values[i] : best;
  // Pass 2: its first position (the row is in cache now).
  for (size_t j = 0; j < n; ++j) {
    if (values[j] == best) return j;
  }
  return 0;  // empty, or nothing but NaN (and -inf rows end above on their first element)
}

}  // namespace mlos::sampling
