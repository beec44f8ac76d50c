// The OrtSession JS class; see ort_session.h.
#include "ort/ort_session.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/run_worker.h"
#include "ort/ort_api.h"
#include "ort/ort_session_state.h"
#include "sampling/argmax.h"
#include "pool/shm_pool_binding.h"

namespace mlos {

namespace {

constexpr napi_type_tag kOrtSessionTag = {0x6d6c6f73'6f727473ULL, 0x3a7e91c4'0b6d2f58ULL};
constexpr double kMaxSafeInteger = 9007199254740991.0;

// Throws ORT_FAIL when `status` is an error (the message names `call`).
void ThrowIfOrtError(Napi::Env env, const OrtApi* api, OrtStatus* status, const char* call) {
  std::string msg = OrtStatusMessage(api, status, call);
  if (!msg.empty()) MLOS_THROW_CODE(env, "ORT_FAIL", msg);
}

const OrtRuntime* RequireRuntime(Napi::Env env) {
  const OrtRuntime* rt = OrtCurrent();
  MLOS_REQUIRE(rt != nullptr, env, "ORT_UNAVAILABLE",
               "ONNX Runtime is not loaded: call ortInit(libraryPath) first (bindings/native.ts "
               "loadOrt() does)");
  return rt;
}

// Owning handles for the C API's objects.
template <typename T, auto Release>
struct OrtOwned {
  T* p = nullptr;
  OrtOwned() = default;
  OrtOwned(const OrtOwned&) = delete;
  OrtOwned& operator=(const OrtOwned&) = delete;
  ~OrtOwned() {
    if (p != nullptr) (OrtCurrent()->api->*Release)(p);
  }
};
using OwnedSessionOptions = OrtOwned<OrtSessionOptions, &OrtApi::ReleaseSessionOptions>;
using OwnedTypeInfo = OrtOwned<OrtTypeInfo, &OrtApi::ReleaseTypeInfo>;
using OwnedShapeInfo = OrtOwned<OrtTensorTypeAndShapeInfo, &OrtApi::ReleaseTensorTypeAndShapeInfo>;

const char* OnnxTypeName(ONNXType t) {
  switch (t) {
    case ONNX_TYPE_TENSOR: return "tensor";
    case ONNX_TYPE_SEQUENCE: return "sequence";
    case ONNX_TYPE_MAP: return "map";
    case ONNX_TYPE_OPAQUE: return "opaque";
    case ONNX_TYPE_SPARSETENSOR: return "sparse_tensor";
    case ONNX_TYPE_OPTIONAL: return "optional";
    default: return "unknown";
  }
}

}  // namespace

namespace {

// Reads one input's or output's metadata; "" or what failed. Touches no JS (any thread).
// `kind`: a graph input, a graph output, or an overridable initializer (an initializer that is
// also a graph input: it has a default and a run may feed it).
enum class IoKind { kInput, kOutput, kOverridable };

std::string ReadIoMeta(const OrtApi* api, OrtSession* session, size_t index, IoKind kind, IoMeta* out) {
  IoMeta& m = *out;
#define MLOS_ORT_TRY(expr, call)                                       \
  do {                                                                 \
    std::string mlos_msg_ = OrtStatusMessage(api, (expr), (call));     \
    if (!mlos_msg_.empty()) return mlos_msg_;                          \
  } while (0)
  OrtAllocator* alloc = nullptr;
  MLOS_ORT_TRY(api->GetAllocatorWithDefaultOptions(&alloc), "GetAllocatorWithDefaultOptions");
  char* name = nullptr;
  switch (kind) {
    case IoKind::kInput: MLOS_ORT_TRY(api->SessionGetInputName(session, index, alloc, &name), "SessionGetInputName"); break;
    case IoKind::kOutput: MLOS_ORT_TRY(api->SessionGetOutputName(session, index, alloc, &name), "SessionGetOutputName"); break;
    case IoKind::kOverridable:
      MLOS_ORT_TRY(api->SessionGetOverridableInitializerName(session, index, alloc, &name), "SessionGetOverridableInitializerName");
      break;
  }
  m.name = name;
  if (OrtStatus* st = api->AllocatorFree(alloc, name)) api->ReleaseStatus(st);

  OwnedTypeInfo ti;
  switch (kind) {
    case IoKind::kInput: MLOS_ORT_TRY(api->SessionGetInputTypeInfo(session, index, &ti.p), "SessionGetInputTypeInfo"); break;
    case IoKind::kOutput: MLOS_ORT_TRY(api->SessionGetOutputTypeInfo(session, index, &ti.p), "SessionGetOutputTypeInfo"); break;
    case IoKind::kOverridable:
      MLOS_ORT_TRY(api->SessionGetOverridableInitializerTypeInfo(session, index, &ti.p), "SessionGetOverridableInitializerTypeInfo");
      break;
  }
  MLOS_ORT_TRY(api->GetOnnxTypeFromTypeInfo(ti.p, &m.type), "GetOnnxTypeFromTypeInfo");
  if (m.type != ONNX_TYPE_TENSOR) return "";
  const OrtTensorTypeAndShapeInfo* tsi = nullptr;  // owned by ti
  MLOS_ORT_TRY(api->CastTypeInfoToTensorInfo(ti.p, &tsi), "CastTypeInfoToTensorInfo");
  if (tsi == nullptr) return "";
  ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  MLOS_ORT_TRY(api->GetTensorElementType(tsi, &et), "GetTensorElementType");
  m.dtype = OrtDtypeByType(et);
  size_t rank = 0;
  MLOS_ORT_TRY(api->GetDimensionsCount(tsi, &rank), "GetDimensionsCount");
  m.shape.assign(rank, 0);
  if (rank > 0) MLOS_ORT_TRY(api->GetDimensions(tsi, m.shape.data(), rank), "GetDimensions");
  std::vector<const char*> sym(rank, nullptr);
  if (rank > 0) MLOS_ORT_TRY(api->GetSymbolicDimensions(tsi, sym.data(), rank), "GetSymbolicDimensions");
  for (const char* s : sym) m.symbolic.emplace_back(s != nullptr ? s : "");
#undef MLOS_ORT_TRY
  return "";
}

// Session options parsed from JS on the JS thread; applied where the session is created.
struct SessionConfig {
  std::string path;
  int intraOpThreads = -1;
  int interOpThreads = -1;
  int graphOptimizationLevel = -1;  // a GraphOptimizationLevel, or -1 for ORT's default
  int executionMode = -1;           // an ExecutionMode, or -1
  // options.modelBytes: the model's bytes, used instead of reading `path` (a rewritten graph);
  // its external data, if any, is still read from the folder `path` is in.
  bool fromBytes = false;
  std::string bytes;
};

// new OrtSession(modelPath, options?) / OrtSession.open(modelPath, options?) arguments.
SessionConfig ParseSessionConfig(const Napi::CallbackInfo& info, const char* form) {
  Napi::Env env = info.Env();
  SessionConfig c;
  MLOS_REQUIRE_TYPE(info[0].IsString(), env, std::string(form) + ": modelPath must be a string");
  c.path = info[0].As<Napi::String>().Utf8Value();
  if (info[1].IsUndefined() || info[1].IsNull()) return c;
  MLOS_REQUIRE_TYPE(info[1].IsObject(), env, std::string(form) + ": options must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  auto threads = [&](const char* key) -> int {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined()) return -1;
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    MLOS_REQUIRE_RANGE(std::isfinite(d) && d >= 0 && d <= 1024 && std::floor(d) == d, env,
                       std::string("options.") + key + " must be an integer from 0 (ORT's default) to 1024");
    return static_cast<int>(d);
  };
  c.intraOpThreads = threads("intraOpThreads");
  c.interOpThreads = threads("interOpThreads");
  Napi::Value mb = o.Get("modelBytes");
  if (!mb.IsUndefined()) {
    MLOS_REQUIRE_TYPE(mb.IsTypedArray() && mb.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array, env,
                      std::string(form) + ": options.modelBytes must be a Uint8Array");
    Napi::Uint8Array u8 = mb.As<Napi::Uint8Array>();
    c.fromBytes = true;
    c.bytes.assign(reinterpret_cast<const char*>(u8.Data()), u8.ByteLength());  // the worker thread reads it
  }
  Napi::Value gol = o.Get("graphOptimizationLevel");
  if (!gol.IsUndefined()) {
    const std::string s = gol.IsString() ? gol.As<Napi::String>().Utf8Value() : "";
    if (s == "disabled") c.graphOptimizationLevel = ORT_DISABLE_ALL;
    else if (s == "basic") c.graphOptimizationLevel = ORT_ENABLE_BASIC;
    else if (s == "extended") c.graphOptimizationLevel = ORT_ENABLE_EXTENDED;
    else if (s == "all") c.graphOptimizationLevel = ORT_ENABLE_ALL;
    else MLOS_THROW_TYPE(env, "options.graphOptimizationLevel must be \"disabled\", \"basic\", \"extended\" or \"all\"");
  }
  Napi::Value mode = o.Get("executionMode");
  if (!mode.IsUndefined()) {
    const std::string s = mode.IsString() ? mode.As<Napi::String>().Utf8Value() : "";
    MLOS_REQUIRE_TYPE(s == "sequential" || s == "parallel", env,
                      "options.executionMode must be \"sequential\" or \"parallel\"");
    c.executionMode = s == "parallel" ? ORT_PARALLEL : ORT_SEQUENTIAL;
  }
  return c;
}

// Creates the session and reads its metadata; "" or what failed. Touches no JS (any thread).
std::string OpenSessionState(const OrtRuntime* rt, const SessionConfig& c,
                             std::shared_ptr<OrtSessionState>* out) {
  const OrtApi* api = rt->api;
  OwnedSessionOptions so;
  std::string err = OrtStatusMessage(api, api->CreateSessionOptions(&so.p), "CreateSessionOptions");
  if (rt->globalThreads > 0) {
    // The environment's shared pools: the session's own thread settings do not apply.
    if (err.empty()) err = OrtStatusMessage(api, api->DisablePerSessionThreads(so.p), "DisablePerSessionThreads");
  } else {
    if (err.empty() && c.intraOpThreads >= 0)
      err = OrtStatusMessage(api, api->SetIntraOpNumThreads(so.p, c.intraOpThreads), "SetIntraOpNumThreads");
    if (err.empty() && c.interOpThreads >= 0)
      err = OrtStatusMessage(api, api->SetInterOpNumThreads(so.p, c.interOpThreads), "SetInterOpNumThreads");
  }
  if (err.empty() && c.graphOptimizationLevel >= 0)
    err = OrtStatusMessage(api,
                           api->SetSessionGraphOptimizationLevel(
                               so.p, static_cast<GraphOptimizationLevel>(c.graphOptimizationLevel)),
                           "SetSessionGraphOptimizationLevel");
  if (err.empty() && c.executionMode >= 0)
    err = OrtStatusMessage(api, api->SetSessionExecutionMode(so.p, static_cast<ExecutionMode>(c.executionMode)),
                           "SetSessionExecutionMode");
  if (!err.empty()) return err;
  auto state = std::make_shared<OrtSessionState>();
  state->rt = rt;
  if (c.fromBytes) {
    // External data paths in the graph are relative to the original file's folder.
    const size_t slash = c.path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : c.path.substr(0, slash);
    err = OrtStatusMessage(api, api->AddSessionConfigEntry(so.p, "session.model_external_initializers_file_folder_path", dir.c_str()),
                           "AddSessionConfigEntry");
    // The rewritten graph's overridable initializer is by design an initializer that is also a
    // graph input, which ONNX Runtime warns about on every load: its warnings are not the user's.
    if (err.empty()) err = OrtStatusMessage(api, api->SetSessionLogSeverityLevel(so.p, ORT_LOGGING_LEVEL_ERROR), "SetSessionLogSeverityLevel");
    if (!err.empty()) return err;
    err = OrtStatusMessage(api, api->CreateSessionFromArray(rt->env, c.bytes.data(), c.bytes.size(), so.p, &state->session),
                           "CreateSessionFromArray");
  } else {
    err = OrtStatusMessage(api, api->CreateSession(rt->env, c.path.c_str(), so.p, &state->session), "CreateSession");
  }
  if (!err.empty()) return err;
  size_t nIn = 0, nOut = 0, nOver = 0;
  err = OrtStatusMessage(api, api->SessionGetInputCount(state->session, &nIn), "SessionGetInputCount");
  if (err.empty()) err = OrtStatusMessage(api, api->SessionGetOutputCount(state->session, &nOut), "SessionGetOutputCount");
  if (err.empty())
    err = OrtStatusMessage(api, api->SessionGetOverridableInitializerCount(state->session, &nOver),
                           "SessionGetOverridableInitializerCount");
  for (size_t i = 0; err.empty() && i < nIn; ++i) {
    state->inputs.emplace_back();
    err = ReadIoMeta(api, state->session, i, IoKind::kInput, &state->inputs.back());
  }
  for (size_t i = 0; err.empty() && i < nOut; ++i) {
    state->outputs.emplace_back();
    err = ReadIoMeta(api, state->session, i, IoKind::kOutput, &state->outputs.back());
  }
  for (size_t i = 0; err.empty() && i < nOver; ++i) {
    state->overridable.emplace_back();
    err = ReadIoMeta(api, state->session, i, IoKind::kOverridable, &state->overridable.back());
  }
  if (err.empty()) *out = std::move(state);
  return err;
}

Napi::Array IoMetaToJs(Napi::Env env, const std::vector<IoMeta>& list) {
  Napi::Array arr = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const IoMeta& m = list[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", m.name);
    o.Set("type", OnnxTypeName(m.type));
    o.Set("dtype", m.dtype != nullptr ? Napi::Value(Napi::String::New(env, m.dtype->name))
                                      : env.Undefined());
    Napi::Array shape = Napi::Array::New(env, m.shape.size());
    Napi::Array sym = Napi::Array::New(env, m.shape.size());
    for (size_t d = 0; d < m.shape.size(); ++d) {
      shape.Set(d, Napi::Number::New(env, m.shape[d] < 0 ? -1.0 : static_cast<double>(m.shape[d])));
      sym.Set(d, m.symbolic[d].empty() ? env.Null() : Napi::Value(Napi::String::New(env, m.symbolic[d])));
    }
    o.Set("shape", shape);
    o.Set("symbolicShape", sym);
    o.Freeze();
    arr.Set(i, o);
  }
  arr.Freeze();
  return arr;
}

// ---- one run ---------------------------------------------------------------------------------------

// A tensor argument from JS, checked: { dtype, shape, data }.
struct TensorArg {
  const DTypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  void* data = nullptr;
  size_t bytes = 0;
  Napi::Object dataObject;
  std::vector<std::string> strings;  // string tensors: the elements, copied out of JS
};

// `allowStrings`: string tensors (data: an array of strings) are accepted for inputs, which ORT
// copies into a tensor of its own (FillStringTensor); preallocated outputs must be numeric.
TensorArg ParseTensor(Napi::Env env, Napi::Value v, const std::string& what,
                      const IoMeta& meta, bool allowStrings = false) {
  MLOS_REQUIRE_TYPE(v.IsObject(), env, what + " must be an object { dtype, shape, data }");
  Napi::Object o = v.As<Napi::Object>();
  TensorArg t;
  Napi::Value dt = o.Get("dtype");
  MLOS_REQUIRE_TYPE(dt.IsString(), env, what + ": dtype must be a string such as \"float32\"");
  const std::string dtName = dt.As<Napi::String>().Utf8Value();
  t.dtype = DTypeByName(dtName);
  MLOS_REQUIRE_TYPE(t.dtype != nullptr, env, what + ": unknown dtype \"" + dtName + "\"");
  MLOS_REQUIRE_TYPE(t.dtype->bits != 0 || allowStrings, env,
                    what + ": dtype \"" + dtName + "\" cannot be preallocated");
  if (meta.dtype != nullptr) {
    MLOS_REQUIRE_TYPE(meta.dtype == t.dtype, env,
                      what + ": the model expects dtype " + meta.dtype->name + ", got " + dtName);
  }
  Napi::Value sh = o.Get("shape");
  MLOS_REQUIRE_TYPE(sh.IsArray(), env, what + ": shape must be an array of integers");
  Napi::Array shape = sh.As<Napi::Array>();
  uint64_t elements = 1;
  bool overflow = false;
  for (uint32_t i = 0; i < shape.Length(); ++i) {
    Napi::Value d = shape.Get(i);
    const double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1.0;
    MLOS_REQUIRE_TYPE(std::isfinite(x) && x >= 0 && std::floor(x) == x && x <= kMaxSafeInteger,
                      env,
                      what + ": shape[" + std::to_string(i) + "] must be a non-negative integer, got " +
                          d.ToString().Utf8Value());
    const uint64_t n = static_cast<uint64_t>(x);
    if (n != 0 && elements > (uint64_t{1} << 60) / n) overflow = true;
    elements *= n;
    t.shape.push_back(static_cast<int64_t>(n));
  }
  MLOS_REQUIRE_RANGE(!overflow, env, what + ": the shape has too many elements");
  Napi::Value data = o.Get("data");
  if (t.dtype->bits == 0) {
    MLOS_REQUIRE_TYPE(data.IsArray(), env, what + ": a string tensor's data must be an array of strings");
    Napi::Array arr = data.As<Napi::Array>();
    MLOS_REQUIRE_TYPE(arr.Length() == elements, env,
                      what + ": data has " + std::to_string(arr.Length()) + " strings, the shape needs " +
                          std::to_string(elements));
    t.strings.reserve(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      Napi::Value e = arr.Get(i);
      MLOS_REQUIRE_TYPE(e.IsString(), env, what + ": data[" + std::to_string(i) + "] is not a string");
      t.strings.push_back(e.As<Napi::String>().Utf8Value());
    }
    t.dataObject = arr;
    return t;
  }
  MLOS_REQUIRE_TYPE(data.IsArrayBuffer() || data.IsTypedArray() || data.IsDataView(), env,
                    what + ": data must be an ArrayBuffer, a typed array or a DataView");
  uint8_t* ptr = nullptr;
  BufferSpan(env, data, &ptr, &t.bytes);
  const uint64_t need = DTypeBytes(*t.dtype, elements);
  if (t.bytes != need) {
    std::string dims;
    for (int64_t d : t.shape) dims += (dims.empty() ? "" : ",") + std::to_string(d);
    MLOS_THROW_TYPE(env, what + ": data has " + std::to_string(t.bytes) + " bytes, " + dtName +
                             " [" + dims + "] needs " + std::to_string(need));
  }
  // A zero-byte buffer may have no data pointer; ORT wants one.
  static uint64_t empty[1];
  t.data = (ptr != nullptr) ? static_cast<void*>(ptr) : static_cast<void*>(empty);
  t.dataObject = data.As<Napi::Object>();
  return t;
}

struct RunPlan {
  std::shared_ptr<OrtSessionState> state;
  std::vector<const char*> inputNames;  // point into state's metadata
  std::vector<OrtValue*> inputs;
  std::vector<const char*> outputNames;
  std::vector<size_t> outputIndex;
  std::vector<OrtValue*> outputs;   // preallocated ones before the run, all after it
  std::vector<int> prealloc;        // index into preallocData, or -1
  std::vector<TensorArg> preallocArgs;
  OrtRunOptions* runOptions = nullptr;
  double timeoutMs = 0;
  bool debugAddresses = false;
  std::atomic<bool> terminated{false};
  std::string tag;  // runOptions.tag: terminate(tag) stops only the runs with this tag
  bool timedOut = false;
  double runMicros = 0;  // how long Session::Run took
  // runOptions.argmax: after the run, on the worker thread, the index of the largest value of
  // each [offset, offset + width) slice of one float32 output (greedy decoding's next tokens, read
  // while the logits are still in this core's cache), written into the caller's Int32Array.
  int argmaxSlot = -1;                  // index into outputs
  std::vector<int64_t> argmaxOffsets;
  int64_t argmaxWidth = 0;
  std::vector<int32_t> argmaxResult;
  std::string error;
  const char* errorCode = "ORT_FAIL";

