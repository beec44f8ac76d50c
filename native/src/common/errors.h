// One error idiom for the whole addon.
//
// Every error thrown to JavaScript carries a stable string `code`:
//   BAD_ARGUMENT   a TypeError (wrong type, or a receiver that is not what the method needs) or a
//                  RangeError (a value out of range); both are plain JS TypeError/RangeError objects
//                  with `code` set, the way Node's own argument errors are.
//   anything else  (SHM_EXHAUSTED, SHM_FAIL, CLOSED, ORT_FAIL, CUDA_UNAVAILABLE, TORCH_FAIL ...) an
//                  instance of the error class the loader hands over with setErrorClass(cls)
//                  (bindings/native.ts: NativeError), constructed as `new cls(message, code)`; a
//                  plain Error with `code` set when none was handed over.
//
// Both addons (mlos_native and mlos_torch) use this header; each keeps the error class in its own
// per-environment data and defines ErrorClassOf() once to say where.
//
// The addon is built with C++ exceptions (NAPI_CPP_EXCEPTIONS): the macros below throw a
// Napi::Error, which node-addon-api turns into a pending JS exception when the callback returns.
// Native code that runs off the JS thread never uses them: it returns a status that the JS-thread
// side converts with MLOS_THROW_CODE.
#pragma once

#include <napi.h>

#include <string>

namespace mlos {

// The error class setErrorClass() stored for this environment (empty when none was), or nullptr.
// Defined once per addon (native/src/common/addon.cc, native/torch/torch_addon.cc).
Napi::FunctionReference* ErrorClassOf(Napi::Env env);

enum class JsErrorKind { kError, kTypeError, kRangeError };

inline Napi::Error MakeJsError(Napi::Env env, JsErrorKind kind, const char* code,
                               const std::string& message) {
  Napi::Error err;
  if (kind == JsErrorKind::kTypeError) {
    err = Napi::TypeError::New(env, message);
  } else if (kind == JsErrorKind::kRangeError) {
    err = Napi::RangeError::New(env, message);
  } else {
    Napi::FunctionReference* cls = ErrorClassOf(env);
    if (cls != nullptr && !cls->IsEmpty()) {
      Napi::Object obj = cls->New({Napi::String::New(env, message), Napi::String::New(env, code)});
      err = Napi::Error(env, obj);
    } else {
      err = Napi::Error::New(env, message);
    }
  }
  err.Set("code", Napi::String::New(env, code));
  return err;
}

}  // namespace mlos

// Throws a JS error with `code` (see above) from a JS-thread callback.
#define MLOS_THROW_CODE(env, code, message) \
  throw ::mlos::MakeJsError((env), ::mlos::JsErrorKind::kError, (code), (message))

// Throws a TypeError with code BAD_ARGUMENT.
#define MLOS_THROW_TYPE(env, message) \
  throw ::mlos::MakeJsError((env), ::mlos::JsErrorKind::kTypeError, "BAD_ARGUMENT", (message))

// Throws a RangeError with code BAD_ARGUMENT.
#define MLOS_THROW_RANGE(env, message) \
  throw ::mlos::MakeJsError((env), ::mlos::JsErrorKind::kRangeError, "BAD_ARGUMENT", (message))

// Preconditions.
#define MLOS_REQUIRE(cond, env, code, message)       \
  do {                                               \
    if (!(cond)) MLOS_THROW_CODE(env, code, message); \
  } while (0)
#define MLOS_REQUIRE_TYPE(cond, env, message)     \
  do {                                            \
    if (!(cond)) MLOS_THROW_TYPE(env, message);   \
  } while (0)
#define MLOS_REQUIRE_RANGE(cond, env, message)    \
  do {                                            \
    if (!(cond)) MLOS_THROW_RANGE(env, message);  \
  } while (0)

// Throws when a mlos::ShmStatus (or anything with .ok(), .code and .message whose code converts
// with ShmErrcCode) is not ok. BAD_ARGUMENT statuses become RangeErrors.
#define MLOS_THROW_IF_SHM_ERROR(env, status)                                        \
  do {                                                                              \
    const auto& mlos_st_ = (status);                                                \
    if (!mlos_st_.ok()) {                                                           \
      if (mlos_st_.code == ::mlos::ShmErrc::kBadArgument) MLOS_THROW_RANGE(env, mlos_st_.message); \
      MLOS_THROW_CODE(env, ::mlos::ShmErrcCode(mlos_st_.code), mlos_st_.message);   \
    }                                                                               \
  } while (0)
