// The HttpServer JS class; see http_server_binding.h.
#include "http/http_server_binding.h"

#include <cmath>
#include <cstdlib>
#include <string>

#include "common/errors.h"

namespace mlos {

namespace {

constexpr napi_type_tag kHttpServerTag = {0x6d6c6f73'68747470ULL, 0x51c2e0a4'7b3d9e17ULL};
// Bodies from this size up are handed to JS without a copy (an external Buffer that frees the
// parser's allocation); smaller ones are copied, which costs less than a finalizer.
constexpr size_t kExternalBodyBytes = 64 * 1024;

uint32_t OptionalIndex(Napi::Object o, const char* key, uint32_t fallback, uint32_t min, uint32_t max) {
  Napi::Env env = o.Env();
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  MLOS_REQUIRE_TYPE(v.IsNumber(), env, std::string("HttpServer: ") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  MLOS_REQUIRE_RANGE(std::isfinite(d) && std::floor(d) == d && d >= min && d <= max, env,
                     std::string("HttpServer: ") + key + " must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
  return static_cast<uint32_t>(d);
}

std::string RequiredText(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  MLOS_REQUIRE_TYPE(v.IsString(), o.Env(), std::string("HttpServer: tls.") + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

std::string Utf8(napi_env env, napi_value v) {
  size_t len = 0;
  napi_get_value_string_utf8(env, v, nullptr, 0, &len);
  std::string s(len, '\0');
  if (len > 0) napi_get_value_string_utf8(env, v, s.data(), len + 1, &len);
  return s;
}

}  // namespace

void HttpServerWrap::Init(Napi::Env env, Napi::Object exports) {
  // Methods are plain functions on the prototype that check the receiver's type tag (Checked), so
  // that calling one on a foreign object is a TypeError rather than a crash.
  Napi::Function cls = DefineClass(env, "HttpServer", {});
  constexpr auto kMethod = static_cast<napi_property_attributes>(napi_writable | napi_configurable);
  auto method = [&](const char* name, Napi::Function::Callback cb) {
    return Napi::PropertyDescriptor::Value(name, Napi::Function::New(env, cb, name), kMethod);
  };
  cls.Get("prototype").As<Napi::Object>().DefineProperties({
      method("listen", Checked<&HttpServerWrap::Listen>),
      method("respond", Checked<&HttpServerWrap::Respond>),
      method("respondStart", Checked<&HttpServerWrap::RespondStart>),
      method("respondChunk", Checked<&HttpServerWrap::RespondChunk>),
      method("respondEnd", Checked<&HttpServerWrap::RespondEnd>),
      method("peerAddress", Checked<&HttpServerWrap::PeerAddress>),
      method("close", Checked<&HttpServerWrap::Close>),
      method("openConnections", Checked<&HttpServerWrap::OpenConnections>),
  });
  exports.Set("HttpServer", cls);
  exports.Set("httpTlsUnavailable", Napi::String::New(env, http::TlsUnavailableReason()));
}

HttpServerWrap* HttpServerWrap::FromReceiver(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool tagged = false;
  Napi::Value self = info.This();
  if (self.IsObject()) napi_check_object_type_tag(env, self, &kHttpServerTag, &tagged);
  MLOS_REQUIRE_TYPE(tagged, env, "HttpServer method called on something that is not an HttpServer");
  return Napi::ObjectWrap<HttpServerWrap>::Unwrap(self.As<Napi::Object>());
}

HttpServerWrap::HttpServerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<HttpServerWrap>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  napi_type_tag_object(env, info.This(), &kHttpServerTag);
  MLOS_REQUIRE_TYPE(info[0].IsObject(), env, "new HttpServer(options): options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  MLOS_REQUIRE_TYPE(o.Get("onRequest").IsFunction(), env, "HttpServer: onRequest must be a function");
  MLOS_REQUIRE_TYPE(o.Get("onAbort").IsFunction(), env, "HttpServer: onAbort must be a function");
  on_request_ = Napi::Persistent(o.Get("onRequest").As<Napi::Function>());
  on_abort_ = Napi::Persistent(o.Get("onAbort").As<Napi::Function>());

  http::ServerOptions options;
  Napi::Value max_body = o.Get("maxBodyBytes");
  if (!max_body.IsUndefined()) {
    MLOS_REQUIRE_TYPE(max_body.IsNumber(), env, "HttpServer: maxBodyBytes must be a number");
    const double d = max_body.As<Napi::Number>().DoubleValue();
    MLOS_REQUIRE_RANGE(std::isfinite(d) && d >= 0 && std::floor(d) == d && d <= 4294967296.0 * 4, env,
                       "HttpServer: maxBodyBytes must be an integer from 0 to 16 GiB");
    options.max_body_bytes = static_cast<size_t>(d);
  }
  options.idle_timeout_ms = OptionalIndex(o, "idleTimeoutMs", options.idle_timeout_ms, 100, 3600000);
  options.max_pipelined = OptionalIndex(o, "maxPipelined", options.max_pipelined, 1, 65536);
  options.max_write_queue_bytes = OptionalIndex(o, "maxWriteQueueBytes", static_cast<uint32_t>(options.max_write_queue_bytes), 1, 1u << 30);
  Napi::Value tls = o.Get("tls");
  if (!tls.IsUndefined()) {
    MLOS_REQUIRE_TYPE(tls.IsObject(), env, "HttpServer: tls must be an object");
    Napi::Object t = tls.As<Napi::Object>();
    options.tls = true;
    options.tls_config.cert_file = RequiredText(t, "certFile");
    options.tls_config.key_file = RequiredText(t, "keyFile");
    if (!t.Get("passphrase").IsUndefined()) options.tls_config.passphrase = RequiredText(t, "passphrase");
  }

  uv_loop_t* loop = nullptr;
  MLOS_REQUIRE(napi_get_uv_event_loop(env, &loop) == napi_ok && loop != nullptr, env, "INTERNAL", "HttpServer: no event loop");
  napi_value resource_name;
  napi_create_string_utf8(env, "mlos.HttpServer", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, info.This(), resource_name, &async_context_);
  server_ = std::make_unique<http::Server>(loop, this, std::move(options));
}

HttpServerWrap::~HttpServerWrap() {
  // Only reached once the server is closed (listening keeps a reference), or was never started.
  if (async_context_ != nullptr) napi_async_destroy(env_, async_context_);
}

Napi::Value HttpServerWrap::Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info[0].IsString(), env, "listen(host, port): host must be a string");
  MLOS_REQUIRE_TYPE(info[1].IsNumber(), env, "listen(host, port): port must be a number");
  const double port = info[1].As<Napi::Number>().DoubleValue();
  MLOS_REQUIRE_RANGE(std::floor(port) == port && port >= 0 && port <= 65535, env, "listen(host, port): port must be an integer from 0 to 65535");
  MLOS_REQUIRE(server_ != nullptr, env, "LISTEN_FAILED", "the server is closed");
  const std::string host = info[0].As<Napi::String>().Utf8Value();
  const std::string error = server_->Listen(host, static_cast<int>(port));
  if (!error.empty()) {
    const bool tls = error.rfind("cannot load the TLS", 0) == 0 || error.rfind("the TLS key", 0) == 0 || error.find("OpenSSL") != std::string::npos;
    MLOS_THROW_CODE(env, tls ? "TLS_INVALID" : "LISTEN_FAILED", error);
  }
  if (!referenced_) {
    Ref();  // a listening server must outlive its JS object's last reference
    referenced_ = true;
  }
  return Napi::Number::New(env, server_->port());
}

Napi::Value HttpServerWrap::Respond(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (server_ == nullptr) return Napi::Boolean::New(env, false);
  napi_value status_v = info[1];
  napi_value headers_v = info[2];
  MLOS_REQUIRE_TYPE(info[0].IsNumber() && info[1].IsString() && info[2].IsString(), env,
                    "respond(id, statusLine, headerLines, body?): id must be a number, statusLine and headerLines strings");
  const double id = info[0].As<Napi::Number>().DoubleValue();
  const std::string status = Utf8(env, status_v);
  const std::string headers = Utf8(env, headers_v);
  Napi::Value body = info[3];
  bool ok = false;
  if (body.IsUndefined() || body.IsNull()) {
    ok = server_->Respond(id, status, headers, nullptr, 0);
  } else if (body.IsString()) {
    const std::string text = Utf8(env, body);
    ok = server_->Respond(id, status, headers, text.data(), text.size());
  } else if (body.IsTypedArray()) {
    Napi::TypedArray ta = body.As<Napi::TypedArray>();
    const auto* bytes = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    ok = server_->Respond(id, status, headers, bytes, ta.ByteLength());
  } else {
    MLOS_THROW_TYPE(env, "respond(id, statusLine, headerLines, body?): body must be a string or a Uint8Array");
  }
  return Napi::Boolean::New(env, ok);
}

Napi::Value HttpServerWrap::RespondStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (server_ == nullptr) return Napi::Boolean::New(env, false);
  MLOS_REQUIRE_TYPE(info[0].IsNumber() && info[1].IsString() && info[2].IsString(), env,
                    "respondStart(id, statusLine, headerLines): id must be a number, statusLine and headerLines strings");
  const double id = info[0].As<Napi::Number>().DoubleValue();
  const std::string status = Utf8(env, info[1]);
  const std::string headers = Utf8(env, info[2]);
  return Napi::Boolean::New(env, server_->RespondStart(id, status, headers));
}

Napi::Value HttpServerWrap::RespondChunk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (server_ == nullptr) return Napi::Boolean::New(env, false);
  MLOS_REQUIRE_TYPE(info[0].IsNumber(), env, "respondChunk(id, data): id must be a number");
  const double id = info[0].As<Napi::Number>().DoubleValue();
  Napi::Value data = info[1];
  if (data.IsString()) {
    const std::string text = Utf8(env, data);
    return Napi::Boolean::New(env, server_->RespondChunk(id, text.data(), text.size()));
  }
  MLOS_REQUIRE_TYPE(data.IsTypedArray(), env, "respondChunk(id, data): data must be a string or a Uint8Array");
  Napi::TypedArray ta = data.As<Napi::TypedArray>();
  const auto* bytes = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return Napi::Boolean::New(env, server_->RespondChunk(id, bytes, ta.ByteLength()));
}

Napi::Value HttpServerWrap::RespondEnd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (server_ == nullptr) return Napi::Boolean::New(env, false);
  MLOS_REQUIRE_TYPE(info[0].IsNumber(), env, "respondEnd(id): id must be a number");
  return Napi::Boolean::New(env, server_->RespondEnd(info[0].As<Napi::Number>().DoubleValue()));
}