  RunPlan() = default;
  RunPlan(const RunPlan&) = delete;
  RunPlan& operator=(const RunPlan&) = delete;
  ~RunPlan() {
    const OrtApi* api = state->rt->api;
    for (OrtValue* v : inputs) {
      if (v != nullptr) api->ReleaseValue(v);
    }
    for (OrtValue* v : outputs) {
      if (v != nullptr) api->ReleaseValue(v);
    }
    if (runOptions != nullptr) {
      {
        std::lock_guard<std::mutex> lock(state->mu);
        state->inFlight.erase(runOptions);
      }
      api->ReleaseRunOptions(runOptions);
    }
  }
};

// Builds a run from run(feeds, outputNames?, preallocatedOutputs?, runOptions?) on the JS thread,
// collecting every JS object whose memory the run uses into `keep`.
// `inlineRun`: runSync, where nothing can call terminate() while the run holds the JS thread, so
// a run with neither timeout nor tag needs no RunOptions (nor an entry in the in-flight table).
std::unique_ptr<RunPlan> BuildPlan(const Napi::CallbackInfo& info,
                                   std::shared_ptr<OrtSessionState> state,
                                   std::vector<Napi::Object>* keep, bool inlineRun) {
  Napi::Env env = info.Env();
  const OrtApi* api = state->rt->api;
  auto plan = std::make_unique<RunPlan>();
  plan->state = state;

  MLOS_REQUIRE_TYPE(info[0].IsObject() && !info[0].IsArray(), env,
                    "run(feeds, ...): feeds must be an object { [inputName]: { dtype, shape, data } }");
  Napi::Object feeds = info[0].As<Napi::Object>();
  Napi::Array keys = feeds.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    const std::string name = keys.Get(i).ToString().Utf8Value();
    // A graph input, or an initializer with a default that the run overrides.
    const int idx = state->InputIndex(name);
    const int over = idx >= 0 ? -1 : OrtSessionState::Find(state->overridable, name);
    MLOS_REQUIRE_TYPE(idx >= 0 || over >= 0, env,
                      "unknown input \"" + name + "\"; the model's inputs are: " +
                          OrtSessionState::Names(state->inputs));
    const IoMeta& meta = idx >= 0 ? state->inputs[idx] : state->overridable[over];
    TensorArg t = ParseTensor(env, feeds.Get(name), "input \"" + name + "\"", meta, true);
    OrtValue* value = nullptr;
    if (t.dtype->bits == 0) {
      // Strings have no shared layout with JS: ORT keeps its own copy.
      OrtAllocator* alloc = nullptr;
      ThrowIfOrtError(env, api, api->GetAllocatorWithDefaultOptions(&alloc), "GetAllocatorWithDefaultOptions");
      ThrowIfOrtError(env, api,
                      api->CreateTensorAsOrtValue(alloc, t.shape.data(), t.shape.size(), OrtTypeOf(*t.dtype), &value),
                      "CreateTensorAsOrtValue");
      plan->inputs.push_back(value);  // released with the plan, also if filling fails
      std::vector<const char*> cstrs;
      cstrs.reserve(t.strings.size());
      for (const auto& str : t.strings) cstrs.push_back(str.c_str());
      ThrowIfOrtError(env, api, api->FillStringTensor(value, cstrs.data(), cstrs.size()), "FillStringTensor");
      plan->inputNames.push_back(meta.name.c_str());
      keep->push_back(t.dataObject);
      continue;
    }
    ThrowIfOrtError(env, api,
                    api->CreateTensorWithDataAsOrtValue(state->rt->cpuMemory, t.data, t.bytes,
                                                        t.shape.data(), t.shape.size(),
                                                        OrtTypeOf(*t.dtype), &value),
                    "CreateTensorWithDataAsOrtValue");
    plan->inputs.push_back(value);
    plan->inputNames.push_back(meta.name.c_str());
    keep->push_back(t.dataObject);
  }

