// The error idiom of native/src/errors.h, for the torch addon (which has its own instance data).
//
// Every error thrown to JavaScript carries a stable string `code`:
//   BAD_ARGUMENT       a TypeError (wrong type, a receiver that is not a TorchModule, a buffer that
//                      does not fit dtype x shape) or a RangeError (a value out of range), with
//                      `code` set, the way Node's own argument errors are.
//   TORCH_FAIL         libtorch failed (loading or running a module); the message names the call.
//   TORCH_UNAVAILABLE  a feature this libtorch cannot provide.
//   CLOSED             a method called on a released module.
// Coded errors other than BAD_ARGUMENT are instances of the class the loader hands over with
// setErrorClass(cls) (bindings/torch.ts passes bindings/native.ts's NativeError), constructed as
// `new cls(message, code)`; a plain Error with `code` set when none was handed over.
//
// Built with C++ exceptions (NAPI_CPP_EXCEPTIONS): the macros throw a Napi::Error, which
// node-addon-api turns into a pending JS exception when the callback returns. Code that runs off
// the JS thread never uses them: it records a message that the JS-thread side converts.
#pragma once

#include <napi.h>

#include <string>

#include "torch_addon.h"

namespace mlos {
namespace torchaddon {

enum class JsErrorKind { kError, kTypeError, kRangeError };

inline Napi::Error MakeJsError(Napi::Env env, JsErrorKind kind, const char* code,
                               const std::string& message) {
  Napi::Error err;
  if (kind == JsErrorKind::kTypeError) {
    err = Napi::TypeError::New(env, message);
  } else if (kind == JsErrorKind::kRangeError) {
    err = Napi::RangeError::New(env, message);
  } else {
    TorchAddonData* data = GetTorchAddonData(env);
    if (data != nullptr && !data->errorClass.IsEmpty()) {
      Napi::Object obj =
          data->errorClass.New({Napi::String::New(env, message), Napi::String::New(env, code)});
      err = Napi::Error(env, obj);
    } else {
      err = Napi::Error::New(env, message);
    }
  }
  err.Set("code", Napi::String::New(env, code));
  return err;
}

}  // namespace torchaddon
}  // namespace mlos

#define MLOS_THROW_CODE(env, code, message) \
  throw ::mlos::torchaddon::MakeJsError((env), ::mlos::torchaddon::JsErrorKind::kError, (code), (message))
#define MLOS_THROW_TYPE(env, message)                                                      \
  throw ::mlos::torchaddon::MakeJsError((env), ::mlos::torchaddon::JsErrorKind::kTypeError, \
                                        "BAD_ARGUMENT", (message))
#define MLOS_THROW_RANGE(env, message)                                                      \
  throw ::mlos::torchaddon::MakeJsError((env), ::mlos::torchaddon::JsErrorKind::kRangeError, \
                                        "BAD_ARGUMENT", (message))
#define MLOS_REQUIRE(cond, env, code, message)        \
  do {                                                \
    if (!(cond)) MLOS_THROW_CODE(env, code, message); \
  } while (0)
#define MLOS_REQUIRE_TYPE(cond, env, message)   \
  do {                                          \
    if (!(cond)) MLOS_THROW_TYPE(env, message); \
  } while (0)
#define MLOS_REQUIRE_RANGE(cond, env, message)   \
  do {                                           \
    if (!(cond)) MLOS_THROW_RANGE(env, message); \
  } while (0)
