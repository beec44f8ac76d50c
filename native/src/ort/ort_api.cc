// ONNX Runtime loading; see ort_api.h.
#include "ort/ort_api.h"

#include <dlfcn.h>

#include <cstring>
#include <mutex>

namespace mlos {

namespace {

std::mutex g_mutex;
OrtRuntime* g_runtime = nullptr;  // leaked on purpose: see ort_api.h

const char* OrtErrorCodeName(OrtErrorCode c) {
  switch (c) {
    case ORT_OK: return "ORT_OK";
    case ORT_FAIL: return "ORT_FAIL";
    case ORT_INVALID_ARGUMENT: return "ORT_INVALID_ARGUMENT";
    case ORT_NO_SUCHFILE: return "ORT_NO_SUCHFILE";
    case ORT_NO_MODEL: return "ORT_NO_MODEL";
    case ORT_ENGINE_ERROR: return "ORT_ENGINE_ERROR";
    case ORT_RUNTIME_EXCEPTION: return "ORT_RUNTIME_EXCEPTION";
    case ORT_INVALID_PROTOBUF: return "ORT_INVALID_PROTOBUF";
    case ORT_MODEL_LOADED: return "ORT_MODEL_LOADED";
    case ORT_NOT_IMPLEMENTED: return "ORT_NOT_IMPLEMENTED";
    case ORT_INVALID_GRAPH: return "ORT_INVALID_GRAPH";
    case ORT_EP_FAIL: return "ORT_EP_FAIL";
    default: return "ORT_ERROR";
  }
}

// common/dtype.h holds ONNX's element type numbers; they must be ORT's.
#define MLOS_SAME_ONNX_TYPE(dtype, ort) \
  static_assert(DTypeOf(DType::dtype).onnx == ONNX_TENSOR_ELEMENT_DATA_TYPE_##ort, #dtype " is not ORT's " #ort)
MLOS_SAME_ONNX_TYPE(kFloat32, FLOAT);
MLOS_SAME_ONNX_TYPE(kFloat64, DOUBLE);
MLOS_SAME_ONNX_TYPE(kInt8, INT8);
MLOS_SAME_ONNX_TYPE(kInt16, INT16);
MLOS_SAME_ONNX_TYPE(kInt32, INT32);
MLOS_SAME_ONNX_TYPE(kInt64, INT64);
MLOS_SAME_ONNX_TYPE(kUint8, UINT8);
MLOS_SAME_ONNX_TYPE(kUint16, UINT16);
MLOS_SAME_ONNX_TYPE(kUint32, UINT32);
MLOS_SAME_ONNX_TYPE(kBool, BOOL);
MLOS_SAME_ONNX_TYPE(kUint64, UINT64);
MLOS_SAME_ONNX_TYPE(kFloat16, FLOAT16);
MLOS_SAME_ONNX_TYPE(kBfloat16, BFLOAT16);
MLOS_SAME_ONNX_TYPE(kString, STRING);
MLOS_SAME_ONNX_TYPE(kComplex64, COMPLEX64);
MLOS_SAME_ONNX_TYPE(kComplex128, COMPLEX128);
MLOS_SAME_ONNX_TYPE(kFloat8E4M3FN, FLOAT8E4M3FN);
MLOS_SAME_ONNX_TYPE(kFloat8E4M3FNUZ, FLOAT8E4M3FNUZ);
MLOS_SAME_ONNX_TYPE(kFloat8E5M2, FLOAT8E5M2);
MLOS_SAME_ONNX_TYPE(kFloat8E5M2FNUZ, FLOAT8E5M2FNUZ);
MLOS_SAME_ONNX_TYPE(kUint4, UINT4);
MLOS_SAME_ONNX_TYPE(kInt4, INT4);
#undef MLOS_SAME_ONNX_TYPE

}  // namespace

std::string OrtStatusMessage(const OrtApi* api, OrtStatus* status, const char* call) {
  if (status == nullptr) return std::string();
  std::string msg = std::string(call) + " failed: " + api->GetErrorMessage(status) + " (" +
                    OrtErrorCodeName(api->GetErrorCode(status)) + ")";
  api->ReleaseStatus(status);
  return msg;
}

const OrtRuntime* OrtCurrent() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_runtime;
}

const OrtRuntime* OrtLoad(const std::string& path, std::string* error, int globalThreads) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_runtime != nullptr) return g_runtime;

  // RTLD_LOCAL: onnxruntime-node's binding, loaded in the same process, maps the same file once.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    *error = "dlopen(" + path + ") failed: " + (why ? why : "unknown error");
    return nullptr;
  }
  using GetApiBaseFn = const OrtApiBase* (*)();
  dlerror();
  auto getApiBase = reinterpret_cast<GetApiBaseFn>(dlsym(handle, "OrtGetApiBase"));
  if (getApiBase == nullptr) {
    const char* why = dlerror();
    *error = "dlsym(OrtGetApiBase) in " + path + " failed: " + (why ? why : "symbol not found");
    dlclose(handle);
    return nullptr;
  }
  const OrtApiBase* base = getApiBase();
  const char* libVersion = base && base->GetVersionString ? base->GetVersionString() : "unknown";
  const OrtApi* api = nullptr;
  uint32_t version = ORT_API_VERSION;
  for (; base != nullptr && version >= kOrtMinApiVersion; --version) {
    api = base->GetApi(version);
    if (api != nullptr) break;
  }
  if (api == nullptr) {
    *error = "GetApi(" + std::to_string(ORT_API_VERSION) + " down to " +
             std::to_string(kOrtMinApiVersion) + ") failed: the library at " + path +
             " (ONNX Runtime " + libVersion + ") supports none of these API versions";
    dlclose(handle);
    return nullptr;
  }
  OrtEnv* env = nullptr;
  std::string msg;
  if (globalThreads > 0) {
    // One pool of `globalThreads` intra-op threads for every session, without spinning (idle
    // threads sleep instead of burning a core the event loop and other models need).
    OrtThreadingOptions* tp = nullptr;
    msg = OrtStatusMessage(api, api->CreateThreadingOptions(&tp), "CreateThreadingOptions");
    if (msg.empty()) msg = OrtStatusMessage(api, api->SetGlobalIntraOpNumThreads(tp, globalThreads), "SetGlobalIntraOpNumThreads");
    if (msg.empty()) msg = OrtStatusMessage(api, api->SetGlobalInterOpNumThreads(tp, 1), "SetGlobalInterOpNumThreads");
    if (msg.empty()) msg = OrtStatusMessage(api, api->SetGlobalSpinControl(tp, 0), "SetGlobalSpinControl");
    if (msg.empty()) {
      msg = OrtStatusMessage(api, api->CreateEnvWithGlobalThreadPools(ORT_LOGGING_LEVEL_WARNING, "mlos", tp, &env),
                             "CreateEnvWithGlobalThreadPools");
    }
    if (tp != nullptr) api->ReleaseThreadingOptions(tp);
  } else {
    msg = OrtStatusMessage(api, api->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "mlos", &env), "CreateEnv");
  }
  if (!msg.empty()) {
    *error = msg;
    return nullptr;  // the library stays mapped: ORT may have started threads
  }
  OrtMemoryInfo* cpu = nullptr;
  msg = OrtStatusMessage(api, api->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &cpu),
                         "CreateCpuMemoryInfo");
  if (!msg.empty()) {
    *error = msg;
    api->ReleaseEnv(env);
    return nullptr;
  }
  auto* rt = new OrtRuntime();
  rt->api = api;
  rt->env = env;
  rt->cpuMemory = cpu;
  rt->apiVersion = version;
  rt->version = libVersion;
  rt->path = path;
  rt->globalThreads = globalThreads > 0 ? globalThreads : 0;
  g_runtime = rt;
  return rt;
}

}  // namespace mlos
