// ONNX Runtime through its C API, opened at run time.
//
// The library is the one onnxruntime-node ships (or an official release under $ORT_ROOT/lib): its
// symbols are versioned, so linking against one build would tie the addon to it. It is opened
// with dlopen, once per process, and never closed (sessions and OrtValues of any environment may
// outlive a worker thread's environment). The OrtApi table is asked for at ORT_API_VERSION (the
// headers' version) and, when the library is older, at each lower version down to
// kOrtMinApiVersion; only functions present in that version are used.
#pragma once

#include <onnxruntime_c_api.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/dtype.h"

namespace mlos {

constexpr uint32_t kOrtMinApiVersion = 17;

struct OrtRuntime {
  const OrtApi* api = nullptr;
  OrtEnv* env = nullptr;             // process-wide, never released
  OrtMemoryInfo* cpuMemory = nullptr;  // describes caller (CPU) memory wrapped as tensors
  uint32_t apiVersion = 0;
  std::string version;  // GetVersionString(), e.g. "1.30.0"
  std::string path;     // the library that was opened
  // > 0: the environment has global thread pools of this many intra-op threads (no spinning),
  // which every session shares (DisablePerSessionThreads): one thread budget for all models.
  int globalThreads = 0;
};

// Opens the library at `path` and creates the environment, once per process; later calls return
// the runtime loaded first (whatever their path). Thread-safe. On failure returns nullptr and sets
// *error to a message that names the call that failed (dlopen, dlsym, GetApi, CreateEnv ...); a
// failed load may be retried with another path.
// `globalThreads` > 0 creates the environment with shared thread pools (see OrtRuntime); it only
// applies to the first successful load.
const OrtRuntime* OrtLoad(const std::string& path, std::string* error, int globalThreads = 0);

// The loaded runtime, or nullptr.
const OrtRuntime* OrtCurrent();

// "<call> failed: <ORT message> (<ORT error code name>)" for a non-null status, which it releases;
// "" for nullptr (success).
std::string OrtStatusMessage(const OrtApi* api, OrtStatus* status, const char* call);

// Element types are common/dtype.h's table (its ONNX numbers are ORT's enum; ort_api.cc checks).
inline ONNXTensorElementDataType OrtTypeOf(const DTypeInfo& d) {
  return static_cast<ONNXTensorElementDataType>(d.onnx);
}
// nullptr for a type the table does not know.
inline const DTypeInfo* OrtDtypeByType(ONNXTensorElementDataType type) {
  return DTypeByOnnx(static_cast<int32_t>(type));
}

}  // namespace mlos