  auto addOutput = [&](const std::string& name) {
    const int idx = state->OutputIndex(name);
    MLOS_REQUIRE_TYPE(idx >= 0, env,
                      "unknown output \"" + name + "\"; the model's outputs are: " +
                          OrtSessionState::Names(state->outputs));
    MLOS_REQUIRE_TYPE(std::find(plan->outputIndex.begin(), plan->outputIndex.end(),
                                static_cast<size_t>(idx)) == plan->outputIndex.end(),
                      env, "output \"" + name + "\" is named twice");
    plan->outputIndex.push_back(static_cast<size_t>(idx));
    plan->outputNames.push_back(state->outputs[idx].name.c_str());
    plan->outputs.push_back(nullptr);
    plan->prealloc.push_back(-1);
    return plan->outputs.size() - 1;
  };
  if (info[1].IsUndefined() || info[1].IsNull()) {
    for (const auto& m : state->outputs) addOutput(m.name);
  } else {
    MLOS_REQUIRE_TYPE(info[1].IsArray(), env, "run: outputNames must be an array of strings");
    Napi::Array names = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < names.Length(); ++i) {
      Napi::Value n = names.Get(i);
      MLOS_REQUIRE_TYPE(n.IsString(), env, "run: outputNames must be an array of strings");
      addOutput(n.As<Napi::String>().Utf8Value());
    }
  }

