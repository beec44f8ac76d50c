// The KServe v2 fast path of an OrtSession: request body in, response body out, on the JS thread,
// with no JS object per tensor, for the HTTP door's JSON bodies (kserve_json.h) and the gRPC
// door's ModelInfer protobuf messages (kserve_grpc.h). For models that run in microseconds, the JS work around a
// run (parsing the JSON into objects, pool tensors and their finalizers, the result objects,
// JSON.stringify) costs several times the run itself; here it is one call.
//
//   session.prepareKserveJson({ modelName, modelVersion, inputs, outputs, stats })
//       -> { usable, batchable }
//   session.runKserveJson(body: Uint8Array, out: Uint8Array) -> number
//   session.runKserveJsonBatch(bodies: Uint8Array[], out: Uint8Array, lengths: Int32Array) -> number
//   session.runKserveGrpc(body, out), session.runKserveGrpcBatch(bodies, out, lengths, maxRows)
//       the same for gRPC's ModelInferRequest -> ModelInferResponse
//   session.readKserveResponse(out: Uint8Array) -> number
//
// `inputs` is the model's signature as the JS side checks it ({ name, dtype, shape } with
// dimensions as numbers, -1 or names), so both paths accept exactly the same requests.
// runKserveJson returns the response's length, having written it into `out` when it fits (else
// readKserveResponse copies it, until the next run, into a buffer large enough): the server's one
// reused buffer, so a request costs no allocation and no finalizer. It declines (returns -1,
// having run nothing) whatever the codec declines
// (kserve_json.h) and any run that fails: the caller then takes the general path, which reports
// the problem in its own words. `stats[0]` receives Session::Run's time in microseconds, and
// `stats[1]` (when present) a batched run's rows.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "common/errors.h"
#include "ort/kserve_grpc.h"
#include "ort/kserve_json.h"
#include "ort/ort_session.h"
#include "ort/ort_session_state.h"

