// Model signatures the KServe codec tests decode requests for (kserve_json_test, kserve_grpc_test).
#pragma once

#include <vector>

#include "ort/kserve_json.h"

namespace kserve_test {

using mlos::kserve::Dim;
using mlos::kserve::Elem;
using mlos::kserve::InputSpec;

// The demo MLP's signature: x float32 [batch, 4].
inline std::vector<InputSpec> MlpSpecs() {
  InputSpec x;
  x.name = "x";
  x.elem = Elem::kFloat32;
  x.dims = {Dim{-1, "batch"}, Dim{4, ""}};
  return {x};
}

// Two inputs sharing a named dimension: a int64 [n], b bool [n, m].
inline std::vector<InputSpec> PairSpecs() {
  InputSpec a, b;
  a.name = "a";
  a.elem = Elem::kInt64;
  a.dims = {Dim{-1, "n"}};
  b.name = "b";
  b.elem = Elem::kBool;
  b.dims = {Dim{-1, "n"}, Dim{-1, ""}};
  return {a, b};
}

}  // namespace kserve_test
