// The TorchModule JS class; see torch_module.h.
#include "torch_module.h"

#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/version.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <vector>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/dtype.h"   // native/src/common/dtype.h: ONNX element type numbers (the IPC wire's)
#include "common/errors.h"  // native/src/common/errors.h: the one error idiom of both addons
#include "ipc/ipc_runner.h"  // native/src/ipc/ipc_runner.h: how the IPC door runs this addon's modules
#include "common/run_worker.h"  // native/src/common/run_worker.h: the run worker and thread priority of both addons

namespace mlos {
namespace torchaddon {

namespace {

constexpr napi_type_tag kTorchModuleTag = {0x6d6c6f73'746f7263ULL, 0x8e21c5a7'3f90d64bULL};
constexpr double kMaxSafeInteger = 9007199254740991.0;

// The element types a run accepts and returns, by the names Tensor and axon.yaml use.
struct TorchDtype {
  const char* name;
  at::ScalarType type;
  size_t bytes;
};
const TorchDtype kDtypes[] = {
    {"float32", at::kFloat, 4}, {"float64", at::kDouble, 8}, {"float16", at::kHalf, 2},
    {"bfloat16", at::kBFloat16, 2}, {"int8", at::kChar, 1}, {"int16", at::kShort, 2},
    {"int32", at::kInt, 4}, {"int64", at::kLong, 8}, {"uint8", at::kByte, 1},
    {"bool", at::kBool, 1},
};

const TorchDtype* DtypeByName(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const TorchDtype* DtypeByType(at::ScalarType t) {
  for (const auto& d : kDtypes) {
    if (d.type == t) return &d;
  }
  return nullptr;
}

std::string DtypeNames() {
  std::string s;
  for (const auto& d : kDtypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

// The message of a libtorch exception, without its C++ backtrace.
std::string TorchMessage(const std::exception& e) {
  if (const auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  return e.what();
}


}  // namespace

// ---- module state (shared by the JS object and the runs in flight) -------------------------------

struct MethodInfo {
  std::string name;
  std::string schema;
  size_t inputs = 0;    // arguments after self
  size_t required = 0;  // of those, the ones without a default
};

struct TorchModuleState {
  torch::jit::Module module;
  std::string path;
  int threads = 0;  // 0: libtorch's default
  std::vector<MethodInfo> methods;
  int64_t parameterBytes = 0;

  const MethodInfo* Find(const std::string& name) const {
    for (const auto& m : methods) {
      if (m.name == name) return &m;
    }
    return nullptr;
  }
  std::string Names() const {
    std::string s;
    for (const auto& m : methods) s += (s.empty() ? "" : ", ") + m.name;
    return s;
  }
};

namespace {

struct OpenConfig {
  std::string path;
  int threads = 0;
};

OpenConfig ParseOpenConfig(const Napi::CallbackInfo& info, const char* form) {
  Napi::Env env = info.Env();
  OpenConfig c;
  MLOS_REQUIRE_TYPE(info[0].IsString(), env, std::string(form) + ": path must be a string");
  c.path = info[0].As<Napi::String>().Utf8Value();
  if (info[1].IsUndefined() || info[1].IsNull()) return c;
  MLOS_REQUIRE_TYPE(info[1].IsObject(), env, std::string(form) + ": options must be an object");
  Napi::Value t = info[1].As<Napi::Object>().Get("threads");
  if (!t.IsUndefined()) {
    const double d = t.IsNumber() ? t.As<Napi::Number>().DoubleValue() : -1;
    MLOS_REQUIRE_RANGE(std::isfinite(d) && d >= 0 && d <= 1024 && std::floor(d) == d, env,
                       "options.threads must be an integer from 0 (libtorch's default) to 1024");
    c.threads = static_cast<int>(d);
  }
  return c;
}

// torch::jit::load and the module's metadata; "" or what failed. Touches no JS (any thread).
std::string OpenState(const OpenConfig& c, std::shared_ptr<TorchModuleState>* out) {
  try {
    auto st = std::make_shared<TorchModuleState>();
    st->path = c.path;
    st->threads = c.threads;
    st->module = torch::jit::load(c.path);
    st->module.eval();
    for (const auto& m : st->module.get_methods()) {
      MethodInfo mi;
      mi.name = m.name();
      const c10::FunctionSchema& schema = m.function().getSchema();
      std::ostringstream os;
      os << schema;
      mi.schema = os.str();
      const auto& args = schema.arguments();
      mi.inputs = args.empty() ? 0 : args.size() - 1;
      for (size_t i = 1; i < args.size(); ++i) {
        if (!args[i].default_value().has_value()) mi.required++;
      }
      st->methods.push_back(std::move(mi));
    }
    for (const auto& p : st->module.parameters()) st->parameterBytes += static_cast<int64_t>(p.nbytes());
    for (const auto& b : st->module.buffers()) st->parameterBytes += static_cast<int64_t>(b.nbytes());
    *out = std::move(st);
    return "";
  } catch (const std::exception& e) {
    return "torch::jit::load: " + TorchMessage(e);
  } catch (...) {
    return "torch::jit::load: an unknown exception";
  }
}

Napi::Array MethodsToJs(Napi::Env env, const std::vector<MethodInfo>& methods) {
  Napi::Array arr = Napi::Array::New(env, methods.size());
  for (size_t i = 0; i < methods.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", methods[i].name);
    o.Set("schema", methods[i].schema);
    o.Set("inputs", Napi::Number::New(env, static_cast<double>(methods[i].inputs)));
    o.Set("requiredInputs", Napi::Number::New(env, static_cast<double>(methods[i].required)));
    o.Freeze();
    arr.Set(static_cast<uint32_t>(i), o);
  }
  arr.Freeze();
  return arr;
}

// ---- one run ---------------------------------------------------------------------------------------

struct InputArg {
  const TorchDtype* dtype = nullptr;
  std::vector<int64_t> shape;
  void* data = nullptr;
  size_t bytes = 0;
};

struct ForwardPlan {
  std::shared_ptr<TorchModuleState> state;
  std::string method = "forward";
  std::vector<InputArg> inputs;
  bool debugAddresses = false;
  std::vector<uint64_t> inputAddresses;
  std::vector<torch::Tensor> outputs;  // contiguous CPU tensors of supported dtypes, after the run
  std::vector<const TorchDtype*> outputDtypes;
  double runMicros = 0;
  std::string error;
  const char* errorCode = "TORCH_FAIL";
};

// The memory of a JS ArrayBuffer, typed array or DataView.
void BufferSpan(Napi::Env env, Napi::Value value, const std::string& what, uint8_t** data,
                size_t* length) {
  Napi::ArrayBuffer ab;
  size_t off = 0;
  if (value.IsArrayBuffer()) {
    ab = value.As<Napi::ArrayBuffer>();
    *length = ab.ByteLength();
  } else if (value.IsTypedArray()) {
    auto ta = value.As<Napi::TypedArray>();
    ab = ta.ArrayBuffer();
    off = ta.ByteOffset();
    *length = ta.ByteLength();
  } else if (value.IsDataView()) {
    auto dv = value.As<Napi::DataView>();
    ab = dv.ArrayBuffer();
    off = dv.ByteOffset();
    *length = dv.ByteLength();
  } else {
    MLOS_THROW_TYPE(env, what + ": data must be an ArrayBuffer, a typed array or a DataView");
  }
  MLOS_REQUIRE_TYPE(!ab.IsDetached(), env, what + ": the ArrayBuffer is detached (freed)");
  *data = ab.Data() != nullptr ? static_cast<uint8_t*>(ab.Data()) + off : nullptr;
}

// Checks one { dtype, shape, data } and returns where its elements are; `keep` gets `data`.
InputArg ParseInput(Napi::Env env, Napi::Value v, const std::string& what, std::vector<Napi::Object>* keep) {
  MLOS_REQUIRE_TYPE(v.IsObject(), env, what + " must be an object { dtype, shape, data }");
  Napi::Object o = v.As<Napi::Object>();
  InputArg t;
  Napi::Value dt = o.Get("dtype");
  MLOS_REQUIRE_TYPE(dt.IsString(), env, what + ": dtype must be a string such as \"float32\"");
  const std::string dtName = dt.As<Napi::String>().Utf8Value();
  t.dtype = DtypeByName(dtName);
  MLOS_REQUIRE_TYPE(t.dtype != nullptr, env,
                    what + ": dtype \"" + dtName + "\" is not supported by the torch plugin (one of " +
                        DtypeNames() + ")");
  Napi::Value sh = o.Get("shape");
  MLOS_REQUIRE_TYPE(sh.IsArray(), env, what + ": shape must be an array of integers");
  Napi::Array shape = sh.As<Napi::Array>();
  uint64_t elements = 1;
  bool overflow = false;
  for (uint32_t i = 0; i < shape.Length(); ++i) {
    Napi::Value d = shape.Get(i);
    const double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1.0;
    MLOS_REQUIRE_TYPE(std::isfinite(x) && x >= 0 && std::floor(x) == x && x <= kMaxSafeInteger, env,
                      what + ": shape[" + std::to_string(i) + "] must be a non-negative integer, got " +
                          d.ToString().Utf8Value());
    const uint64_t n = static_cast<uint64_t>(x);
    if (n != 0 && elements > (uint64_t{1} << 60) / n) overflow = true;
    elements *= n;
    t.shape.push_back(static_cast<int64_t>(n));
  }
  MLOS_REQUIRE_RANGE(!overflow, env, what + ": the shape has too many elements");
  Napi::Value data = o.Get("data");
  uint8_t* ptr = nullptr;
  BufferSpan(env, data, what, &ptr, &t.bytes);
  const uint64_t need = elements * t.dtype->bytes;
  if (t.bytes != need) {
    std::string dims;
    for (int64_t d : t.shape) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    MLOS_THROW_TYPE(env, what + ": data has " + std::to_string(t.bytes) + " bytes, " + dtName + " [" +
                             dims + "] needs " + std::to_string(need));
  }
  MLOS_REQUIRE_TYPE(reinterpret_cast<uintptr_t>(ptr) % t.dtype->bytes == 0, env,
                    what + ": data is not aligned to its " + std::to_string(t.dtype->bytes) +
                        "-byte elements (use a typed array of the dtype, or Tensor.fromBytes)");
  // A zero-byte buffer may have no data pointer; from_blob wants one.
  static uint64_t empty[1];
  t.data = ptr != nullptr ? static_cast<void*>(ptr) : static_cast<void*>(empty);
  keep->push_back(data.As<Napi::Object>());
  return t;
}

// Builds a run from forward(inputs, options?) on the JS thread; `keep` gets every JS object whose
// memory the run reads.
std::unique_ptr<ForwardPlan> BuildPlan(const Napi::CallbackInfo& info, std::shared_ptr<TorchModuleState> state,
                                       std::vector<Napi::Object>* keep) {
  Napi::Env env = info.Env();
  auto plan = std::make_unique<ForwardPlan>();
  plan->state = std::move(state);
  if (!info[1].IsUndefined() && !info[1].IsNull()) {
    MLOS_REQUIRE_TYPE(info[1].IsObject(), env, "forward: options must be an object { method?, debugAddresses? }");
    Napi::Object o = info[1].As<Napi::Object>();
    Napi::Value m = o.Get("method");
    if (!m.IsUndefined()) {
      MLOS_REQUIRE_TYPE(m.IsString(), env, "forward: options.method must be a string");
      plan->method = m.As<Napi::String>().Utf8Value();
    }
    Napi::Value dbg = o.Get("debugAddresses");
    if (!dbg.IsUndefined()) {
      MLOS_REQUIRE_TYPE(dbg.IsBoolean(), env, "forward: options.debugAddresses must be a boolean");
      plan->debugAddresses = dbg.As<Napi::Boolean>().Value();
    }
  }
  const MethodInfo* method = plan->state->Find(plan->method);
  MLOS_REQUIRE_TYPE(method != nullptr, env,
                    "the module has no method \"" + plan->method + "\" (it has: " + plan->state->Names() + ")");
  MLOS_REQUIRE_TYPE(info[0].IsArray(), env,
                    "forward(inputs, ...): inputs must be an array of { dtype, shape, data }");
  Napi::Array inputs = info[0].As<Napi::Array>();
  const size_t n = inputs.Length();
  MLOS_REQUIRE_RANGE(n >= method->required && n <= method->inputs, env,
                     "forward: " + method->name + " takes " +
                         (method->required == method->inputs ? std::to_string(method->inputs)
                                                             : std::to_string(method->required) + " to " +
                                                                   std::to_string(method->inputs)) +
                         " input(s), got " + std::to_string(n) + " (" + method->schema + ")");
  for (uint32_t i = 0; i < n; ++i) {
    plan->inputs.push_back(ParseInput(env, inputs.Get(i), "input " + std::to_string(i), keep));
  }
  return plan;
}

// Appends the tensors of a method's result, flattened in order; "" or why it cannot.
std::string Flatten(const c10::IValue& v, const std::string& where, std::vector<torch::Tensor>* out) {
  if (v.isTensor()) {
    out->push_back(v.toTensor());
  } else if (v.isTuple()) {
    const auto& elems = v.toTupleRef().elements();
    for (size_t i = 0; i < elems.size(); ++i) {
      std::string e = Flatten(elems[i], where + "[" + std::to_string(i) + "]", out);
      if (!e.empty()) return e;
    }
  } else if (v.isList()) {
    const auto list = v.toListRef();
    for (size_t i = 0; i < list.size(); ++i) {
      std::string e = Flatten(list[i], where + "[" + std::to_string(i) + "]", out);
      if (!e.empty()) return e;
    }
  } else if (v.isDouble()) {
    out->push_back(torch::scalar_tensor(v.toDouble(), torch::kFloat64));
  } else if (v.isInt()) {
    out->push_back(torch::scalar_tensor(v.toInt(), torch::kInt64));
  } else if (v.isBool()) {
    out->push_back(torch::scalar_tensor(v.toBool(), torch::kBool));
  } else {
    return where + " is a " + v.tagKind() + "; only tensors, numbers and tuples or lists of them are returned";
  }
  return "";
}

// The method itself and its outputs made ready to hand over; any thread, touches no JS. Sets
// plan.error on failure.
void ExecutePlan(ForwardPlan& plan) {
  try {
    c10::InferenceMode guard;
    if (plan.state->threads > 0 && at::get_num_threads() != plan.state->threads) {
      at::set_num_threads(plan.state->threads);
    }
    std::vector<c10::IValue> stack;
    stack.reserve(plan.inputs.size());
    for (const InputArg& in : plan.inputs) {
      stack.emplace_back(torch::from_blob(in.data, in.shape, torch::TensorOptions().dtype(in.dtype->type)));
      if (plan.debugAddresses) {
        plan.inputAddresses.push_back(reinterpret_cast<uintptr_t>(stack.back().toTensor().data_ptr()));
      }
    }
    std::vector<torch::Tensor> raw;
    {
      torch::jit::Method method = plan.state->module.get_method(plan.method);
      const auto started = std::chrono::steady_clock::now();
      c10::IValue result = method(std::move(stack));
      plan.runMicros =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
      plan.error = Flatten(result, "the result of " + plan.method, &raw);
      if (!plan.error.empty()) return;
    }  // the result is gone: `raw` holds the only references the run made to its outputs
    std::unordered_map<const c10::TensorImpl*, size_t> refs;  // how often `raw` holds each tensor
    for (const auto& t : raw) refs[t.unsafeGetTensorImpl()]++;
    std::unordered_set<const void*> storages;
    for (size_t i = 0; i < raw.size(); ++i) {
      torch::Tensor t = raw[i];
      const TorchDtype* dtype = DtypeByType(t.scalar_type());
      if (dtype == nullptr) {
        plan.error = "output " + std::to_string(i) + " of " + plan.method + " has dtype " +
                     std::string(c10::toString(t.scalar_type())) + ", which the torch plugin does not return (one of " +
                     DtypeNames() + ")";
        return;
      }
      if (!t.device().is_cpu()) t = t.cpu();
      if (!t.is_contiguous()) t = t.contiguous();
      // Each buffer handed to JS must own its bytes: copy an output whose memory is the caller's
      // (an input returned, or a view of one), the module's (a parameter), or another output's.
      const size_t ours = t.unsafeGetTensorImpl() == raw[i].unsafeGetTensorImpl() ? refs[t.unsafeGetTensorImpl()] + 1 : 1;
      bool shared = t.use_count() > ours ||
                    (t.has_storage() && t.storage().use_count() > 1) ||
                    !storages.insert(t.has_storage() ? t.storage().unsafeGetStorageImpl() : nullptr).second;
      const auto* begin = static_cast<const uint8_t*>(t.data_ptr());
      const auto* end = begin + t.nbytes();
      for (const InputArg& in : plan.inputs) {
        const auto* ib = static_cast<const uint8_t*>(in.data);
        if (begin < ib + in.bytes && ib < end) shared = true;
      }
      if (shared && t.nbytes() > 0) t = t.clone(at::MemoryFormat::Contiguous);
      plan.outputs.push_back(std::move(t));
      plan.outputDtypes.push_back(dtype);
    }
  } catch (const std::exception& e) {
    plan.error = plan.method + ": " + TorchMessage(e);
  } catch (...) {
    plan.error = plan.method + ": an unknown exception";
  }
}

void FinalizeOutput(Napi::Env env, void* /*data*/, torch::Tensor* tensor) {
  const int64_t bytes = static_cast<int64_t>(tensor->nbytes());
  delete tensor;
  Napi::MemoryManagement::AdjustExternalMemory(env, -bytes);
}

// The result array of a finished run, on the JS thread: each output moves into an external
// ArrayBuffer over its own memory (the plan forgets it as it does).
Napi::Array BuildResult(Napi::Env env, ForwardPlan& plan) {
  Napi::Array result = Napi::Array::New(env, plan.outputs.size());
  result.DefineProperty(
      Napi::PropertyDescriptor::Value("runMicros", Napi::Number::New(env, plan.runMicros), napi_default));
  if (plan.debugAddresses) {
    Napi::Array in = Napi::Array::New(env, plan.inputAddresses.size());
    for (size_t i = 0; i < plan.inputAddresses.size(); ++i) {
      in.Set(static_cast<uint32_t>(i), Napi::BigInt::New(env, plan.inputAddresses[i]));
    }
    result.DefineProperty(Napi::PropertyDescriptor::Value("inputAddresses", in, napi_default));
  }
  for (size_t i = 0; i < plan.outputs.size(); ++i) {
    torch::Tensor& t = plan.outputs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("dtype", plan.outputDtypes[i]->name);
    Napi::Array shape = Napi::Array::New(env, t.dim());
    for (int64_t d = 0; d < t.dim(); ++d) {
      shape.Set(static_cast<uint32_t>(d), Napi::Number::New(env, static_cast<double>(t.size(d))));
    }
    o.Set("shape", shape);
    const size_t bytes = t.nbytes();
    void* data = t.data_ptr();
    if (plan.debugAddresses) {
      o.Set("address", Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data))));
    }
    Napi::ArrayBuffer ab;
    if (bytes == 0 || data == nullptr) {
      ab = Napi::ArrayBuffer::New(env, 0);
    } else {
      auto* owned = new torch::Tensor(std::move(t));
      try {
        ab = Napi::ArrayBuffer::New(env, data, bytes, FinalizeOutput, owned);
      } catch (...) {
        delete owned;
        throw;
      }
      Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(bytes));
    }
    o.Set("data", ab);
    result.Set(static_cast<uint32_t>(i), o);
  }
  plan.outputs.clear();
  return result;
}

// TorchModule.forward's worker (native/src/common/run_worker.h): the forward pass off the JS thread.
Napi::Value BuildForwardResult(Napi::Env env, ForwardPlan& plan, const std::vector<Napi::Value>& /*kept*/) {
  return BuildResult(env, plan);
}
using ForwardWorker = RunWorker<ForwardPlan, &ExecutePlan, &BuildForwardResult>;

// TorchModule.open(path, options?): torch::jit::load (which reads and deserialises the whole
// archive) on a libuv worker thread, so that loading never blocks the event loop (run_worker.h).
Napi::Value OpenModule(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OpenConfig config = ParseOpenConfig(info, "TorchModule.open(path, options?)");
  TorchAddonData* data = GetTorchAddonData(env);
  std::string path = config.path;
  auto* worker = new OpenWorker<TorchModuleState>(
      env, "mlos.TorchModule.open", std::move(path),
      [config = std::move(config)](std::shared_ptr<TorchModuleState>* state) { return OpenState(config, state); },
      &data->pendingModule, &data->torchModuleConstructor, "TORCH_FAIL");
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself when done
  return promise;
}

}  // namespace

// ---- class ------------------------------------------------------------------------------------

void TorchModuleWrap::Init(Napi::Env env, Napi::Object exports, TorchAddonData* data) {
  Napi::Function ctor = DefineClass(env, "TorchModule", {}, data);
  // Methods go on the prototype as plain functions that check the receiver's type tag before
  // unwrapping (ObjectWrap's own InstanceMethod would unwrap first).
  constexpr auto kMethod = static_cast<napi_property_attributes>(napi_writable | napi_configurable);
  auto method = [&](const char* name, Napi::Function::Callback cb) {
    return Napi::PropertyDescriptor::Value(name, Napi::Function::New(env, cb, name), kMethod);
  };
  ctor.Get("prototype").As<Napi::Object>().DefineProperties({
      method("forward", Checked<&TorchModuleWrap::Forward>),
      method("forwardSync", Checked<&TorchModuleWrap::ForwardSync>),
      method("release", Checked<&TorchModuleWrap::Release>),
      method("ipcRunner", Checked<&TorchModuleWrap::IpcRunner>),
      method("isReleased", Checked<&TorchModuleWrap::IsReleased>),
  });
  ctor.Set("open", Napi::Function::New(env, OpenModule, "open"));
  data->torchModuleConstructor = Napi::Persistent(ctor);
  exports.Set("TorchModule", ctor);
}

TorchModuleWrap* TorchModuleWrap::FromReceiver(const Napi::CallbackInfo& info) {
  Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(&kTorchModuleTag)) {
    MLOS_THROW_TYPE(info.Env(), "TorchModule method called on an object that is not a TorchModule");
  }
  return Unwrap(self.As<Napi::Object>());
}

TorchModuleWrap::TorchModuleWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TorchModuleWrap>(info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info.IsConstructCall(), env, "TorchModule must be called with new");
  TorchAddonData* data = GetTorchAddonData(env);
  // Only TorchModule.open constructs one (pendingModule is set just around that call, so user code
  // cannot reach it): loading a TorchScript archive is file I/O and deserialisation, never done on
  // the event loop.
  MLOS_REQUIRE_TYPE(data->pendingModule != nullptr && info[0].IsUndefined() && info[1].IsString(), env,
                    "TorchModule cannot be constructed directly: use TorchModule.open(path, options?)");
  state_ = std::move(data->pendingModule);
  path_ = info[1].As<Napi::String>().Utf8Value();
  Napi::Object self = info.This().As<Napi::Object>();
  self.TypeTag(&kTorchModuleTag);
  self.DefineProperties({
      Napi::PropertyDescriptor::Value("path", Napi::String::New(env, path_), napi_enumerable),
      Napi::PropertyDescriptor::Value("methods", MethodsToJs(env, state_->methods), napi_enumerable),
      Napi::PropertyDescriptor::Value("parameterBytes",
                                      Napi::Number::New(env, static_cast<double>(state_->parameterBytes)),
                                      napi_enumerable),
  });
  externalBytes_ = state_->parameterBytes;
  if (externalBytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(env, externalBytes_);
}

TorchModuleWrap::~TorchModuleWrap() { ForgetMemory(); }

void TorchModuleWrap::ForgetMemory() {
  if (externalBytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -externalBytes_);
  externalBytes_ = 0;
}

std::shared_ptr<TorchModuleState> TorchModuleWrap::Open(Napi::Env env) {
  MLOS_REQUIRE(state_ != nullptr, env, "CLOSED", "TorchModule " + path_ + " is released");
  return state_;
}

Napi::Value TorchModuleWrap::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Object> keep;
  std::unique_ptr<ForwardPlan> plan = BuildPlan(info, Open(env), &keep);
  auto* worker = new ForwardWorker(env, "mlos.TorchModule.forward", info.This().As<Napi::Object>(), std::move(plan), keep);
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself when done
  return promise;
}