namespace mlos {

namespace {

// The codec's element type for `d`, when the codec handles it (common/dtype.h: a KServe datatype).
bool CodecElem(const DTypeInfo* d, kserve::Elem* out) {
  if (d == nullptr || d->kserve == nullptr) return false;
  *out = d->dtype;
  return true;
}

std::string StringField(Napi::Env env, Napi::Object o, const char* key, const char* what) {
  Napi::Value v = o.Get(key);
  MLOS_REQUIRE_TYPE(v.IsString(), env, std::string(what) + "." + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// A signature's dimensions: numbers (-1: dynamic) or names.
std::vector<kserve::Dim> DimsOf(Napi::Env env, Napi::Value shape, const char* what) {
  MLOS_REQUIRE_TYPE(shape.IsArray(), env, std::string(what) + ": a shape must be an array");
  Napi::Array dims = shape.As<Napi::Array>();
  std::vector<kserve::Dim> out;
  for (uint32_t d = 0; d < dims.Length(); ++d) {
    Napi::Value dim = dims.Get(d);
    kserve::Dim k;
    if (dim.IsNumber()) {
      k.size = static_cast<int64_t>(dim.As<Napi::Number>().DoubleValue());
    } else {
      MLOS_REQUIRE_TYPE(dim.IsString(), env, std::string(what) + ": a dimension must be a number or a name");
      k.symbol = dim.As<Napi::String>().Utf8Value();
    }
    out.push_back(std::move(k));
  }
  return out;
}

// True for success; releases the status of a failure.
bool Ok(const OrtApi* api, OrtStatus* s) {
  if (s == nullptr) return true;
  api->ReleaseStatus(s);
  return false;
}

// An OrtValue over caller memory, made again only when the memory or the shape changed: the
// decoded inputs and the preallocated outputs live in buffers reused from request to request, so
// a warm path creates no OrtValue at all.
struct CachedValue {
  OrtValue* value = nullptr;
  const void* data = nullptr;
  size_t bytes = 0;
  std::vector<int64_t> shape;

  bool Set(const OrtApi* api, const OrtMemoryInfo* memory, void* d, size_t b, const std::vector<int64_t>& s,
           ONNXTensorElementDataType type) {
    if (value != nullptr && data == d && bytes == b && shape == s) return true;
    Release(api);
    if (!Ok(api, api->CreateTensorWithDataAsOrtValue(memory, d, b, s.data(), s.size(), type, &value))) {
      value = nullptr;
      return false;
    }
    data = d;
    bytes = b;
    shape = s;
    return true;
  }
  void Release(const OrtApi* api) {
    if (value != nullptr) api->ReleaseValue(value);
    value = nullptr;
  }
};

// One input tensor handed to Execute: its bytes and shape.
struct InputRef {
  void* data;
  size_t bytes;
  const std::vector<int64_t>* shape;
};

// An output of the fast path: its signature (to preallocate it when the inputs fix its shape).
struct OutputSpec {
  std::string name;
  kserve::Elem elem = kserve::Elem::kFloat32;
  std::vector<kserve::Dim> dims;
  // Preallocated run to run when its shape is known from the inputs' dimensions (else ORT
  // allocates it): the buffer, this run's shape, and the OrtValue over them.
  std::vector<unsigned char> buffer;
  std::vector<int64_t> shape;
  CachedValue cached;
};

}  // namespace

struct KserveJsonPath {
  std::string modelName;
  std::string modelVersion;
  std::vector<kserve::InputSpec> inputs;
  std::vector<OutputSpec> outputs;
  std::vector<const char*> inputNames;
  std::vector<const char*> outputNames;
  Napi::Reference<Napi::Float64Array> stats;
  double* statsData = nullptr;  // [0] Session::Run's time (µs); [1] a batched run's rows
  size_t statsLength = 0;
  // Set when ORT refused a preallocated output (the signature's shape was wrong): ORT allocates.
  bool noPrealloc = false;
  // Kept from call to call, so that a warm path allocates nothing.
  kserve::DecodedRequest request;
  std::string response;
  std::vector<CachedValue> inputValues;
  std::vector<OrtValue*> runInputs;
  std::vector<OrtValue*> runOutputs;
  std::vector<bool> ortAllocated;  // runOutputs[i] was allocated by ORT for this run
  std::vector<std::pair<const std::string*, int64_t>> bindings;
  std::vector<kserve::OutputView> views;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<InputRef> inputRefs;
  // runKserveJsonBatch: whether the model has a batch dimension (the first of every input and
  // output, one name), and its scratch.
  bool batchable = false;
  std::vector<kserve::DecodedRequest> batch;
  std::vector<size_t> taken;
  std::vector<std::vector<unsigned char>> stacked;
  std::vector<std::vector<int64_t>> stackedShapes;
  std::vector<kserve::OutputView> slices;
  std::vector<std::vector<int64_t>> sliceShapes;

  ~KserveJsonPath() {
    const OrtRuntime* rt = OrtCurrent();
    if (rt == nullptr) return;
    for (CachedValue& v : inputValues) v.Release(rt->api);
    for (OutputSpec& o : outputs) o.cached.Release(rt->api);
    ReleaseOrtOutputs(rt->api);
  }

  void ReleaseOrtOutputs(const OrtApi* api) {
    for (size_t i = 0; i < runOutputs.size(); ++i) {
      if (ortAllocated[i] && runOutputs[i] != nullptr) api->ReleaseValue(runOutputs[i]);
      runOutputs[i] = nullptr;
      ortAllocated[i] = false;
    }
  }

  // The shape of output `o` given the request's inputs, when every dimension is fixed or named by
  // an input; false otherwise.
  bool OutputShape(const OutputSpec& o, std::vector<int64_t>* shape) const {
    shape->clear();
    for (const kserve::Dim& d : o.dims) {
      if (d.size >= 0) {
        shape->push_back(d.size);
        continue;
      }
      if (d.symbol.empty()) return false;
      bool found = false;
      for (const auto& [name, value] : bindings) {
        if (*name == d.symbol) {
          shape->push_back(value);
          found = true;
          break;
        }
      }
      if (!found) return false;
    }
    return true;
  }
};

void KserveJsonPathDeleter::operator()(KserveJsonPath* p) const { delete p; }

// A codec of the fast path: how a request's tensors are read and its response written. The
// prepared path (signature, buffers, OrtValues) is the same for every format.
struct KserveWireFormat {
  const char* method;  // for argument errors
  bool (*decode)(std::string_view body, const std::vector<kserve::InputSpec>& specs, kserve::DecodedRequest& out);
  void (*encode)(std::string& out, std::string_view modelName, std::string_view modelVersion,
                 const kserve::DecodedRequest& request, const kserve::OutputView* outputs, size_t count);
};

namespace {
const KserveWireFormat kJsonFormat{"runKserveJson", kserve::DecodeInferRequest, kserve::EncodeInferResponse};
const KserveWireFormat kGrpcFormat{"runKserveGrpc", kserve::DecodeModelInferRequest, kserve::EncodeModelInferResponse};
}  // namespace

Napi::Value OrtSessionWrap::PrepareKserveJson(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<OrtSessionState> st = Open(env);
  constexpr const char* kWhat = "prepareKserveJson(options)";
  MLOS_REQUIRE_TYPE(info[0].IsObject(), env, std::string(kWhat) + ": options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto path = std::make_unique<KserveJsonPath>();
  path->modelName = StringField(env, o, "modelName", "options");
  path->modelVersion = StringField(env, o, "modelVersion", "options");
  Napi::Value stats = o.Get("stats");
  MLOS_REQUIRE_TYPE(stats.IsTypedArray() && stats.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array &&
                        stats.As<Napi::Float64Array>().ElementLength() >= 1,
                    env, std::string(kWhat) + ": options.stats must be a Float64Array of at least 1 element");
  path->stats = Napi::Persistent(stats.As<Napi::Float64Array>());
  path->statsData = stats.As<Napi::Float64Array>().Data();
  path->statsLength = stats.As<Napi::Float64Array>().ElementLength();

  bool supported = true;
  Napi::Value inputs = o.Get("inputs");
  MLOS_REQUIRE_TYPE(inputs.IsArray(), env, std::string(kWhat) + ": options.inputs must be an array");
  Napi::Array in = inputs.As<Napi::Array>();
  for (uint32_t i = 0; i < in.Length(); ++i) {
    MLOS_REQUIRE_TYPE(in.Get(i).IsObject(), env, std::string(kWhat) + ": options.inputs[] must be objects");
    Napi::Object spec = in.Get(i).As<Napi::Object>();
    kserve::InputSpec s;
    s.name = StringField(env, spec, "name", "options.inputs[]");
    MLOS_REQUIRE_TYPE(st->InputIndex(s.name) >= 0, env,
                      std::string(kWhat) + ": the model has no input \"" + s.name + "\"");
    supported = CodecElem(DTypeByName(StringField(env, spec, "dtype", "options.inputs[]")), &s.elem) && supported;
    s.dims = DimsOf(env, spec.Get("shape"), kWhat);
    path->inputs.push_back(std::move(s));
  }
  Napi::Value outputs = o.Get("outputs");
  MLOS_REQUIRE_TYPE(outputs.IsArray(), env, std::string(kWhat) + ": options.outputs must be an array");
  Napi::Array out = outputs.As<Napi::Array>();
  for (uint32_t i = 0; i < out.Length(); ++i) {
    MLOS_REQUIRE_TYPE(out.Get(i).IsObject(), env, std::string(kWhat) + ": options.outputs[] must be objects");
    Napi::Object spec = out.Get(i).As<Napi::Object>();
    OutputSpec os;
    os.name = StringField(env, spec, "name", "options.outputs[]");
    const int index = st->OutputIndex(os.name);
    MLOS_REQUIRE_TYPE(index >= 0, env, std::string(kWhat) + ": the model has no output \"" + os.name + "\"");
    const IoMeta& meta = st->outputs[static_cast<size_t>(index)];
    if (meta.type != ONNX_TYPE_TENSOR || meta.dtype == nullptr || !CodecElem(meta.dtype, &os.elem)) {
      supported = false;
    }
    os.dims = DimsOf(env, spec.Get("shape"), kWhat);
    path->outputs.push_back(std::move(os));
  }
  for (const auto& s : path->inputs) path->inputNames.push_back(s.name.c_str());
  for (const auto& o : path->outputs) path->outputNames.push_back(o.name.c_str());
  path->inputValues.resize(path->inputs.size());
  path->runInputs.assign(path->inputs.size(), nullptr);
  path->runOutputs.assign(path->outputs.size(), nullptr);
  path->ortAllocated.assign(path->outputs.size(), false);
  // Batchable: every input and output starts with the same named dynamic dimension.
  const std::string* batchDim = nullptr;
  bool batchable = !path->inputs.empty();
  auto firstDim = [&](const std::vector<kserve::Dim>& dims) {
    if (dims.empty() || dims[0].size >= 0 || dims[0].symbol.empty()) return false;
    if (batchDim == nullptr) batchDim = &dims[0].symbol;
    return dims[0].symbol == *batchDim;
  };
  for (const auto& in : path->inputs) batchable = batchable && firstDim(in.dims);
  for (const auto& o : path->outputs) batchable = batchable && firstDim(o.dims);
  path->batchable = batchable;
  Napi::Object result = Napi::Object::New(env);
  result.Set("usable", Napi::Boolean::New(env, supported));
  result.Set("batchable", Napi::Boolean::New(env, supported && batchable));
  kserve_.reset(supported ? path.release() : nullptr);
  return result;
}

namespace {

// Runs the session on `inputs` (one per path input, in order) and fills path->views with its
// outputs, which stay valid until path->ReleaseOrtOutputs(). False when anything failed.
bool Execute(KserveJsonPath* path, OrtSessionState* st, const std::vector<InputRef>& inputs) {
  const OrtApi* api = st->rt->api;
  static unsigned char empty = 0;  // data for zero-element tensors (ORT wants a pointer)
  path->bindings.clear();
  for (size_t i = 0; i < path->inputs.size(); ++i) {
    const kserve::InputSpec& spec = path->inputs[i];
    const InputRef& in = inputs[i];
    if (!path->inputValues[i].Set(api, st->rt->cpuMemory, in.bytes == 0 ? &empty : in.data, in.bytes, *in.shape,
                                  OrtTypeOf(DTypeOf(spec.elem)))) {
      return false;
    }
    path->runInputs[i] = path->inputValues[i].value;
    for (size_t d = 0; d < spec.dims.size(); ++d) {
      if (spec.dims[d].size < 0 && !spec.dims[d].symbol.empty()) path->bindings.emplace_back(&spec.dims[d].symbol, (*in.shape)[d]);
    }
  }
  // Outputs whose shape the inputs fix are written by ORT into the path's own buffers.
  for (size_t i = 0; i < path->outputs.size(); ++i) {
    OutputSpec& o = path->outputs[i];
    path->runOutputs[i] = nullptr;
    path->ortAllocated[i] = true;
    if (path->noPrealloc || !path->OutputShape(o, &o.shape)) continue;
    size_t count = 1;
    for (int64_t d : o.shape) count *= static_cast<size_t>(d);
    o.buffer.resize(count * kserve::ElemSize(o.elem));
    void* data = o.buffer.empty() ? &empty : o.buffer.data();
    if (!o.cached.Set(api, st->rt->cpuMemory, data, o.buffer.size(), o.shape, OrtTypeOf(DTypeOf(o.elem)))) continue;
    path->runOutputs[i] = o.cached.value;
    path->ortAllocated[i] = false;
  }
  const auto started = std::chrono::steady_clock::now();
  OrtStatus* status = api->Run(st->session, nullptr, path->inputNames.data(), path->runInputs.data(),
                               path->runInputs.size(), path->outputNames.data(), path->outputNames.size(),
                               path->runOutputs.data());
  path->statsData[0] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
  if (!Ok(api, status)) {
    // The general path runs it again and reports the error. A refused preallocation (the
    // signature's output shape was wrong) is not tried again.
    for (bool ort : path->ortAllocated) {
      if (!ort) path->noPrealloc = true;
    }
    return false;
  }
  std::vector<kserve::OutputView>& views = path->views;
  views.resize(path->outputs.size());
  path->shapes.resize(path->outputs.size());
  for (size_t i = 0; i < path->outputs.size(); ++i) {
    OrtValue* v = path->runOutputs[i];
    OrtTensorTypeAndShapeInfo* ti = nullptr;
    if (v == nullptr || !Ok(api, api->GetTensorTypeAndShape(v, &ti))) return false;
    std::vector<int64_t>& shape = path->shapes[i];
    ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    size_t rank = 0, count = 0;
    bool ok = Ok(api, api->GetTensorElementType(ti, &et)) && Ok(api, api->GetDimensionsCount(ti, &rank));
    if (ok) {
      shape.resize(rank);
      ok = (rank == 0 || Ok(api, api->GetDimensions(ti, shape.data(), rank))) &&
           Ok(api, api->GetTensorShapeElementCount(ti, &count));
    }
    api->ReleaseTensorTypeAndShapeInfo(ti);
    void* data = nullptr;
    if (!ok || !CodecElem(OrtDtypeByType(et), &views[i].elem) || !Ok(api, api->GetTensorMutableData(v, &data))) return false;
    views[i].name = path->outputs[i].name;
    views[i].shape = shape.data();
    views[i].rank = rank;
    views[i].data = data;
    views[i].count = count;
  }
  return true;
}

// ORT's own outputs of a run go back when the caller is done with them, whatever happened.
struct ReleaseOrtOutputsAfter {
  KserveJsonPath* path;
  const OrtApi* api;
  ~ReleaseOrtOutputsAfter() { path->ReleaseOrtOutputs(api); }
};

std::string_view BodyOf(const Napi::Value& v) {
  if (v.IsArrayBuffer()) {
    Napi::ArrayBuffer ab = v.As<Napi::ArrayBuffer>();
    return std::string_view(static_cast<const char*>(ab.Data()), ab.ByteLength());
  }
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  return std::string_view(static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), ta.ByteLength());
}

bool IsUint8Array(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array;
}

// Copies the encoded response(s) into `out` when they fit; returns their length.
Napi::Value Deliver(Napi::Env env, const std::string& response, Napi::Uint8Array out) {
  if (response.size() <= out.ByteLength()) std::memcpy(out.Data(), response.data(), response.size());
  return Napi::Number::New(env, static_cast<double>(response.size()));
}

}  // namespace

Napi::Value OrtSessionWrap::RunKserveJson(const Napi::CallbackInfo& info) { return RunKserve(info, kJsonFormat); }
Napi::Value OrtSessionWrap::RunKserveGrpc(const Napi::CallbackInfo& info) { return RunKserve(info, kGrpcFormat); }
Napi::Value OrtSessionWrap::RunKserveJsonBatch(const Napi::CallbackInfo& info) { return RunKserveBatch(info, kJsonFormat); }
Napi::Value OrtSessionWrap::RunKserveGrpcBatch(const Napi::CallbackInfo& info) {
  return RunKserveBatch(info, kGrpcFormat);
}

Napi::Value OrtSessionWrap::RunKserve(const Napi::CallbackInfo& info, const KserveWireFormat& format) {
  Napi::Env env = info.Env();
  std::shared_ptr<OrtSessionState> st = Open(env);
  KserveJsonPath* path = kserve_.get();
  if (path == nullptr) return Napi::Number::New(env, -1);
  // (Messages built only when a check fails: a warm request allocates nothing.)
  MLOS_REQUIRE_TYPE(info[0].IsTypedArray() || info[0].IsArrayBuffer(), env,
                    std::string(format.method) + "(body, out): body must be a Uint8Array or an ArrayBuffer");
  MLOS_REQUIRE_TYPE(IsUint8Array(info[1]), env, std::string(format.method) + "(body, out): out must be a Uint8Array");
  if (!format.decode(BodyOf(info[0]), path->inputs, path->request)) return Napi::Number::New(env, -1);
  std::vector<InputRef>& refs = path->inputRefs;
  refs.clear();
  for (kserve::DecodedInput& in : path->request.inputs) refs.push_back({in.bytes.data(), in.bytes.size(), &in.shape});
  ReleaseOrtOutputsAfter release{path, st->rt->api};
  if (!Execute(path, st.get(), refs)) return Napi::Number::New(env, -1);
  path->response.clear();
  format.encode(path->response, path->modelName, path->modelVersion, path->request, path->views.data(), path->views.size());
  return Deliver(env, path->response, info[1].As<Napi::Uint8Array>());
}

// runKserveJsonBatch(bodies, out, lengths, maxRows) -> total length. Every request it takes must have
// the same dimensions but the first (the batch dimension, which every input and output has);
// their inputs are stacked row-wise into one run, and each request gets its own rows of the
// outputs back, encoded one after the other into `out` (when they fit). lengths[j] is request
// j's response length, or -1 where it was declined (nothing ran for it), or -2 for a valid request
// left for another batch (past maxRows rows in all, or other dimensions than the first one taken).
Napi::Value OrtSessionWrap::RunKserveBatch(const Napi::CallbackInfo& info, const KserveWireFormat& format) {
  Napi::Env env = info.Env();
  std::shared_ptr<OrtSessionState> st = Open(env);
  const auto kUsage = [&format] { return std::string(format.method) + "Batch(bodies, out, lengths, maxRows)"; };
  MLOS_REQUIRE_TYPE(info[0].IsArray(), env, kUsage() + ": bodies must be an array of Uint8Arrays");
  MLOS_REQUIRE_TYPE(IsUint8Array(info[1]), env, kUsage() + ": out must be a Uint8Array");
  MLOS_REQUIRE_TYPE(info[2].IsTypedArray() && info[2].As<Napi::TypedArray>().TypedArrayType() == napi_int32_array,
                    env, kUsage() + ": lengths must be an Int32Array");
  MLOS_REQUIRE_TYPE(info[3].IsNumber(), env, kUsage() + ": maxRows must be a number");
  const double maxRows = info[3].As<Napi::Number>().DoubleValue();
  Napi::Array bodies = info[0].As<Napi::Array>();
  Napi::Int32Array lengths = info[2].As<Napi::Int32Array>();
  const size_t n = bodies.Length();
  MLOS_REQUIRE_RANGE(lengths.ElementLength() >= n, env, kUsage() + ": lengths is shorter than bodies");
  for (size_t j = 0; j < n; ++j) lengths[j] = -1;
  KserveJsonPath* path = kserve_.get();
  if (path == nullptr || !path->batchable || n == 0) return Napi::Number::New(env, 0);

  // Decode; keep the requests whose dimensions past the first match the first one kept, while
  // the rows stay within maxRows.
  if (path->batch.size() < n) path->batch.resize(n);
  std::vector<size_t>& taken = path->taken;
  taken.clear();
  int64_t rows = 0;
  for (size_t j = 0; j < n; ++j) {
    Napi::Value b = bodies.Get(static_cast<uint32_t>(j));
    if (!(b.IsTypedArray() || b.IsArrayBuffer())) continue;
    kserve::DecodedRequest& r = path->batch[j];
    if (!format.decode(BodyOf(b), path->inputs, r)) continue;
    bool same = true;
    if (!taken.empty()) {
      const kserve::DecodedRequest& first = path->batch[taken[0]];
      for (size_t i = 0; same && i < path->inputs.size(); ++i) {
        same = std::equal(r.inputs[i].shape.begin() + 1, r.inputs[i].shape.end(), first.inputs[i].shape.begin() + 1,
                          first.inputs[i].shape.end());
      }
    }
    const int64_t mine = r.inputs[0].shape[0];
    if (same && static_cast<double>(rows + mine) <= maxRows) {
      taken.push_back(j);
      rows += mine;
    } else {
      lengths[j] = -2;  // valid, but not in this batch: another one can take it
    }
  }
  if (taken.empty()) return Napi::Number::New(env, 0);

  // Stack the inputs row-wise.
  path->stacked.resize(path->inputs.size());
  path->stackedShapes.resize(path->inputs.size());
  std::vector<InputRef>& refs = path->inputRefs;
  refs.clear();
  for (size_t i = 0; i < path->inputs.size(); ++i) {
    std::vector<unsigned char>& buf = path->stacked[i];
    buf.clear();
    for (size_t j : taken) buf.insert(buf.end(), path->batch[j].inputs[i].bytes.begin(), path->batch[j].inputs[i].bytes.end());
    path->stackedShapes[i] = path->batch[taken[0]].inputs[i].shape;
    path->stackedShapes[i][0] = rows;
    refs.push_back({buf.data(), buf.size(), &path->stackedShapes[i]});
  }
  ReleaseOrtOutputsAfter release{path, st->rt->api};
  // A failed run, or outputs not row-aligned with the inputs: every request declined.
  auto declineAll = [&] {
    for (size_t j = 0; j < n; ++j) lengths[j] = -1;
    return Napi::Number::New(env, 0);
  };
  if (!Execute(path, st.get(), refs)) return declineAll();
  if (path->statsLength >= 2) path->statsData[1] = static_cast<double>(rows);
  for (const kserve::OutputView& v : path->views) {
    if (v.rank == 0 || v.shape[0] != rows) return declineAll();
  }

  // Each request's rows of every output, encoded in turn.
  path->response.clear();
  std::vector<kserve::OutputView>& slices = path->slices;
  slices.resize(path->views.size());
  path->sliceShapes.resize(path->views.size());
  int64_t row = 0;
  for (size_t j : taken) {
    const int64_t mine = path->batch[j].inputs[0].shape[0];
    for (size_t i = 0; i < path->views.size(); ++i) {
      const kserve::OutputView& whole = path->views[i];
      const size_t perRow = rows == 0 ? 0 : whole.count / static_cast<size_t>(rows);
      std::vector<int64_t>& shape = path->sliceShapes[i];
      shape.assign(whole.shape, whole.shape + whole.rank);
      shape[0] = mine;
      slices[i] = whole;
      slices[i].shape = shape.data();
      slices[i].count = perRow * static_cast<size_t>(mine);
      slices[i].data = static_cast<const unsigned char*>(whole.data) + perRow * static_cast<size_t>(row) * kserve::ElemSize(whole.elem);
    }
    const size_t before = path->response.size();
    format.encode(path->response, path->modelName, path->modelVersion, path->batch[j], slices.data(), slices.size());
    lengths[j] = static_cast<int32_t>(path->response.size() - before);
    row += mine;
  }
  return Deliver(env, path->response, info[1].As<Napi::Uint8Array>());
}

Napi::Value OrtSessionWrap::ReadKserveResponse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  KserveJsonPath* path = kserve_.get();
  MLOS_REQUIRE_TYPE(info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array, env,
                    "readKserveResponse(out): out must be a Uint8Array");
  Napi::Uint8Array out = info[0].As<Napi::Uint8Array>();
  const size_t n = path == nullptr ? 0 : path->response.size();
  MLOS_REQUIRE_RANGE(n <= out.ByteLength(), env,
                     "readKserveResponse(out): out has " + std::to_string(out.ByteLength()) + " bytes, the response " +
                         std::to_string(n));
  if (n > 0) std::memcpy(out.Data(), path->response.data(), n);
  return Napi::Number::New(env, static_cast<double>(n));
}

}  // namespace mlos