  if (!info[2].IsUndefined() && !info[2].IsNull()) {
    MLOS_REQUIRE_TYPE(info[2].IsObject() && !info[2].IsArray(), env,
                      "run: preallocatedOutputs must be an object { [outputName]: { dtype, shape, data } }");
    Napi::Object pre = info[2].As<Napi::Object>();
    Napi::Array pkeys = pre.GetPropertyNames();
    for (uint32_t i = 0; i < pkeys.Length(); ++i) {
      const std::string name = pkeys.Get(i).ToString().Utf8Value();
      const int idx = state->OutputIndex(name);
      MLOS_REQUIRE_TYPE(idx >= 0, env,
                        "unknown output \"" + name + "\" in preallocatedOutputs; the model's outputs are: " +
                            OrtSessionState::Names(state->outputs));
      auto it = std::find(plan->outputIndex.begin(), plan->outputIndex.end(), static_cast<size_t>(idx));
      // A preallocated output that outputNames left out is fetched too.
      const size_t slot = it != plan->outputIndex.end()
                              ? static_cast<size_t>(it - plan->outputIndex.begin())
                              : addOutput(name);
      TensorArg t = ParseTensor(env, pre.Get(name), "preallocated output \"" + name + "\"",
                                state->outputs[idx]);
      OrtValue* value = nullptr;
      ThrowIfOrtError(env, api,
                      api->CreateTensorWithDataAsOrtValue(state->rt->cpuMemory, t.data, t.bytes,
                                                          t.shape.data(), t.shape.size(),
                                                          OrtTypeOf(*t.dtype), &value),
                      "CreateTensorWithDataAsOrtValue");
      plan->outputs[slot] = value;
      plan->prealloc[slot] = static_cast<int>(plan->preallocArgs.size());
      keep->push_back(t.dataObject);
      plan->preallocArgs.push_back(std::move(t));
    }
  }