Napi::Value TorchModuleWrap::ForwardSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Object> keep;  // the arguments are alive for the whole call
  std::unique_ptr<ForwardPlan> plan = BuildPlan(info, Open(env), &keep);
  ExecutePlan(*plan);
  if (!plan->error.empty()) MLOS_THROW_CODE(env, plan->errorCode, plan->error);
  return BuildResult(env, *plan);
}

// ---- the IPC door's native runner (native/src/ipc/ipc_runner.h) -------------------------------------

namespace {

// What the plugin declared (spec.io): inputs in the order forward takes them, outputs in the order
// it returns them. TorchScript has no signature of its own, so the door checks against this one.
struct IpcIo {
  std::string name;
  const TorchDtype* dtype = nullptr;
  std::vector<int64_t> shape;  // -1: any
};

struct TorchIpcRunner {
  mlos_ipc_runner c;  // first: the door holds a pointer to it
  std::atomic<int> refs{1};
  std::shared_ptr<TorchModuleState> state;
  std::vector<IpcIo> inputs, outputs;
};

void SetIpcError(mlos_ipc_response* out, const char* code, const std::string& message, uint64_t needed = 0) {
  out->status = 1;
  out->n_outputs = 0;
  out->needed_bytes = needed;
  std::snprintf(out->code, sizeof out->code, "%s", code);
  std::snprintf(out->message, sizeof out->message, "%s", message.c_str());
}

void RunnerRun(void* self, const mlos_ipc_request* r, uint8_t* arena, uint64_t arena_bytes, mlos_ipc_response* out) {
  auto* runner = static_cast<TorchIpcRunner*>(self);
  ForwardPlan plan;
  plan.state = runner->state;
  // Each declared input, from the request by name, checked against its declared dtype and shape.
  for (const IpcIo& io : runner->inputs) {
    const mlos_ipc_tensor* t = nullptr;
    for (uint32_t i = 0; i < r->n_inputs; ++i) {
      if (io.name == r->inputs[i].name) t = &r->inputs[i];
    }
    if (t == nullptr) return SetIpcError(out, "IPC_BAD_TENSOR", "input '" + io.name + "' is missing");
    const DTypeInfo* d = DTypeByOnnx(static_cast<int32_t>(t->dtype));
    if (d == nullptr || DtypeByName(d->name) != io.dtype) {
      return SetIpcError(out, "IPC_BAD_TENSOR", "input '" + io.name + "' is " + io.dtype->name + ", not " + (d ? d->name : "?"));
    }
    if (t->rank != io.shape.size()) {
      return SetIpcError(out, "IPC_BAD_TENSOR", "input '" + io.name + "' has rank " + std::to_string(io.shape.size()) + ", not " + std::to_string(t->rank));
    }
    InputArg a;
    a.dtype = io.dtype;
    for (uint32_t k = 0; k < t->rank; ++k) {
      if (io.shape[k] >= 0 && io.shape[k] != t->shape[k]) {
        return SetIpcError(out, "IPC_BAD_TENSOR", "input '" + io.name + "' dimension " + std::to_string(k) + " is " + std::to_string(io.shape[k]) + ", not " + std::to_string(t->shape[k]));
      }
      a.shape.push_back(t->shape[k]);
    }
    if (t->offset % io.dtype->bytes != 0) return SetIpcError(out, "IPC_BAD_TENSOR", "input '" + io.name + "' is not aligned to its elements in the arena");
    static uint64_t empty[1];
    a.data = t->bytes > 0 ? static_cast<void*>(arena + t->offset) : static_cast<void*>(empty);
    a.bytes = t->bytes;
    plan.inputs.push_back(std::move(a));
  }
  for (uint32_t i = 0; i < r->n_inputs; ++i) {
    bool known = false;
    for (const IpcIo& io : runner->inputs) known = known || io.name == r->inputs[i].name;
    if (!known) return SetIpcError(out, "IPC_BAD_TENSOR", std::string("the model has no input '") + r->inputs[i].name + "'");
  }
  ExecutePlan(plan);
  if (!plan.error.empty()) return SetIpcError(out, "IPC_RUN_FAILED", plan.error);
  if (plan.outputs.size() != runner->outputs.size()) {
    return SetIpcError(out, "IPC_RUN_FAILED", "the module returned " + std::to_string(plan.outputs.size()) + " outputs, its spec.io declares " + std::to_string(runner->outputs.size()));
  }
  // The outputs asked for (all by default), copied into the window one after another.
  uint64_t cursor = 0;
  uint32_t n = 0;
  for (size_t i = 0; i < plan.outputs.size(); ++i) {
    const IpcIo& io = runner->outputs[i];
    bool wanted = r->n_outputs == 0;
    for (uint32_t k = 0; k < r->n_outputs; ++k) wanted = wanted || io.name == r->outputs[k];
    if (!wanted) continue;
    const torch::Tensor& t = plan.outputs[i];
    if (n >= MLOS_IPC_MAX_TENSORS || t.dim() > MLOS_IPC_MAX_RANK) return SetIpcError(out, "IPC_RUN_FAILED", "output '" + io.name + "' has more dimensions than the IPC door carries");
    const uint64_t bytes = t.nbytes();
    mlos_ipc_tensor& o = out->outputs[n++];
    std::snprintf(o.name, sizeof o.name, "%s", io.name.c_str());
    o.dtype = static_cast<uint32_t>(DTypeByName(plan.outputDtypes[i]->name)->onnx);
    o.rank = static_cast<uint32_t>(t.dim());
    for (int64_t d = 0; d < t.dim(); ++d) o.shape[d] = t.size(d);
    o.offset = r->out_offset + cursor;
    o.bytes = bytes;
    if (cursor + bytes <= r->out_bytes && bytes > 0) std::memcpy(arena + r->out_offset + cursor, t.data_ptr(), bytes);
    cursor = (cursor + bytes + MLOS_IPC_ALIGN - 1) / MLOS_IPC_ALIGN * MLOS_IPC_ALIGN;
  }
  for (uint32_t k = 0; k < r->n_outputs; ++k) {
    bool known = false;
    for (const IpcIo& io : runner->outputs) known = known || io.name == r->outputs[k];
    if (!known) return SetIpcError(out, "IPC_BAD_TENSOR", std::string("the model has no output '") + r->outputs[k] + "'");
  }
  for (uint32_t k = 0; k < n; ++k) {
    if (out->outputs[k].offset + out->outputs[k].bytes > r->out_offset + r->out_bytes) {
      return SetIpcError(out, "IPC_OUTPUT_TOO_SMALL", "the outputs need a window of " + std::to_string(cursor) + " bytes, the request gave " + std::to_string(r->out_bytes), cursor);
    }
  }
  (void)arena_bytes;
  out->compute_ns = static_cast<uint64_t>(plan.runMicros * 1000);
  out->status = 0;
  out->n_outputs = n;
}

void RunnerRetain(void* self) { static_cast<TorchIpcRunner*>(self)->refs.fetch_add(1); }
void RunnerRelease(void* self) {
  auto* runner = static_cast<TorchIpcRunner*>(self);
  if (runner->refs.fetch_sub(1) == 1) delete runner;
}

std::vector<IpcIo> ParseIpcIo(Napi::Env env, Napi::Value v, const char* what, bool typed) {
  MLOS_REQUIRE_TYPE(v.IsArray(), env, std::string("ipcRunner: ") + what + " must be an array of { name, dtype, shape }");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<IpcIo> list;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Object o = a.Get(i).As<Napi::Object>();
    IpcIo io;
    io.name = o.Get("name").As<Napi::String>().Utf8Value();
    if (typed) {
      io.dtype = DtypeByName(o.Get("dtype").As<Napi::String>().Utf8Value());
      MLOS_REQUIRE_TYPE(io.dtype != nullptr, env, "ipcRunner: input '" + io.name + "' has a dtype the torch plugin does not take");
      Napi::Array shape = o.Get("shape").As<Napi::Array>();
      for (uint32_t k = 0; k < shape.Length(); ++k) io.shape.push_back(shape.Get(k).IsNumber() ? shape.Get(k).As<Napi::Number>().Int64Value() : -1);
    }
    list.push_back(std::move(io));
  }
  return list;
}

}  // namespace