Napi::Value HttpServerWrap::PeerAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info[0].IsNumber(), env, "peerAddress(id): id must be a number");
  if (server_ == nullptr) return Napi::String::New(env, "");
  return Napi::String::New(env, server_->PeerAddress(info[0].As<Napi::Number>().DoubleValue()));
}

Napi::Value HttpServerWrap::OpenConnections(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), server_ != nullptr ? static_cast<double>(server_->open_connections()) : 0);
}

Napi::Value HttpServerWrap::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return closed_->Promise();
  closed_ = std::make_unique<Napi::Promise::Deferred>(env);
  Napi::Promise promise = closed_->Promise();
  if (server_ == nullptr) {
    closed_->Resolve(env.Undefined());
    return promise;
  }
  server_->Close(&HttpServerWrap::OnClosed, this);
  return promise;
}

void HttpServerWrap::OnClosed(void* arg) {
  auto* self = static_cast<HttpServerWrap*>(arg);
  Napi::Env env(self->env_);
  self->BeginDispatch();  // from a libuv callback: the scope runs the promise's reactions
  self->server_.reset();
  self->closed_->Resolve(env.Undefined());
  if (self->referenced_) {
    self->referenced_ = false;
    self->Unref();
  }
  self->EndDispatch();
}

void HttpServerWrap::BeginDispatch() {
  if (dispatch_depth_++ > 0) return;
  napi_open_handle_scope(env_, &handle_scope_);
  napi_value resource = Value();
  napi_open_callback_scope(env_, resource, async_context_, &callback_scope_);
}

