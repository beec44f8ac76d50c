// IpcOrtModel; see ipc_ort_model.h.
#include "ipc/ipc_ort_model.h"

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "ipc/ipc_wire.h"
#include "ort/ort_session_state.h"

namespace mlos::ipc {

namespace {

// True for success; a failure's status is released (the caller reports its own message).
bool Ok(const OrtApi* api, OrtStatus* s) {
  if (s == nullptr) return true;
  api->ReleaseStatus(s);
  return false;
}

constexpr uint64_t AlignUp(uint64_t n) { return (n + MLOS_IPC_ALIGN - 1) / MLOS_IPC_ALIGN * MLOS_IPC_ALIGN; }

// The OrtValues of one run (inputs, then outputs), released whatever path it leaves by. Fixed
// arrays: a request allocates nothing here (ORT allocates its OrtValue objects).
struct Values {
  const OrtApi* api;
  OrtValue* v[2 * MLOS_IPC_MAX_TENSORS] = {};
  ~Values() {
    for (OrtValue* x : v) {
      if (x != nullptr) api->ReleaseValue(x);
    }
  }
};

class IpcOrtModel : public IpcModel {
 public:
  explicit IpcOrtModel(std::shared_ptr<OrtSessionState> st) : st_(std::move(st)) {
    for (const auto& m : st_->inputs) input_names_.push_back(m.name.c_str());
    for (const auto& m : st_->outputs) output_names_.push_back(m.name.c_str());
  }