// ipcRunner(inputs, outputs) -> External over an mlos_ipc_runner that runs this module.
Napi::Value TorchModuleWrap::IpcRunner(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE(state_ != nullptr, env, "CLOSED", "this TorchModule was released");
  auto* runner = new TorchIpcRunner();
  try {
    runner->inputs = ParseIpcIo(env, info[0], "inputs", true);
    runner->outputs = ParseIpcIo(env, info[1], "outputs", false);
  } catch (...) {
    delete runner;
    throw;
  }
  runner->state = state_;
  runner->c = mlos_ipc_runner{MLOS_IPC_RUNNER_ABI, runner, &RunnerRun, &RunnerRetain, &RunnerRelease};
  return Napi::External<mlos_ipc_runner>::New(env, &runner->c, [](Napi::Env, mlos_ipc_runner* c) { RunnerRelease(c->self); });
}

Napi::Value TorchModuleWrap::Release(const Napi::CallbackInfo& info) {
  state_.reset();  // the module goes when the last run in flight lets go of it
  ForgetMemory();
  return info.Env().Undefined();
}

Napi::Value TorchModuleWrap::IsReleased(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), state_ == nullptr);
}

Napi::Value TorchInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", TORCH_VERSION);
  o.Set("threads", Napi::Number::New(env, at::get_num_threads()));
  o.Set("interopThreads", Napi::Number::New(env, at::get_num_interop_threads()));
  return o;
}

}  // namespace torchaddon
}  // namespace mlos
