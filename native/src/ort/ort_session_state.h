// The state behind an OrtSession JS object: the ONNX Runtime session and its inputs' and outputs'
// metadata, shared (by shared_ptr) between the JS object and every run in flight, so that a
// release() while runs are going frees the session only once they are done. Internal to the
// addon's ORT files (ort_session.cc, ort_kserve_json.cc).
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "ort/ort_api.h"

namespace mlos {

// ---- session state (shared by the JS object and the runs in flight) -------------------------------

struct IoMeta {
  std::string name;
  ONNXType type = ONNX_TYPE_UNKNOWN;
  const DTypeInfo* dtype = nullptr;  // tensors only; nullptr when not a tensor or not known
  std::vector<int64_t> shape;
  std::vector<std::string> symbolic;
};

struct OrtSessionState {
  const OrtRuntime* rt = nullptr;
  OrtSession* session = nullptr;
  std::vector<IoMeta> inputs;
  std::vector<IoMeta> outputs;
  // Initializers that are also graph inputs: not part of the signature, but a run may feed them.
  std::vector<IoMeta> overridable;
  // The runs created and not yet finished (their run options, "terminated" flag and tag), for
  // terminate().
  struct InFlightRun {
    std::atomic<bool>* terminated;
    const std::string* tag;
  };
  std::mutex mu;
  std::map<OrtRunOptions*, InFlightRun> inFlight;

  ~OrtSessionState() {
    if (session != nullptr) rt->api->ReleaseSession(session);
  }

  int InputIndex(const std::string& name) const { return Find(inputs, name); }
  int OutputIndex(const std::string& name) const { return Find(outputs, name); }
  static int Find(const std::vector<IoMeta>& list, const std::string& name) {
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].name == name) return static_cast<int>(i);
    }
    return -1;
  }
  static std::string Names(const std::vector<IoMeta>& list) {
    std::string s;
    for (const auto& m : list) s += (s.empty() ? "" : ", ") + m.name;
    return s;
  }
};

}  // namespace mlos