  void Run(const mlos_ipc_request& r, const std::shared_ptr<Segment>& seg, mlos_ipc_response* out) override {
    const OrtApi* api = st_->rt->api;
    const size_t n_in = st_->inputs.size();
    if (n_in > MLOS_IPC_MAX_TENSORS) return SetError(out, r.id, "IPC_BAD_REQUEST", "the model has " + std::to_string(n_in) + " inputs; the IPC door carries up to " + std::to_string(MLOS_IPC_MAX_TENSORS));
    // Each model input, from the request (by name), checked against the model's signature.
    const mlos_ipc_tensor* given[MLOS_IPC_MAX_TENSORS] = {};
    for (uint32_t i = 0; i < r.n_inputs; ++i) {
      const mlos_ipc_tensor& t = r.inputs[i];
      const int k = st_->InputIndex(t.name);
      if (k < 0) return SetError(out, r.id, "IPC_BAD_TENSOR", "the model has no input '" + std::string(t.name) + "' (inputs: " + OrtSessionState::Names(st_->inputs) + ")");
      const IoMeta& m = st_->inputs[static_cast<size_t>(k)];
      if (m.dtype == nullptr || static_cast<uint32_t>(m.dtype->onnx) != t.dtype) {
        const DTypeInfo* d = DTypeByOnnx(static_cast<int32_t>(t.dtype));
        return SetError(out, r.id, "IPC_BAD_TENSOR", "input '" + m.name + "' is " + (m.dtype ? m.dtype->name : "not a tensor") + ", not " + (d ? d->name : "?"));
      }
      if (t.rank != m.shape.size()) {
        return SetError(out, r.id, "IPC_BAD_TENSOR", "input '" + m.name + "' has rank " + std::to_string(m.shape.size()) + ", not " + std::to_string(t.rank));
      }
      for (uint32_t d = 0; d < t.rank; ++d) {
        if (m.shape[d] >= 0 && m.shape[d] != t.shape[d]) {
          return SetError(out, r.id, "IPC_BAD_TENSOR", "input '" + m.name + "' dimension " + std::to_string(d) + " is " + std::to_string(m.shape[d]) + ", not " + std::to_string(t.shape[d]));
        }
      }
      given[static_cast<size_t>(k)] = &t;
    }
    for (size_t k = 0; k < n_in; ++k) {
      if (given[k] == nullptr) return SetError(out, r.id, "IPC_BAD_TENSOR", "input '" + st_->inputs[k].name + "' is missing");
    }

    // The outputs asked for (all by default).
    int wanted[MLOS_IPC_MAX_TENSORS];
    size_t n_wanted = 0;
    if (r.n_outputs == 0) {
      for (size_t k = 0; k < st_->outputs.size() && k < MLOS_IPC_MAX_TENSORS; ++k) wanted[n_wanted++] = static_cast<int>(k);
    } else {
      for (uint32_t i = 0; i < r.n_outputs; ++i) {
        const int k = st_->OutputIndex(r.outputs[i]);
        if (k < 0) return SetError(out, r.id, "IPC_BAD_TENSOR", "the model has no output '" + std::string(r.outputs[i]) + "' (outputs: " + OrtSessionState::Names(st_->outputs) + ")");
        wanted[n_wanted++] = k;
      }
    }

    // Output shapes that follow from the inputs: static dimensions, and dynamic ones named like an
    // input's dimension (or the leading batch dimension when every input has a dynamic one).
    Values values{api};
    int64_t shapes[MLOS_IPC_MAX_TENSORS][MLOS_IPC_MAX_RANK];
    bool placed[MLOS_IPC_MAX_TENSORS] = {};
    uint64_t cursor = 0;
    for (size_t i = 0; i < n_wanted; ++i) {
      const IoMeta& m = st_->outputs[static_cast<size_t>(wanted[i])];
      if (m.dtype == nullptr || m.dtype->bits == 0 || m.shape.size() > MLOS_IPC_MAX_RANK) continue;
      int64_t* shape = shapes[i];
      const size_t rank = m.shape.size();
      bool known = true;
      for (size_t d = 0; d < rank && known; ++d) {
        shape[d] = m.shape[d];
        if (shape[d] < 0) known = Resolve(m, d, given, &shape[d]);
      }
      if (!known) continue;
      uint64_t elements = 1;
      for (size_t d = 0; d < rank; ++d) elements *= static_cast<uint64_t>(shape[d]);
      const uint64_t bytes = DTypeBytes(*m.dtype, elements);
      if (cursor + bytes > r.out_bytes) continue;  // ORT allocates it; the copy below reports the size
      OrtStatus* s = api->CreateTensorWithDataAsOrtValue(st_->rt->cpuMemory, seg->arena + r.out_offset + cursor, bytes, shape, rank, OrtTypeOf(*m.dtype), &values.v[n_in + i]);
      if (s != nullptr) return SetError(out, r.id, "IPC_RUN_FAILED", OrtStatusMessage(api, s, "CreateTensorWithDataAsOrtValue"));
      out->outputs[i].offset = r.out_offset + cursor;
      out->outputs[i].bytes = bytes;
      placed[i] = true;
      cursor = AlignUp(cursor + bytes);
    }

    for (size_t k = 0; k < n_in; ++k) {
      const mlos_ipc_tensor& t = *given[k];
      OrtStatus* s = api->CreateTensorWithDataAsOrtValue(st_->rt->cpuMemory, seg->arena + t.offset, t.bytes, t.shape, t.rank, OrtTypeOf(*st_->inputs[k].dtype), &values.v[k]);
      if (s != nullptr) return SetError(out, r.id, "IPC_BAD_TENSOR", OrtStatusMessage(api, s, "CreateTensorWithDataAsOrtValue"));
    }
    const char* out_names[MLOS_IPC_MAX_TENSORS];
    for (size_t i = 0; i < n_wanted; ++i) out_names[i] = output_names_[static_cast<size_t>(wanted[i])];

    const auto started = std::chrono::steady_clock::now();
    OrtStatus* s = api->Run(st_->session, nullptr, input_names_.data(), values.v, n_in, out_names, n_wanted, values.v + n_in);
    out->compute_ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
    if (s != nullptr) return SetError(out, r.id, "IPC_RUN_FAILED", OrtStatusMessage(api, s, "Run"));

    // Describe each output; copy those ORT allocated into the window.
    uint64_t needed = cursor;
    for (size_t i = 0; i < n_wanted; ++i) {
      const IoMeta& m = st_->outputs[static_cast<size_t>(wanted[i])];
      mlos_ipc_tensor& o = out->outputs[i];
      CopyName(o.name, sizeof o.name, m.name.c_str());
      OrtValue* v = values.v[n_in + i];
      OrtTensorTypeAndShapeInfo* info = nullptr;
      if (v == nullptr || !Ok(api, api->GetTensorTypeAndShape(v, &info))) return SetError(out, r.id, "IPC_RUN_FAILED", "output '" + m.name + "' is not a tensor");
      ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      size_t rank = 0;
      const bool described = Ok(api, api->GetTensorElementType(info, &type)) && Ok(api, api->GetDimensionsCount(info, &rank));
      const DTypeInfo* d = OrtDtypeByType(type);
      if (!described || d == nullptr || d->bits == 0 || rank > MLOS_IPC_MAX_RANK ||
          !Ok(api, api->GetDimensions(info, o.shape, rank))) {
        api->ReleaseTensorTypeAndShapeInfo(info);
        return SetError(out, r.id, "IPC_RUN_FAILED", "output '" + m.name + "' has a type or rank the IPC door does not carry");
      }
      api->ReleaseTensorTypeAndShapeInfo(info);
      o.rank = static_cast<uint32_t>(rank);
      o.dtype = static_cast<uint32_t>(d->onnx);
      uint64_t elements = 1;
      for (size_t x = 0; x < rank; ++x) elements *= static_cast<uint64_t>(o.shape[x]);
      const uint64_t bytes = DTypeBytes(*d, elements);
      if (placed[i]) continue;
      if (cursor + bytes > r.out_bytes) {
        needed = AlignUp(cursor + bytes);
        cursor = needed;  // keep counting what the whole answer needs
        continue;
      }
      void* data = nullptr;
      if (!Ok(api, api->GetTensorMutableData(v, &data)) || (bytes != 0 && data == nullptr)) return SetError(out, r.id, "IPC_RUN_FAILED", "output '" + m.name + "' has no data");
      if (bytes) std::memcpy(seg->arena + r.out_offset + cursor, data, bytes);
      o.offset = r.out_offset + cursor;
      o.bytes = bytes;
      cursor = AlignUp(cursor + bytes);
      needed = cursor;
    }
    if (needed > r.out_bytes) {
      SetError(out, r.id, "IPC_OUTPUT_TOO_SMALL", "the outputs need a window of " + std::to_string(needed) + " bytes, the request gave " + std::to_string(r.out_bytes));
      out->needed_bytes = needed;
      return;
    }
    out->status = 0;
    out->n_outputs = static_cast<uint32_t>(n_wanted);
  }

 private:
  // The value of an output's dynamic dimension `d` from the inputs given, when it follows.
  bool Resolve(const IoMeta& m, size_t d, const mlos_ipc_tensor* const* given, int64_t* value) const {
    const std::string& name = d < m.symbolic.size() ? m.symbolic[d] : std::string();
    if (!name.empty()) {
      for (size_t k = 0; k < st_->inputs.size(); ++k) {
        const IoMeta& in = st_->inputs[k];
        for (size_t x = 0; x < in.symbolic.size() && x < given[k]->rank; ++x) {
          if (in.symbolic[x] == name) {
            *value = given[k]->shape[x];
            return true;
          }
        }
      }
      return false;
    }
    return false;
  }

  std::shared_ptr<OrtSessionState> st_;
  std::vector<const char*> input_names_, output_names_;
};

}  // namespace

std::shared_ptr<IpcModel> MakeIpcOrtModel(std::shared_ptr<OrtSessionState> session) { return std::make_shared<IpcOrtModel>(std::move(session)); }

}  // namespace mlos::ipc