  if (!info[3].IsUndefined() && !info[3].IsNull()) {
    MLOS_REQUIRE_TYPE(info[3].IsObject(), env,
                      "run: runOptions must be an object { timeoutMs?, debugAddresses? }");
    Napi::Value dbg = info[3].As<Napi::Object>().Get("debugAddresses");
    if (!dbg.IsUndefined()) {
      MLOS_REQUIRE_TYPE(dbg.IsBoolean(), env, "run: runOptions.debugAddresses must be a boolean");
      plan->debugAddresses = dbg.As<Napi::Boolean>().Value();
    }
    Napi::Value tag = info[3].As<Napi::Object>().Get("tag");
    if (!tag.IsUndefined()) {
      MLOS_REQUIRE_TYPE(tag.IsString(), env, "run: runOptions.tag must be a string");
      plan->tag = tag.As<Napi::String>().Utf8Value();
    }
    Napi::Value am = info[3].As<Napi::Object>().Get("argmax");
    if (!am.IsUndefined()) {
      const char* usage = "run: runOptions.argmax must be { output: string, offsets: Float64Array, width: number, into: Int32Array } with into at least as long as offsets";
      MLOS_REQUIRE_TYPE(am.IsObject(), env, usage);
      Napi::Object a = am.As<Napi::Object>();
      Napi::Value out = a.Get("output"), offs = a.Get("offsets"), width = a.Get("width"), into = a.Get("into");
      MLOS_REQUIRE_TYPE(out.IsString() && width.IsNumber() && offs.IsTypedArray() &&
                            offs.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array &&
                            into.IsTypedArray() && into.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array,
                        env, usage);
      const std::string name = out.As<Napi::String>().Utf8Value();
      auto it = std::find_if(plan->outputNames.begin(), plan->outputNames.end(), [&](const char* n) { return name == n; });
      MLOS_REQUIRE_TYPE(it != plan->outputNames.end(), env, "run: runOptions.argmax.output \"" + name + "\" is not one of the outputs asked for");
      Napi::Float64Array o = offs.As<Napi::Float64Array>();
      MLOS_REQUIRE_TYPE(into.As<Napi::Int32Array>().ElementLength() >= o.ElementLength(), env, usage);
      const double w = width.As<Napi::Number>().DoubleValue();
      MLOS_REQUIRE_RANGE(std::isfinite(w) && w >= 1 && std::floor(w) == w, env, "run: runOptions.argmax.width must be a positive integer");
      for (size_t i = 0; i < o.ElementLength(); ++i) {
        MLOS_REQUIRE_RANGE(std::isfinite(o[i]) && o[i] >= 0 && std::floor(o[i]) == o[i], env, "run: runOptions.argmax.offsets must be non-negative integers");
        plan->argmaxOffsets.push_back(static_cast<int64_t>(o[i]));
      }
      plan->argmaxSlot = static_cast<int>(it - plan->outputNames.begin());
      plan->argmaxWidth = static_cast<int64_t>(w);
      keep->push_back(into.As<Napi::Object>());  // last in `kept`: BuildResult writes the indices into it
    }
    Napi::Value t = info[3].As<Napi::Object>().Get("timeoutMs");
    if (!t.IsUndefined()) {
      const double ms = t.IsNumber() ? t.As<Napi::Number>().DoubleValue() : -1;
      MLOS_REQUIRE_RANGE(std::isfinite(ms) && ms > 0, env,
                         "run: runOptions.timeoutMs must be a positive number");
      plan->timeoutMs = ms;
    }
  }

  if (inlineRun && plan->timeoutMs <= 0 && plan->tag.empty()) return plan;
  ThrowIfOrtError(env, api, api->CreateRunOptions(&plan->runOptions), "CreateRunOptions");
  {
    std::lock_guard<std::mutex> lock(state->mu);
    state->inFlight.emplace(plan->runOptions, OrtSessionState::InFlightRun{&plan->terminated, &plan->tag});
  }
  return plan;
}

// runOptions.argmax, after a successful run (any thread): the slices are checked against the
// output's element count, which only the run knows for outputs ORT allocated.
void ArgmaxOutput(RunPlan& plan) {
  const OrtApi* api = plan.state->rt->api;
  plan.argmaxResult.clear();  // a bound plan runs again and again
  OrtValue* value = plan.outputs[static_cast<size_t>(plan.argmaxSlot)];
  OrtTensorTypeAndShapeInfo* info = nullptr;
  size_t count = 0;
  ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  void* data = nullptr;
  std::string err = OrtStatusMessage(api, api->GetTensorTypeAndShape(value, &info), "GetTensorTypeAndShape");
  if (err.empty()) err = OrtStatusMessage(api, api->GetTensorElementType(info, &et), "GetTensorElementType");
  if (err.empty()) err = OrtStatusMessage(api, api->GetTensorShapeElementCount(info, &count), "GetTensorShapeElementCount");
  if (info != nullptr) api->ReleaseTensorTypeAndShapeInfo(info);
  if (err.empty()) err = OrtStatusMessage(api, api->GetTensorMutableData(value, &data), "GetTensorMutableData");
  if (err.empty() && et != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) err = "runOptions.argmax: the output is not float32";
  for (int64_t off : plan.argmaxOffsets) {
    if (!err.empty()) break;
    if (static_cast<uint64_t>(off) + static_cast<uint64_t>(plan.argmaxWidth) > count) {
      err = "runOptions.argmax: the slice at " + std::to_string(off) + " (width " + std::to_string(plan.argmaxWidth) +
            ") is past the output's " + std::to_string(count) + " elements";
      break;
    }
    plan.argmaxResult.push_back(static_cast<int32_t>(
        sampling::Argmax(static_cast<const float*>(data) + off, static_cast<size_t>(plan.argmaxWidth))));
  }
  if (!err.empty()) {
    plan.error = err;
    plan.errorCode = "ORT_FAIL";
  }
}

