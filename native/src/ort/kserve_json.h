// The KServe v2 / Open Inference Protocol JSON codec for the server's fast path: decodes an infer
// request's tensors straight into typed buffers and encodes the response, with no JS object in
// between. Plain C++17: no Node-API, no ONNX Runtime.
//
// It is deliberately partial. DecodeInferRequest accepts only requests that it understands
// completely and that are valid for the model; for anything else (malformed JSON, a wrong shape or
// dtype, BYTES tensors, binary data, `parameters`, an `outputs` selection, escapes in names...) it
// declines, and the caller hands the same body to the general path in JS, which owns every error
// message. So the fast path can never answer differently from the general one: it either gives
// the same response or none.
//
// The response is byte-for-byte what the JS path writes with JSON.stringify: numbers are written
// as JavaScript's Number::toString writes them (AppendJsNumber), int64 values beyond 2^53 as
// strings, NaN and infinities as null.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"

namespace mlos::kserve {

// An element type this codec reads and writes: one of the DTypes with a KServe datatype in
// common/dtype.h (the first ten; the codec declines every other type).
using Elem = DType;

// Bytes per element (every type the codec handles is a whole number of bytes).
inline size_t ElemSize(Elem e) { return DTypeOf(e).bits / 8; }
// The KServe datatype name ("FP32", "INT64", "BOOL", ...).
inline const char* DatatypeName(Elem e) {
  const char* name = DTypeOf(e).kserve;
  return name != nullptr ? name : "";
}

// One dimension of an input's signature: a fixed size (>= 0), or dynamic (size < 0), optionally
// named (`symbol`): every input dimension with the same name must have the same size.
struct Dim {
  int64_t size = -1;
  std::string symbol;
};

struct InputSpec {
  std::string name;
  Elem elem = Elem::kFloat32;
  std::vector<Dim> dims;
};

// One decoded input: its shape and its elements as `elem` values, little-endian, packed.
struct DecodedInput {
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;
};

// A decoded request: one input per spec, in the specs' order. Kept between calls, its buffers keep
// their capacity (no allocation per request once warm).
struct DecodedRequest {
  std::vector<DecodedInput> inputs;
  std::string id;  // the request's "id" when it is a plain string
  bool hasId = false;
  // Scratch: the elements of the input being decoded, as JSON gave them.
  std::vector<double> values;
  // Scratch of the gRPC codec (kserve_grpc.h): the request's InferInputTensor messages and
  // raw_input_contents entries, as views of the body.
  std::vector<std::string_view> tensorMessages;
  std::vector<std::string_view> rawContents;
};

// Decodes `body` for a model whose inputs are `specs`. True when the request is fully understood
// and valid (every input present once, datatype, rank, fixed and named dimensions, element count
// and element values all right); false otherwise, with `out` unspecified. Never throws on input.
bool DecodeInferRequest(std::string_view body, const std::vector<InputSpec>& specs, DecodedRequest& out);

// The spec of a request's input named `name` with KServe datatype `datatype`: its index in
// `specs`, marked in `seen`; -1 when no input has that name, it was seen already, or the datatype
// is not the input's (the request is then declined).
int MatchInput(const std::vector<InputSpec>& specs, std::string_view name, std::string_view datatype,
               std::vector<bool>& seen);

// Whether `shape` fits `spec` (its rank and fixed dimensions) and holds exactly `elements`
// elements (a product that overflows holds none). Named dimensions are checked across inputs by
// SymbolsAgree once every input is decoded.
bool ShapeFits(const InputSpec& spec, const std::vector<int64_t>& shape, uint64_t elements);

// Whether every named dimension has the same size in every input that names it (checkInputs'
// rule); `req.inputs` holds one decoded input per spec.
bool SymbolsAgree(const std::vector<InputSpec>& specs, const DecodedRequest& req);

// One output tensor to encode.
struct OutputView {
  std::string_view name;
  Elem elem;
  const int64_t* shape;
  size_t rank;
  const void* data;  // `count` packed elements
  size_t count;
};

// Appends the response body: {"model_name","model_version"[,"id"],"outputs":[...]}.
void EncodeInferResponse(std::string& out, std::string_view modelName, std::string_view modelVersion,
                         const DecodedRequest& request, const OutputView* outputs, size_t count);

// Appends `v` as JavaScript's Number.prototype.toString writes it (the shortest digits that
// round-trip, in JS's choice of plain or exponent notation); NaN and infinities as null, as
// JSON.stringify writes them.
void AppendJsNumber(std::string& out, double v);

// Appends `s` as a JSON string literal, escaped as JSON.stringify escapes it.
void AppendJsonString(std::string& out, std::string_view s);

}  // namespace mlos::kserve
