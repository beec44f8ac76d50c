// The torch addon's one registration point (build/Release/mlos_torch.node): TorchModule,
// torchInfo, setErrorClass. Loaded by bindings/torch.ts only when a torch model is used.
#include <napi.h>

#include "torch_addon.h"
#include "common/errors.h"  // native/src/common/errors.h: the one error idiom of both addons
#include "torch_module.h"

namespace mlos {

// Where this addon keeps the class of coded errors (native/src/common/errors.h asks).
Napi::FunctionReference* ErrorClassOf(Napi::Env env) {
  torchaddon::TorchAddonData* data = torchaddon::GetTorchAddonData(env);
  return data != nullptr ? &data->errorClass : nullptr;
}

namespace torchaddon {
namespace {

// setErrorClass(cls): the class used for coded errors (native/src/common/errors.h); called once by the loader.
Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info[0].IsFunction(), env, "setErrorClass(cls): cls must be a class");
  GetTorchAddonData(env)->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new TorchAddonData();
  env.SetInstanceData<TorchAddonData>(data);  // deleted by node-addon-api at environment teardown
  TorchModuleWrap::Init(env, exports, data);
  exports.Set("torchInfo", Napi::Function::New(env, TorchInfo, "torchInfo"));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

}  // namespace torchaddon
}  // namespace mlos

namespace {
Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return mlos::torchaddon::Init(env, exports); }
}  // namespace

NODE_API_MODULE(mlos_torch, InitModule)
