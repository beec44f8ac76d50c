// Per-environment state of the torch addon (build/Release/mlos_torch.node): one per Node
// environment (the main thread and each worker). The addon is separate from mlos_native.node so
// that libtorch (about 285 shared libraries) is mapped only when a torch model is used.
#pragma once

#include <napi.h>

#include <memory>

namespace mlos {
namespace torchaddon {

struct TorchModuleState;

struct TorchAddonData {
  // The JS class for coded errors (native/src/common/errors.h), handed over by the loader through setErrorClass.
  Napi::FunctionReference errorClass;
  // The TorchModule JS constructor, and the module TorchModule.open loaded on a worker thread, set
  // just around constructing the JS object that wraps it.
  Napi::FunctionReference torchModuleConstructor;
  std::shared_ptr<TorchModuleState> pendingModule;
};

inline TorchAddonData* GetTorchAddonData(Napi::Env env) { return env.GetInstanceData<TorchAddonData>(); }

}  // namespace torchaddon
}  // namespace mlos
