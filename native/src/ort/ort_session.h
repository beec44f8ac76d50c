// The OrtSession JS class: an ONNX Runtime inference session over the C API (ort_api.h).
//
//   ortInit(libraryPath) -> { version, apiVersion, path }   opens the library (once per process)
//   new OrtSession(modelPath, { intraOpThreads?, interOpThreads?, graphOptimizationLevel?,
//                               executionMode?, modelBytes? })
//                             modelBytes: a Uint8Array of the model used instead of the file
//                             (a rewritten graph); external data is still read beside modelPath
//   .inputs / .outputs        [{ name, type, dtype, shape, symbolicShape }] (shape: -1 = dynamic;
//                             symbolicShape: the dimension's name or null)
//   .overridable              the same, for initializers that are also graph inputs: not inputs
//                             a run needs, but a run may feed them (their default is replaced)
//   .run(feeds, outputNames?, preallocatedOutputs?, runOptions?) -> Promise<outputs>
//                             Session::Run on a libuv worker thread; many may be in flight
//   .runSync(feeds, outputNames?, preallocatedOutputs?, runOptions?) -> outputs   on this thread
//   .bind(feeds, outputNames, preallocatedOutputs) -> bound    a run prepared once (all outputs
//                             preallocated): its OrtValues over the buffers are made once
//   .runBound(bound) -> runMicros   Session::Run on a bound run's buffers, on this thread
//   .terminate(tag?)          asks every run in flight (or those with runOptions.tag == tag) to
//                             stop (they reject with ORT_TERMINATED)
//   OrtSession.open(modelPath, options?) -> Promise<OrtSession>   CreateSession on a worker thread
//   .prepareKserveJson({ modelName, modelVersion, inputs: [{ name, dtype, shape }], outputs:
//                             [{ name, shape }], stats: Float64Array(1) }) -> { usable,
//                             batchable }   sets up the KServe v2 JSON fast path
//                             (ort_kserve_json.cc); usable is false when the model has a dtype it
//                             does not take (then every run declines)
//   .runKserveJson(body, out) -> length   decodes a KServe v2 JSON infer request, runs it on
//                             this thread and writes the encoded response into `out` when it fits
//                             (else .readKserveResponse(bigger) copies it); -1 (and nothing ran)
//                             when the fast path declines the request
//   .runKserveJsonBatch(bodies, out, lengths) -> total length   several requests stacked into
//                             one run along the batch dimension; each response's length in
//                             lengths (-1: declined)
//   .runKserveGrpc(body, out), .runKserveGrpcBatch(bodies, out, lengths)   the same for KServe v2
//                             gRPC ModelInferRequest / ModelInferResponse protobuf bytes
//                             (kserve_grpc.h), on the same prepared path
//   .release()                releases the session once the runs in flight are done; later
//                             calls throw CLOSED
//
// feeds: { [inputName]: { dtype, shape, data: ArrayBuffer | TypedArray | DataView } }. The tensor
// is created over the caller's memory (CreateTensorWithDataAsOrtValue, no copy) after its byte
// length was checked against dtype x shape; the JS objects stay referenced until the run is done.
// preallocatedOutputs: the same form, keyed by output name: ORT writes into that memory (the
// OrtValue is passed in Run's outputs array) and the result carries the caller's own `data`
// object. Other outputs are allocated by ORT and returned as external ArrayBuffers over the
// OrtValue's data, whose finaliser releases the OrtValue (no copy).
// runOptions: { timeoutMs?, tag?, debugAddresses? }: a run still going after timeoutMs is
// terminated. Results carry a non-enumerable runMicros: how long Session::Run took.
#pragma once

#include <napi.h>

#include <memory>

#include "common/addon.h"

namespace mlos {

struct OrtSessionState;
struct KserveJsonPath;
struct KserveWireFormat;  // the JSON or the gRPC codec of the fast path (ort_kserve_json.cc)
// Deletes a KserveJsonPath where its type is complete (ort_kserve_json.cc).
struct KserveJsonPathDeleter {
  void operator()(KserveJsonPath* p) const;
};

class OrtSessionWrap : public Napi::ObjectWrap<OrtSessionWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  explicit OrtSessionWrap(const Napi::CallbackInfo& info);
  ~OrtSessionWrap() override;

  static OrtSessionWrap* FromReceiver(const Napi::CallbackInfo& info);
  // The session behind a JS OrtSession (shared with whoever runs it), or nullptr when `value` is
  // not an OrtSession or was released (the IPC door runs it on its own threads).
  static std::shared_ptr<OrtSessionState> StateOf(Napi::Value value);

 private:
  template <Napi::Value (OrtSessionWrap::*Method)(const Napi::CallbackInfo&)>
  static Napi::Value Checked(const Napi::CallbackInfo& info) {
    return (FromReceiver(info)->*Method)(info);
  }

  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value RunSync(const Napi::CallbackInfo& info);
  Napi::Value Bind(const Napi::CallbackInfo& info);
  Napi::Value RunBound(const Napi::CallbackInfo& info);
  Napi::Value Terminate(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value IsReleased(const Napi::CallbackInfo& info);
  Napi::Value PrepareKserveJson(const Napi::CallbackInfo& info);  // ort_kserve_json.cc
  Napi::Value RunKserveJson(const Napi::CallbackInfo& info);      // ort_kserve_json.cc
  Napi::Value RunKserveJsonBatch(const Napi::CallbackInfo& info); // ort_kserve_json.cc
  Napi::Value RunKserveGrpc(const Napi::CallbackInfo& info);      // ort_kserve_json.cc
  Napi::Value RunKserveGrpcBatch(const Napi::CallbackInfo& info); // ort_kserve_json.cc
  Napi::Value ReadKserveResponse(const Napi::CallbackInfo& info); // ort_kserve_json.cc
  Napi::Value RunKserve(const Napi::CallbackInfo& info, const KserveWireFormat& format);
  Napi::Value RunKserveBatch(const Napi::CallbackInfo& info, const KserveWireFormat& format);

  std::shared_ptr<OrtSessionState> Open(Napi::Env env);

  std::shared_ptr<OrtSessionState> state_;
  std::string path_;
  std::unique_ptr<KserveJsonPath, KserveJsonPathDeleter> kserve_;  // prepareKserveJson's setup and scratch buffers
};

// ortInit(libraryPath) -> { version, apiVersion, path }
Napi::Value OrtInit(const Napi::CallbackInfo& info);

}  // namespace mlos
