// Tensor element types, one table for the whole native core: the ONNX element type number, the
// name the JS side uses, the KServe v2 datatype and the size of an element. ONNX Runtime sessions
// (ort/ort_api.*) and the KServe JSON codec and its fast path (ort/kserve_json.*,
// ort/ort_kserve_json.cc) all read it. Plain C++17, no ONNX Runtime headers: the codec is built
// without them. (The TypeScript side has its own table, src/tensor/dtype.ts; names agree.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mlos {

// Every ONNX tensor element type. The first ten are the ones the KServe JSON codec reads and
// writes (kserve::Elem is this type; the codec only ever holds those ten).
enum class DType : uint8_t {
  kFloat32, kFloat64, kInt8, kInt16, kInt32, kInt64, kUint8, kUint16, kUint32, kBool,
  kUint64, kFloat16, kBfloat16, kString, kComplex64, kComplex128,
  kFloat8E4M3FN, kFloat8E4M3FNUZ, kFloat8E5M2, kFloat8E5M2FNUZ, kUint4, kInt4,
};

struct DTypeInfo {
  DType dtype;
  // ONNX's TensorProto.DataType number, which is ONNX Runtime's ONNXTensorElementDataType value
  // (ort/ort_api.cc checks each against ORT's enum at compile time).
  int32_t onnx;
  // ONNX's lower-case name, as the JS side (src/tensor/dtype.ts) and axon.yaml spell it.
  const char* name;
  // The KServe v2 datatype ("FP32") for the types the fast path's JSON codec handles; nullptr for
  // the others, whose requests the JS path answers.
  const char* kserve;
  // Bits per element: 4 for int4/uint4 (packed two to a byte), 0 for string.
  uint32_t bits;
};

// In DType's order (DTypeOf indexes it; checked below).
inline constexpr DTypeInfo kDTypes[] = {
    {DType::kFloat32, 1, "float32", "FP32", 32},
    {DType::kFloat64, 11, "float64", "FP64", 64},
    {DType::kInt8, 3, "int8", "INT8", 8},
    {DType::kInt16, 5, "int16", "INT16", 16},
    {DType::kInt32, 6, "int32", "INT32", 32},
    {DType::kInt64, 7, "int64", "INT64", 64},
    {DType::kUint8, 2, "uint8", "UINT8", 8},
    {DType::kUint16, 4, "uint16", "UINT16", 16},
    {DType::kUint32, 12, "uint32", "UINT32", 32},
    {DType::kBool, 9, "bool", "BOOL", 8},
    {DType::kUint64, 13, "uint64", nullptr, 64},
    {DType::kFloat16, 10, "float16", nullptr, 16},
    {DType::kBfloat16, 16, "bfloat16", nullptr, 16},
    {DType::kString, 8, "string", nullptr, 0},
    {DType::kComplex64, 14, "complex64", nullptr, 64},
    {DType::kComplex128, 15, "complex128", nullptr, 128},
    {DType::kFloat8E4M3FN, 17, "float8e4m3fn", nullptr, 8},
    {DType::kFloat8E4M3FNUZ, 18, "float8e4m3fnuz", nullptr, 8},
    {DType::kFloat8E5M2, 19, "float8e5m2", nullptr, 8},
    {DType::kFloat8E5M2FNUZ, 20, "float8e5m2fnuz", nullptr, 8},
    {DType::kUint4, 21, "uint4", nullptr, 4},
    {DType::kInt4, 22, "int4", nullptr, 4},
};
inline constexpr size_t kDTypeCount = sizeof kDTypes / sizeof kDTypes[0];

namespace dtype_detail {
constexpr bool InDTypeOrder() {
  for (size_t i = 0; i < kDTypeCount; ++i) {
    if (static_cast<size_t>(kDTypes[i].dtype) != i) return false;
  }
  return true;
}
}  // namespace dtype_detail
static_assert(dtype_detail::InDTypeOrder(), "kDTypes must list the types in DType's order");
static_assert(kDTypeCount == static_cast<size_t>(DType::kInt4) + 1, "kDTypes must list every DType");

constexpr const DTypeInfo& DTypeOf(DType d) { return kDTypes[static_cast<size_t>(d)]; }

// nullptr for an unknown name / number / datatype.
inline const DTypeInfo* DTypeByName(std::string_view name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}
inline const DTypeInfo* DTypeByOnnx(int32_t onnx) {
  for (const auto& d : kDTypes) {
    if (onnx == d.onnx) return &d;
  }
  return nullptr;
}
// Only the types the KServe JSON codec handles have a datatype here.
inline const DTypeInfo* DTypeByKserve(std::string_view datatype) {
  for (const auto& d : kDTypes) {
    if (d.kserve != nullptr && datatype == d.kserve) return &d;
  }
  return nullptr;
}

// Bytes that `elements` elements of `d` occupy (sub-byte types packed, rounded up).
inline uint64_t DTypeBytes(const DTypeInfo& d, uint64_t elements) { return (elements * d.bits + 7) / 8; }

}  // namespace mlos
