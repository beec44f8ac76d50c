// The HttpServer JS class: a node-addon-api wrapper over mlos::http::Server (http_server.h), the
// HTTP/1.1 server of MLOS Core's HTTP door, running on the JS thread's own libuv loop.
//
//   new HttpServer({ onRequest, onAbort, maxBodyBytes?, idleTimeoutMs?, maxPipelined?,
//                    maxWriteQueueBytes?, tls?: { certFile, keyFile, passphrase? } })
//   .listen(host, port) -> port            throws LISTEN_FAILED or TLS_INVALID in one line
//   .respond(id, statusLine, headerLines, body?: string | Uint8Array) -> boolean
//   .peerAddress(id) -> string
//   .close() -> Promise<void>              every connection closed; unanswered ids go to onAbort
//   .openConnections() -> number
//
// onRequest(id, method, target, headers, body?) runs for each complete request, in arrival order:
// `headers` is "name: value\n" per header with lower-case names, `body` a Buffer (absent when the
// request has none). onAbort(id) runs when a request's client went away before it was answered.
// Both run inside one callback scope per socket read, so promise jobs run after the whole batch.
#pragma once

#include <napi.h>

#include <memory>

#include "http/http_server.h"

namespace mlos {

class HttpServerWrap : public Napi::ObjectWrap<HttpServerWrap>, public http::RequestHandler {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit HttpServerWrap(const Napi::CallbackInfo& info);
  ~HttpServerWrap() override;

  void BeginDispatch() override;
  void EndDispatch() override;
  void OnRequest(http::Request& request) override;
  void OnAbort(double id) override;

 private:
  static HttpServerWrap* FromReceiver(const Napi::CallbackInfo& info);
  template <Napi::Value (HttpServerWrap::*Method)(const Napi::CallbackInfo&)>
  static Napi::Value Checked(const Napi::CallbackInfo& info) {
    return (FromReceiver(info)->*Method)(info);
  }
  Napi::Value Listen(const Napi::CallbackInfo& info);
  Napi::Value Respond(const Napi::CallbackInfo& info);
  Napi::Value RespondStart(const Napi::CallbackInfo& info);
  Napi::Value RespondChunk(const Napi::CallbackInfo& info);
  Napi::Value RespondEnd(const Napi::CallbackInfo& info);
  Napi::Value PeerAddress(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value OpenConnections(const Napi::CallbackInfo& info);
  static void OnClosed(void* self);
  // Hands a pending JS exception to the process ('uncaughtException'): a callback that throws is
  // a bug in the caller's code, not something the server can answer.
  void RaiseIfThrown(napi_status status);

  napi_env env_ = nullptr;
  std::unique_ptr<http::Server> server_;
  Napi::FunctionReference on_request_;
  Napi::FunctionReference on_abort_;
  napi_async_context async_context_ = nullptr;
  int dispatch_depth_ = 0;
  napi_handle_scope handle_scope_ = nullptr;
  napi_callback_scope callback_scope_ = nullptr;
  std::unique_ptr<Napi::Promise::Deferred> closed_;
  bool referenced_ = false;
};

}  // namespace mlos