// Session::Run; any thread, touches no JS. Sets plan.error on failure.
void ExecutePlan(RunPlan& plan) {
  OrtSessionState& st = *plan.state;
  const OrtApi* api = st.rt->api;
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog;
  if (plan.timeoutMs > 0) {
    watchdog = std::thread([&] {
      std::unique_lock<std::mutex> lock(m);
      const auto limit = std::chrono::microseconds(static_cast<int64_t>(plan.timeoutMs * 1000.0));
      if (!cv.wait_for(lock, limit, [&] { return done; })) {
        plan.timedOut = true;
        OrtStatus* s = api->RunOptionsSetTerminate(plan.runOptions);
        if (s != nullptr) api->ReleaseStatus(s);
      }
    });
  }
  const auto started = std::chrono::steady_clock::now();
  OrtStatus* status =
      api->Run(st.session, plan.runOptions, plan.inputNames.data(), plan.inputs.data(),
               plan.inputs.size(), plan.outputNames.data(), plan.outputNames.size(),
               plan.outputs.data());
  plan.runMicros =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
  if (watchdog.joinable()) {
    {
      std::lock_guard<std::mutex> lock(m);
      done = true;
    }
    cv.notify_one();
    watchdog.join();
  }
  plan.error = OrtStatusMessage(api, status, "Run");
  if (plan.error.empty() && plan.argmaxSlot >= 0) ArgmaxOutput(plan);
  if (!plan.error.empty()) {
    if (plan.timedOut) {
      plan.errorCode = "ORT_TIMEOUT";
      plan.error += " (timed out after " + std::to_string(plan.timeoutMs) + " ms)";
    } else if (plan.terminated.load()) {
      plan.errorCode = "ORT_TERMINATED";
      plan.error += " (terminated)";
    }
  }
}

struct ExternalOutput {
  OrtValue* value;
  size_t bytes;
};

void FinalizeOutput(Napi::Env env, void* /*data*/, ExternalOutput* hint) {
  OrtCurrent()->api->ReleaseValue(hint->value);
  Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(hint->bytes));
  delete hint;
}

Napi::Array ShapeToJs(Napi::Env env, const std::vector<int64_t>& shape) {
  Napi::Array a = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) a.Set(i, Napi::Number::New(env, static_cast<double>(shape[i])));
  return a;
}

// The result object of a finished run, on the JS thread. ORT-allocated outputs move into external
// ArrayBuffers (the plan forgets them as they do).
// The data pointer inside an OrtValue, as a BigInt (debugAddresses).
Napi::Value DataAddress(Napi::Env env, const OrtApi* api, OrtValue* value) {
  void* data = nullptr;
  ThrowIfOrtError(env, api, api->GetTensorMutableData(value, &data), "GetTensorMutableData");
  return Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data)));
}

// `kept`: the JS objects BuildPlan collected, in its order (inputs, then preallocated outputs).
Napi::Object BuildResult(Napi::Env env, RunPlan& plan, const std::vector<Napi::Value>& kept) {
  const OrtApi* api = plan.state->rt->api;
  const size_t argmaxKept = plan.argmaxSlot >= 0 ? 1 : 0;
  const size_t firstPrealloc = kept.size() - argmaxKept - plan.preallocArgs.size();
  if (argmaxKept != 0) {
    Napi::Int32Array into = kept.back().As<Napi::Int32Array>();
    for (size_t i = 0; i < plan.argmaxResult.size() && i < into.ElementLength(); ++i) into[i] = plan.argmaxResult[i];
  }
  Napi::Object result = Napi::Object::New(env);
  // How long Session::Run itself took: what a caller measures to choose between run and runSync.
  result.DefineProperty(Napi::PropertyDescriptor::Value(
      "runMicros", Napi::Number::New(env, plan.runMicros), napi_default));
  if (plan.debugAddresses) {
    // The data pointers of the input OrtValues ORT read: proof that they were the caller's memory.
    Napi::Object in = Napi::Object::New(env);
    for (size_t i = 0; i < plan.inputs.size(); ++i) {
      in.Set(plan.inputNames[i], DataAddress(env, api, plan.inputs[i]));
    }
    result.DefineProperty(Napi::PropertyDescriptor::Value("inputAddresses", in, napi_default));
  }
  for (size_t i = 0; i < plan.outputs.size(); ++i) {
    const char* name = plan.outputNames[i];
    Napi::Object o = Napi::Object::New(env);
    if (plan.debugAddresses && plan.outputs[i] != nullptr) {
      o.Set("address", DataAddress(env, api, plan.outputs[i]));  // what ORT wrote, after the run
    }
    if (plan.prealloc[i] >= 0) {
      const TensorArg& t = plan.preallocArgs[plan.prealloc[i]];
      o.Set("dtype", t.dtype->name);
      o.Set("shape", ShapeToJs(env, t.shape));
      o.Set("data", kept[firstPrealloc + plan.prealloc[i]]);
      result.Set(name, o);
      continue;
    }
    OrtValue* value = plan.outputs[i];
    MLOS_REQUIRE(value != nullptr, env, "ORT_FAIL", std::string("Run returned no value for output ") + name);
    int isTensor = 0;
    ThrowIfOrtError(env, api, api->IsTensor(value, &isTensor), "IsTensor");
    MLOS_REQUIRE(isTensor != 0, env, "ORT_FAIL",
                 std::string("output \"") + name + "\" is not a tensor (sequences and maps are not supported)");
    OwnedShapeInfo info;
    ThrowIfOrtError(env, api, api->GetTensorTypeAndShape(value, &info.p), "GetTensorTypeAndShape");
    ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    ThrowIfOrtError(env, api, api->GetTensorElementType(info.p, &et), "GetTensorElementType");
    const DTypeInfo* dtype = OrtDtypeByType(et);
    MLOS_REQUIRE(dtype != nullptr, env, "ORT_FAIL",
                 std::string("output \"") + name + "\" has an unsupported element type " +
                     std::to_string(static_cast<int>(et)));
    size_t rank = 0;
    ThrowIfOrtError(env, api, api->GetDimensionsCount(info.p, &rank), "GetDimensionsCount");
    std::vector<int64_t> shape(rank);
    if (rank > 0) ThrowIfOrtError(env, api, api->GetDimensions(info.p, shape.data(), rank), "GetDimensions");
    size_t elements = 0;
    ThrowIfOrtError(env, api, api->GetTensorShapeElementCount(info.p, &elements),
                    "GetTensorShapeElementCount");
    if (dtype->bits == 0) {
      // A string output: its elements become a JS array of strings (the one copy strings need).
      size_t total = 0;
      ThrowIfOrtError(env, api, api->GetStringTensorDataLength(value, &total), "GetStringTensorDataLength");
      std::vector<char> chars(total + 1);
      std::vector<size_t> offsets(elements + 1);
      if (elements > 0) {
        ThrowIfOrtError(env, api,
                        api->GetStringTensorContent(value, chars.data(), total, offsets.data(), elements),
                        "GetStringTensorContent");
      }
      offsets[elements] = total;
      Napi::Array strings = Napi::Array::New(env, elements);
      for (size_t e = 0; e < elements; ++e) {
        strings.Set(static_cast<uint32_t>(e),
                    Napi::String::New(env, chars.data() + offsets[e], offsets[e + 1] - offsets[e]));
      }
      o.Set("dtype", dtype->name);
      o.Set("shape", ShapeToJs(env, shape));
      o.Set("data", strings);
      result.Set(name, o);
      continue;
    }
    const size_t bytes = static_cast<size_t>(DTypeBytes(*dtype, elements));
    void* data = nullptr;
    ThrowIfOrtError(env, api, api->GetTensorMutableData(value, &data), "GetTensorMutableData");
    Napi::ArrayBuffer ab;
    if (bytes == 0 || data == nullptr) {
      ab = Napi::ArrayBuffer::New(env, 0);
    } else {
      auto* hint = new ExternalOutput{value, bytes};
      try {
        ab = Napi::ArrayBuffer::New(env, data, bytes, FinalizeOutput, hint);
      } catch (...) {
        delete hint;
        throw;
      }
      plan.outputs[i] = nullptr;  // owned by the ArrayBuffer now
      Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(bytes));
    }
    o.Set("dtype", dtype->name);
    o.Set("shape", ShapeToJs(env, shape));
    o.Set("data", ab);
    result.Set(name, o);
  }
  return result;
}

