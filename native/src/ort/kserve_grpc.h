// The KServe v2 gRPC codec for the server's fast path: `inference.ModelInferRequest` protobuf bytes
// in, `inference.ModelInferResponse` protobuf bytes out (proto/grpc_service.proto), sharing the
// JSON codec's request model (kserve_json.h). Plain C++17: no Node-API, no ONNX Runtime, no
// protobuf runtime (the two messages are read and written field by field on the wire format).
//
// Like the JSON codec it is deliberately partial: DecodeModelInferRequest accepts only requests
// whose every input comes in `raw_input_contents` and that carry nothing else it would have to
// interpret (request or tensor `parameters`, typed `contents`, an `outputs` selection, unknown
// fields, an `id` that is not plain ASCII); everything else is declined and the gRPC door decodes
// the same bytes in JS, on the general path, which owns every error message.
//
// The response is byte-for-byte what the door's protobuf encoder (protobufjs, through
// @grpc/proto-loader) writes for the general path's answer: fields in declaration order,
// model_name, model_version and id always present (empty strings included), shapes packed.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "ort/kserve_json.h"

namespace mlos::kserve {

// Decodes a ModelInferRequest for a model whose inputs are `specs` (model_name and model_version
// are not read: the caller routed the request). True when the request is fully understood and
// valid, with `out.inputs` filled (raw bytes copied) and `out.id` set; false otherwise, with `out`
// unspecified. Never throws on input.
bool DecodeModelInferRequest(std::string_view body, const std::vector<InputSpec>& specs, DecodedRequest& out);

// Appends a ModelInferResponse: model name, version, the request's id, one InferOutputTensor per
// output (name, datatype, shape) and each output's bytes in raw_output_contents, in order.
void EncodeModelInferResponse(std::string& out, std::string_view modelName, std::string_view modelVersion,
                              const DecodedRequest& request, const OutputView* outputs, size_t count);

}  // namespace mlos::kserve
