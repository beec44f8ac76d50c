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

constexpr OrtDtypeInfo kDtypes[] = {
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, "float32", 32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, "uint8", 8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, "int8", 8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16, "uint16", 16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16, "int16", 16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, "int32", 32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, "int64", 64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, "string", 0},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, "bool", 8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, "float16", 16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, "float64", 64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32, "uint32", 32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64, "uint64", 64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64, "complex64", 64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128, "complex128", 128},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, "bfloat16", 16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN, "float8e4m3fn", 8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FNUZ, "float8e4m3fnuz", 8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2, "float8e5m2", 8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2FNUZ, "float8e5m2fnuz", 8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT4, "uint4", 4},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT4, "int4", 4},
};

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

const OrtDtypeInfo* OrtDtypeByName(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const OrtDtypeInfo* OrtDtypeByType(ONNXTensorElementDataType type) {
  for (const auto& d : kDtypes) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

}  // namespace mlos
