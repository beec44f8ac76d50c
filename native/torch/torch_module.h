// The TorchModule JS class: a TorchScript module loaded with libtorch (torch::jit::load).
//
//   TorchModule.open(path, { threads? }) -> Promise<TorchModule>   torch::jit::load on a libuv
//                             worker thread; threads: intra-op threads of this module's runs (0 or
//                             absent: libtorch's default)
//   .path                     the file
//   .methods                  [{ name, schema, inputs, requiredInputs }]: the module's methods
//                             (`forward` ...), their schema, and how many arguments follow `self`
//   .parameterBytes           bytes of the module's parameters and buffers (told to V8)
//   .forward(inputs, { method?, debugAddresses? }?) -> Promise<outputs>   runs the method
//                             (default "forward") on a libuv worker thread; many may be in flight
//   .forwardSync(inputs, options?) -> outputs   the same on this thread (for tiny models)
//   .release()                drops the module once the runs in flight are done; later calls throw
//                             CLOSED
//   .ipcRunner(inputs, outputs) -> External   an mlos_ipc_runner (native/src/ipc/ipc_runner.h) over
//                             this module, for the IPC door's native threads; inputs: [{ name,
//                             dtype, shape }] in forward's order, outputs: [{ name }] in result order
//   torchInfo() -> { version, threads, interopThreads }
//
// inputs: [{ dtype, shape, data: ArrayBuffer | TypedArray | DataView }], positional. dtype is one
// of float32, float64, float16, bfloat16, int8, int16, int32, int64, uint8, bool. Each is checked
// (known dtype, integral non-negative dims, byte length == elements x element size, data aligned
// to the element size) and then wrapped with torch::from_blob over the caller's memory (no copy);
// the JS objects stay referenced until the run is done.
// outputs: [{ dtype, shape, data: ArrayBuffer }], the method's result flattened in order (a
// tensor; tuples and lists, nested, element by element; an int, float or bool as a 0-d tensor).
// Each output is made contiguous on the CPU and handed back as an external ArrayBuffer over the
// tensor's own memory, whose finaliser releases the tensor (no copy). An output that shares memory
// with an input, a parameter or another output is copied once, so that every buffer owns its
// bytes. With debugAddresses each output also carries `address` (the data pointer of the tensor
// the buffer covers) and the array a non-enumerable `inputAddresses` (the data pointers of the
// tensors the method received). The array always carries a non-enumerable `runMicros`: how long
// the method itself took.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "torch_addon.h"

namespace mlos {
namespace torchaddon {

class TorchModuleWrap : public Napi::ObjectWrap<TorchModuleWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, TorchAddonData* data);
  explicit TorchModuleWrap(const Napi::CallbackInfo& info);
  ~TorchModuleWrap() override;

  static TorchModuleWrap* FromReceiver(const Napi::CallbackInfo& info);

 private:
  template <Napi::Value (TorchModuleWrap::*Method)(const Napi::CallbackInfo&)>
  static Napi::Value Checked(const Napi::CallbackInfo& info) {
    return (FromReceiver(info)->*Method)(info);
  }

  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value ForwardSync(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value IsReleased(const Napi::CallbackInfo& info);
  Napi::Value IpcRunner(const Napi::CallbackInfo& info);

  std::shared_ptr<TorchModuleState> Open(Napi::Env env);
  void ForgetMemory();

  std::shared_ptr<TorchModuleState> state_;
  std::string path_;
  int64_t externalBytes_ = 0;  // told to V8 with AdjustExternalMemory while the module is held
};

// torchInfo() -> { version, threads, interopThreads }.
Napi::Value TorchInfo(const Napi::CallbackInfo& info);

}  // namespace torchaddon
}  // namespace mlos