void HttpServerWrap::EndDispatch() {
  if (--dispatch_depth_ > 0) return;
  // Closing the outermost callback scope runs the promise jobs and nextTick callbacks the
  // handlers queued.
  napi_close_callback_scope(env_, callback_scope_);
  napi_close_handle_scope(env_, handle_scope_);
  callback_scope_ = nullptr;
  handle_scope_ = nullptr;
}

void HttpServerWrap::RaiseIfThrown(napi_status status) {
  if (status != napi_pending_exception) return;
  napi_value error;
  if (napi_get_and_clear_last_exception(env_, &error) == napi_ok) napi_fatal_exception(env_, error);
}

void HttpServerWrap::OnRequest(http::Request& request) {
  napi_env env = env_;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value args[5];
  napi_create_double(env, request.id, &args[0]);
  napi_create_string_latin1(env, request.method.data(), request.method.size(), &args[1]);
  napi_create_string_utf8(env, request.target.data(), request.target.size(), &args[2]);
  napi_create_string_utf8(env, request.headers.data(), request.headers.size(), &args[3]);
  if (request.body == nullptr) {
    napi_get_undefined(env, &args[4]);
  } else if (request.body_size >= kExternalBodyBytes) {
    char* data = request.TakeBody();
    napi_status st = napi_create_external_buffer(
        env, request.body_size, data, [](napi_env, void* d, void*) { std::free(d); }, nullptr, &args[4]);
    if (st != napi_ok) {  // no external buffers in this runtime: copy
      napi_create_buffer_copy(env, request.body_size, data, nullptr, &args[4]);
      std::free(data);
    }
  } else {
    napi_create_buffer_copy(env, request.body_size, request.body, nullptr, &args[4]);
  }
  napi_value recv = Value();
  napi_value fn = on_request_.Value();
  RaiseIfThrown(napi_call_function(env, recv, fn, 5, args, nullptr));
  napi_close_handle_scope(env, scope);
}

void HttpServerWrap::OnAbort(double id) {
  napi_env env = env_;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value arg;
  napi_create_double(env, id, &arg);
  RaiseIfThrown(napi_call_function(env, Value(), on_abort_.Value(), 1, &arg, nullptr));
  napi_close_handle_scope(env, scope);
}

}  // namespace mlos