// OrtSession.run's worker (run_worker.h): Session::Run off the JS thread, the result built back on it.
Napi::Value BuildRunResult(Napi::Env env, RunPlan& plan, const std::vector<Napi::Value>& kept) {
  return BuildResult(env, plan, kept);
}
using OrtRunWorker = RunWorker<RunPlan, &ExecutePlan, &BuildRunResult>;

}  // namespace

// ---- class ------------------------------------------------------------------------------------

namespace {
Napi::Value OpenSession(const Napi::CallbackInfo& info);  // OrtSession.open, below
}  // namespace

void OrtSessionWrap::Init(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor = DefineClass(env, "OrtSession", {}, data);
  constexpr auto kMethod = static_cast<napi_property_attributes>(napi_writable | napi_configurable);
  auto method = [&](const char* name, Napi::Function::Callback cb) {
    return Napi::PropertyDescriptor::Value(name, Napi::Function::New(env, cb, name), kMethod);
  };
  ctor.Get("prototype").As<Napi::Object>().DefineProperties({
      method("run", Checked<&OrtSessionWrap::Run>),
      method("runSync", Checked<&OrtSessionWrap::RunSync>),
      method("bind", Checked<&OrtSessionWrap::Bind>),
      method("runBound", Checked<&OrtSessionWrap::RunBound>),
      method("terminate", Checked<&OrtSessionWrap::Terminate>),
      method("release", Checked<&OrtSessionWrap::Release>),
      method("isReleased", Checked<&OrtSessionWrap::IsReleased>),
      method("prepareKserveJson", Checked<&OrtSessionWrap::PrepareKserveJson>),
      method("runKserveJson", Checked<&OrtSessionWrap::RunKserveJson>),
      method("runKserveJsonBatch", Checked<&OrtSessionWrap::RunKserveJsonBatch>),
      method("runKserveGrpc", Checked<&OrtSessionWrap::RunKserveGrpc>),
      method("runKserveGrpcBatch", Checked<&OrtSessionWrap::RunKserveGrpcBatch>),
      method("readKserveResponse", Checked<&OrtSessionWrap::ReadKserveResponse>),
  });
  ctor.Set("open", Napi::Function::New(env, OpenSession, "open"));
  data->ortSessionConstructor = Napi::Persistent(ctor);
  exports.Set("OrtSession", ctor);
  exports.Set("ortInit", Napi::Function::New(env, OrtInit, "ortInit"));
}

OrtSessionWrap* OrtSessionWrap::FromReceiver(const Napi::CallbackInfo& info) {
  Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(&kOrtSessionTag)) {
    MLOS_THROW_TYPE(info.Env(), "OrtSession method called on an object that is not an OrtSession");
  }
  return Unwrap(self.As<Napi::Object>());
}

std::shared_ptr<OrtSessionState> OrtSessionWrap::StateOf(Napi::Value value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kOrtSessionTag)) return nullptr;
  return Unwrap(value.As<Napi::Object>())->state_;
}

OrtSessionWrap::OrtSessionWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<OrtSessionWrap>(info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info.IsConstructCall(), env, "OrtSession must be called with new");
  AddonData* data = GetAddonData(env);
  if (data->pendingSession != nullptr && info[0].IsUndefined() && info[1].IsString()) {
    // OrtSession.open: the session was created on a worker thread (pendingSession is set only
    // around the constructor call below, so user code cannot reach this branch).
    state_ = std::move(data->pendingSession);
    path_ = info[1].As<Napi::String>().Utf8Value();
  } else {
    const OrtRuntime* rt = RequireRuntime(env);
    SessionConfig config = ParseSessionConfig(info, "new OrtSession(modelPath, options?)");
    path_ = config.path;
    std::string err = OpenSessionState(rt, config, &state_);
    MLOS_REQUIRE(err.empty(), env, "ORT_FAIL", err + " (model " + path_ + ")");
  }

  Napi::Object self = info.This().As<Napi::Object>();
  self.TypeTag(&kOrtSessionTag);
  self.DefineProperties({
      Napi::PropertyDescriptor::Value("path", Napi::String::New(env, path_), napi_enumerable),
      Napi::PropertyDescriptor::Value("inputs", IoMetaToJs(env, state_->inputs), napi_enumerable),
      Napi::PropertyDescriptor::Value("outputs", IoMetaToJs(env, state_->outputs), napi_enumerable),
      Napi::PropertyDescriptor::Value("overridable", IoMetaToJs(env, state_->overridable), napi_enumerable),
  });
}

namespace {

// OrtSession.open(modelPath, options?): CreateSession (which reads and optimises the model) on a
// libuv worker thread, so that loading never blocks the event loop (run_worker.h).
Napi::Value OpenSession(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const OrtRuntime* rt = RequireRuntime(env);
  SessionConfig config = ParseSessionConfig(info, "OrtSession.open(modelPath, options?)");
  AddonData* data = GetAddonData(env);
  std::string path = config.path;
  auto* worker = new OpenWorker<OrtSessionState>(
      env, "mlos.OrtSession.open", std::move(path),
      [rt, config = std::move(config)](std::shared_ptr<OrtSessionState>* state) { return OpenSessionState(rt, config, state); },
      &data->pendingSession, &data->ortSessionConstructor, "ORT_FAIL");
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself when done
  return promise;
}

}  // namespace


