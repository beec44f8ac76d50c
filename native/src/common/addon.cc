// The addon's one registration point: every wrapped class and free function is registered here.
#include <napi.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cmath>

#include "common/addon.h"
#include "common/errors.h"
#include "cuda/cuda_alloc_binding.h"
#ifdef MLOS_WITH_HTTP
#include "http/http_server_binding.h"
#endif
#include "ipc/ipc_binding.h"
#include "ort/kserve_json.h"
#include "pool/shm_pool.h"
#include "pool/shm_pool_binding.h"
#include "sampling/argmax.h"
#ifdef MLOS_WITH_ORT
#include "ort/ort_session.h"
#endif
#ifdef MLOS_WITH_BLOB_FETCH
#include "fetch/blob_fetch_binding.h"
#endif

namespace mlos {

Napi::FunctionReference* ErrorClassOf(Napi::Env env) {
  AddonData* data = GetAddonData(env);
  return data != nullptr ? &data->errorClass : nullptr;
}

namespace {

// trimMemory() -> bool: hands the C allocator's free memory back to the OS (glibc's malloc_trim).
// Unloading a model frees its arenas into the allocator, which keeps them mapped; without this,
// RSS after an eviction stays where it was. False where the C library has no such call.
Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

// kserveNumberText(values: Float64Array) -> string: the values as the KServe JSON codec writes
// them, comma-separated; for tests that hold its number formatting to JSON.stringify's.
Napi::Value KserveNumberText(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array,
                    env, "kserveNumberText(values): values must be a Float64Array");
  Napi::Float64Array values = info[0].As<Napi::Float64Array>();
  std::string out;
  for (size_t i = 0; i < values.ElementLength(); ++i) {
    if (i > 0) out += ',';
    kserve::AppendJsNumber(out, values[i]);
  }
  return Napi::String::New(env, out);
}

// argmax(values: Float32Array, start, length) -> index (relative to start) of the largest value
// of values[start, start + length): greedy sampling's hot loop (sampling/argmax.h).
Napi::Value ArgmaxValue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array &&
                        info[1].IsNumber() && info[2].IsNumber(),
                    env, "argmax(values, start, length): values must be a Float32Array, start and length numbers");
  Napi::Float32Array values = info[0].As<Napi::Float32Array>();
  const double start = info[1].As<Napi::Number>().DoubleValue();
  const double length = info[2].As<Napi::Number>().DoubleValue();
  const double total = static_cast<double>(values.ElementLength());
  MLOS_REQUIRE_RANGE(start >= 0 && length >= 0 && std::floor(start) == start && std::floor(length) == length && start + length <= total,
                     env, "argmax(values, start, length): the range is outside the array");
  const size_t at = sampling::Argmax(values.Data() + static_cast<size_t>(start), static_cast<size_t>(length));
  return Napi::Number::New(env, static_cast<double>(at));
}

// setErrorClass(cls): the class used for coded errors (errors.h); called once by the loader.
Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info[0].IsFunction(), env, "setErrorClass(cls): cls must be a class");
  GetAddonData(env)->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

// Unlinks the segments this environment created and still holds when the environment goes away
// (process exit, or a worker thread ending). Mappings stay until their ArrayBuffers are freed.
void CleanupEnv(AddonData* data) {
  for (auto& weak : data->pools) {
    if (auto pool = weak.lock()) pool->Unlink();
  }
  data->pools.clear();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);  // deleted by node-addon-api at environment teardown
  env.AddCleanupHook(CleanupEnv, data);

  ShmPoolWrap::Init(env, exports, data);
#ifdef MLOS_WITH_HTTP
  HttpServerWrap::Init(env, exports);  // HttpServer, httpTlsUnavailable
#endif
  InitCudaAlloc(env, exports);  // cudaInfo, CudaDeviceAllocator, PinnedHostAllocator (every build)
  InitIpc(env, exports);        // IpcHost, IpcClient, ipcLayout
#ifdef MLOS_WITH_ORT
  OrtSessionWrap::Init(env, exports, data);
  exports.Set("ortCompiled", Napi::Boolean::New(env, true));
#else
  exports.Set("ortCompiled", Napi::Boolean::New(env, false));
#endif
#ifdef MLOS_WITH_BLOB_FETCH
  BlobFetchWrap::Init(env, exports);  // BlobFetch (when Node's OpenSSL resolves), blobFetchCompiled
#else
  exports.Set("blobFetchCompiled", Napi::Boolean::New(env, false));
#endif
  exports.Set("addressOf", Napi::Function::New(env, AddressOf, "addressOf"));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("kserveNumberText", Napi::Function::New(env, KserveNumberText, "kserveNumberText"));
  exports.Set("trimMemory", Napi::Function::New(env, TrimMemory, "trimMemory"));
  exports.Set("argmax", Napi::Function::New(env, ArgmaxValue, "argmax"));
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  exports.Set("pageSize", Napi::Number::New(env, static_cast<double>(ShmPool::PageSize())));
  return exports;
}

}  // namespace mlos

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return mlos::Init(env, exports); }

NODE_API_MODULE(mlos_native, InitModule)
