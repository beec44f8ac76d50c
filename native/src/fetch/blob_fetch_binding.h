// The BlobFetch JS class: a node-addon-api wrapper over mlos::BlobFetcher (blob_fetch.h), one
// plain-HTTP blob download into a file, hashed (SHA-256) while it arrives, off the JS thread.
//
//   new BlobFetch({ host, port, path, file, headers?, offset?, expectedSize?, stallTimeoutMs?,
//                   connectTimeoutMs?, bufferBytes?, buffers? })
//   .start(onProgress?) -> Promise<result>  runs the transfer on two threads of its own (never the
//                                           libuv pool, which fs calls need meanwhile);
//                                           onProgress(bytesInFile) runs on the JS thread,
//                                           coalesced (at most one call queued at a time). Once.
//   .abort()                                stops it soon; the promise then resolves with
//                                           code "ECANCELED"
//
// The promise resolves with what happened, transport failures included: { status, headers,
// errorBody, bodyOffset, received, bytes, complete, sha256, code, errno, message } (see
// bindings/native.ts); the caller decides about redirects, retries and errors. It rejects only
// when onProgress threw (the transfer is then aborted) or the result could not be built.
//
// Registered only when OpenSSL's EVP digest functions resolve in the process (Node's own OpenSSL
// exports them); `blobFetchCompiled` says whether the build has it at all.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <thread>

#include "fetch/blob_fetch.h"

namespace mlos {

class BlobFetchWrap : public Napi::ObjectWrap<BlobFetchWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit BlobFetchWrap(const Napi::CallbackInfo& info);
  ~BlobFetchWrap() override;

  // The BlobFetchWrap behind a receiver, after checking its type tag; throws a TypeError with
  // code BAD_ARGUMENT for anything else.
  static BlobFetchWrap* FromReceiver(const Napi::CallbackInfo& info);

 private:
  struct Message;
  static void CallJs(Napi::Env env, Napi::Function unused, BlobFetchWrap* self, Message* msg);
  static void OnTsfnFinalize(Napi::Env env, void* unused, BlobFetchWrap* self);
  using Tsfn = Napi::TypedThreadSafeFunction<BlobFetchWrap, Message, &BlobFetchWrap::CallJs>;

  template <Napi::Value (BlobFetchWrap::*Method)(const Napi::CallbackInfo&)>
  static Napi::Value Checked(const Napi::CallbackInfo& info) {
    return (FromReceiver(info)->*Method)(info);
  }

  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Abort(const Napi::CallbackInfo& info);
  Napi::Value IsRunning(const Napi::CallbackInfo& info);

  void Deliver(Napi::Env env, Message* msg);
  void StopThread();

  enum class State { kIdle, kRunning, kDone };
  State state_ = State::kIdle;
  std::shared_ptr<BlobFetcher> fetcher_;
  std::thread thread_;
  std::unique_ptr<Napi::Promise::Deferred> deferred_;
  Napi::FunctionReference on_progress_;
  Napi::ObjectReference callback_error_;
  // Progress from the helper thread: the latest value, and whether a call is queued.
  std::shared_ptr<std::atomic<uint64_t>> latest_;
  std::shared_ptr<std::atomic<bool>> queued_;
  int64_t external_bytes_ = 0;
};

}  // namespace mlos