OrtSessionWrap::~OrtSessionWrap() = default;

std::shared_ptr<OrtSessionState> OrtSessionWrap::Open(Napi::Env env) {
  MLOS_REQUIRE(state_ != nullptr, env, "CLOSED", "OrtSession " + path_ + " is released");
  return state_;
}

Napi::Value OrtSessionWrap::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Object> keep;
  std::unique_ptr<RunPlan> plan = BuildPlan(info, Open(env), &keep, false);
  auto* worker = new OrtRunWorker(env, "mlos.OrtSession.run", info.This().As<Napi::Object>(), std::move(plan), keep);
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself when done
  return promise;
}

Napi::Value OrtSessionWrap::RunSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Object> keep;  // the arguments are alive for the whole call
  std::unique_ptr<RunPlan> plan = BuildPlan(info, Open(env), &keep, true);
  ExecutePlan(*plan);
  if (!plan->error.empty()) MLOS_THROW_CODE(env, plan->errorCode, plan->error);
  return BuildResult(env, *plan, std::vector<Napi::Value>(keep.begin(), keep.end()));
}

namespace {

constexpr napi_type_tag kBoundRunTag = {0x6d6c6f73'626e6472ULL, 0x5c0e2a91'77d3b4e6ULL};

// A run prepared once and executed many times (bind / runBound): the input and output OrtValues
// over the caller's buffers are created once, and every output is preallocated, so a run is
// Session::Run and nothing else: no allocation, no result object. For microsecond models called
// again and again with the same pool tensors, that is most of the per-call cost.
struct BoundRun {
  std::unique_ptr<RunPlan> plan;
  std::vector<Napi::ObjectReference> keep;  // the buffers the OrtValues point into stay alive
};

}  // namespace

// bind(feeds, outputNames, preallocatedOutputs) -> an opaque bound run for runBound().
Napi::Value OrtSessionWrap::Bind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Object> keep;
  std::unique_ptr<RunPlan> plan = BuildPlan(info, Open(env), &keep, true);
  for (size_t i = 0; i < plan->outputs.size(); ++i) {
    MLOS_REQUIRE_TYPE(plan->prealloc[i] >= 0, env,
                      std::string("bind: output \"") + plan->outputNames[i] + "\" must be preallocated");
  }
  for (OrtValue* v : plan->inputs) {
    ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    OwnedShapeInfo si;
    ThrowIfOrtError(env, plan->state->rt->api, plan->state->rt->api->GetTensorTypeAndShape(v, &si.p), "GetTensorTypeAndShape");
    ThrowIfOrtError(env, plan->state->rt->api, plan->state->rt->api->GetTensorElementType(si.p, &et), "GetTensorElementType");
    MLOS_REQUIRE_TYPE(et != ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, env, "bind: string inputs cannot be bound");
  }
  auto* bound = new BoundRun{std::move(plan), {}};
  for (const auto& o : keep) bound->keep.push_back(Napi::Persistent(o));
  Napi::External<BoundRun> ext =
      Napi::External<BoundRun>::New(env, bound, [](Napi::Env, BoundRun* b) { delete b; });
  ext.TypeTag(&kBoundRunTag);
  return ext;
}

// runBound(bound) -> runMicros: Session::Run on the bound buffers, on this thread.
Napi::Value OrtSessionWrap::RunBound(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<OrtSessionState> st = Open(env);
  MLOS_REQUIRE_TYPE(info[0].IsExternal() && info[0].As<Napi::Object>().CheckTypeTag(&kBoundRunTag), env,
                    "runBound(bound): bound must come from bind()");
  BoundRun* bound = info[0].As<Napi::External<BoundRun>>().Data();
  MLOS_REQUIRE_TYPE(bound->plan->state == st, env, "runBound(bound): bound belongs to another session");
  bound->plan->error.clear();
  ExecutePlan(*bound->plan);
  if (!bound->plan->error.empty()) MLOS_THROW_CODE(env, bound->plan->errorCode, bound->plan->error);
  return Napi::Number::New(env, bound->plan->runMicros);
}

// terminate(tag?): every run in flight, or only those whose runOptions.tag is `tag`.
Napi::Value OrtSessionWrap::Terminate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<OrtSessionState> st = Open(env);
  const bool all = info[0].IsUndefined() || info[0].IsNull();
  MLOS_REQUIRE_TYPE(all || info[0].IsString(), env, "terminate(tag?): tag must be a string");
  const std::string tag = all ? std::string() : info[0].As<Napi::String>().Utf8Value();
  std::lock_guard<std::mutex> lock(st->mu);
  size_t n = 0;
  for (auto& [ro, run] : st->inFlight) {
    if (!all && *run.tag != tag) continue;
    run.terminated->store(true);
    ThrowIfOrtError(env, st->rt->api, st->rt->api->RunOptionsSetTerminate(ro), "RunOptionsSetTerminate");
    ++n;
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value OrtSessionWrap::Release(const Napi::CallbackInfo& info) {
  state_.reset();  // the ORT session goes when the last run in flight lets go of it
  return info.Env().Undefined();
}

Napi::Value OrtSessionWrap::IsReleased(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), state_ == nullptr);
}

Napi::Value OrtInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info[0].IsString(), env, "ortInit(libraryPath): libraryPath must be a string");
  std::string error;
  int globalThreads = 0;
  if (info[1].IsObject()) {
    Napi::Value g = info[1].As<Napi::Object>().Get("globalThreads");
    if (!g.IsUndefined()) {
      const double d = g.IsNumber() ? g.As<Napi::Number>().DoubleValue() : -1;
      MLOS_REQUIRE_RANGE(std::isfinite(d) && d >= 0 && d <= 1024 && std::floor(d) == d, env,
                         "ortInit: options.globalThreads must be an integer from 0 to 1024");
      globalThreads = static_cast<int>(d);
    }
  }
  const OrtRuntime* rt = OrtLoad(info[0].As<Napi::String>().Utf8Value(), &error, globalThreads);
  MLOS_REQUIRE(rt != nullptr, env, "ORT_UNAVAILABLE", error);
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", rt->version);
  o.Set("apiVersion", Napi::Number::New(env, rt->apiVersion));
  o.Set("path", rt->path);
  o.Set("globalThreads", Napi::Number::New(env, rt->globalThreads));
  return o;
}

}  // namespace mlos
