// The BlobFetch JS class; see blob_fetch_binding.h.
#include "fetch/blob_fetch_binding.h"

#include <dlfcn.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <system_error>
#include <utility>

#include "common/errors.h"

namespace mlos {

namespace {

constexpr napi_type_tag kBlobFetchTag = {0x6d6c6f73'626c6f62ULL, 0x3a7e55c0'1d9b4f68ULL};
constexpr uint64_t kMaxSafeInteger = (uint64_t{1} << 53) - 1;

// The addon calls the EVP functions of the OpenSSL already in the process (Node's) and links no
// libcrypto of its own; a Node without them gets no BlobFetch rather than a crash at first use.
bool EvpAvailable() {
  for (const char* name : {"EVP_MD_CTX_new", "EVP_MD_CTX_free", "EVP_DigestInit_ex",
                           "EVP_DigestUpdate", "EVP_DigestFinal_ex", "EVP_sha256"}) {
    if (dlsym(RTLD_DEFAULT, name) == nullptr) return false;
  }
  return true;
}

uint64_t ToIndex(Napi::Env env, Napi::Value v, const std::string& what, uint64_t min, uint64_t max) {
  MLOS_REQUIRE_TYPE(v.IsNumber(), env, what + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  MLOS_REQUIRE_RANGE(std::isfinite(d) && std::floor(d) == d && d >= static_cast<double>(min) &&
                         d <= static_cast<double>(max),
                     env,
                     what + " must be an integer from " + std::to_string(min) + " to " +
                         std::to_string(max) + ", got " + v.ToString().Utf8Value());
  return static_cast<uint64_t>(d);
}

std::string ToText(Napi::Env env, Napi::Value v, const std::string& what) {
  MLOS_REQUIRE_TYPE(v.IsString(), env, what + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

bool HasControl(const std::string& s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return true;
  }
  return false;
}

Napi::Object ResultToJs(Napi::Env env, const BlobFetchResult& r) {
  Napi::Object o = Napi::Object::New(env);
  auto num = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
  num("status", r.status);
  Napi::Object headers = Napi::Object::New(env);
  for (const auto& h : r.headers) {
    if (h.first == "__proto__") continue;  // would reach the object's prototype, not a property
    if (!headers.HasOwnProperty(h.first)) {
      headers.Set(h.first, Napi::String::New(env, h.second));
      continue;
    }
    Napi::Value prev = headers.Get(h.first);
    if (prev.IsArray()) {
      Napi::Array a = prev.As<Napi::Array>();
      a.Set(a.Length(), Napi::String::New(env, h.second));
    } else {
      Napi::Array a = Napi::Array::New(env, 2);
      a.Set(uint32_t{0}, prev);
      a.Set(uint32_t{1}, Napi::String::New(env, h.second));
      headers.Set(h.first, a);
    }
  }
  o.Set("headers", headers);
  o.Set("errorBody", Napi::Buffer<char>::Copy(env, r.error_body.data(), r.error_body.size()));
  num("bodyOffset", static_cast<double>(r.body_offset));
  num("received", static_cast<double>(r.received));
  num("bytes", static_cast<double>(r.file_bytes));
  o.Set("complete", Napi::Boolean::New(env, r.complete));
  if (r.complete) o.Set("sha256", Napi::String::New(env, r.sha256_hex));
  if (r.error != FetchErrc::kOk) {
    o.Set("code", Napi::String::New(env, FetchErrcCode(r.error, r.sys_errno)));
    num("errno", r.sys_errno);
    o.Set("message", Napi::String::New(env, r.message));
  }
  return o;
}

}  // namespace

struct BlobFetchWrap::Message {
  enum Kind { kProgress, kDone };
  Kind kind;
  std::unique_ptr<BlobFetchResult> result;
};

void BlobFetchWrap::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("blobFetchCompiled", Napi::Boolean::New(env, true));
  if (!EvpAvailable()) return;
  Napi::Function ctor = DefineClass(env, "BlobFetch", {});
  constexpr auto kMethod = static_cast<napi_property_attributes>(napi_writable | napi_configurable);
  auto method = [&](const char* name, Napi::Function::Callback cb) {
    return Napi::PropertyDescriptor::Value(name, Napi::Function::New(env, cb, name), kMethod);
  };
  ctor.Get("prototype").As<Napi::Object>().DefineProperties({
      method("start", Checked<&BlobFetchWrap::Start>),
      method("abort", Checked<&BlobFetchWrap::Abort>),
      method("isRunning", Checked<&BlobFetchWrap::IsRunning>),
  });
  exports.Set("BlobFetch", ctor);
}

BlobFetchWrap* BlobFetchWrap::FromReceiver(const Napi::CallbackInfo& info) {
  Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(&kBlobFetchTag)) {
    MLOS_THROW_TYPE(info.Env(), "BlobFetch method called on an object that is not a BlobFetch");
  }
  return Unwrap(self.As<Napi::Object>());
}

BlobFetchWrap::BlobFetchWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<BlobFetchWrap>(info),
      latest_(std::make_shared<std::atomic<uint64_t>>(0)),
      queued_(std::make_shared<std::atomic<bool>>(false)) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info.IsConstructCall(), env, "BlobFetch must be called with new");
  MLOS_REQUIRE_TYPE(info[0].IsObject(), env,
                    "new BlobFetch(options): options must be an object { host, port, path, file, ... }");
  Napi::Object o = info[0].As<Napi::Object>();
  BlobFetchOptions opt;
  opt.host = ToText(env, o.Get("host"), "options.host");
  MLOS_REQUIRE_RANGE(!opt.host.empty() && !HasControl(opt.host), env, "options.host must be a host name or IP address");
  opt.port = static_cast<uint16_t>(ToIndex(env, o.Get("port"), "options.port", 1, 65535));
  opt.path = ToText(env, o.Get("path"), "options.path");
  MLOS_REQUIRE_RANGE(!opt.path.empty() && opt.path[0] == '/' && !HasControl(opt.path), env,
                     "options.path must be a request target starting with /");
  opt.file = ToText(env, o.Get("file"), "options.file");
  MLOS_REQUIRE_RANGE(!opt.file.empty() && opt.file.find('\0') == std::string::npos, env,
                     "options.file must be a file path");
  Napi::Value headers = o.Get("headers");
  if (!headers.IsUndefined() && !headers.IsNull()) {
    MLOS_REQUIRE_TYPE(headers.IsObject(), env, "options.headers must be an object of strings");
    Napi::Object h = headers.As<Napi::Object>();
    Napi::Array names = h.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); ++i) {
      const std::string name = names.Get(i).ToString().Utf8Value();
      Napi::Value v = h.Get(name);
      if (v.IsUndefined()) continue;
      const std::string value = ToText(env, v, "options.headers[" + name + "]");
      MLOS_REQUIRE_RANGE(!name.empty() && !HasControl(name) && name.find(':') == std::string::npos &&
                             !HasControl(value),
                         env, "options.headers: invalid header " + name);
      opt.headers.emplace_back(name, value);
    }
  }
  Napi::Value v = o.Get("offset");
  if (!v.IsUndefined()) opt.offset = ToIndex(env, v, "options.offset", 0, kMaxSafeInteger);
  v = o.Get("expectedSize");
  if (!v.IsUndefined() && !v.IsNull()) {
    opt.expected_size = static_cast<int64_t>(ToIndex(env, v, "options.expectedSize", 0, kMaxSafeInteger));
    MLOS_REQUIRE_RANGE(opt.offset <= static_cast<uint64_t>(opt.expected_size), env,
                       "options.offset is past options.expectedSize");
  }
  constexpr uint64_t kMaxMs = std::numeric_limits<int32_t>::max();
  v = o.Get("stallTimeoutMs");
  if (!v.IsUndefined()) opt.stall_timeout_ms = static_cast<int>(ToIndex(env, v, "options.stallTimeoutMs", 1, kMaxMs));
  v = o.Get("connectTimeoutMs");
  if (!v.IsUndefined()) opt.connect_timeout_ms = static_cast<int>(ToIndex(env, v, "options.connectTimeoutMs", 1, kMaxMs));
  v = o.Get("bufferBytes");
  if (!v.IsUndefined()) opt.buffer_bytes = static_cast<size_t>(ToIndex(env, v, "options.bufferBytes", 4096, 64 << 20));
  v = o.Get("buffers");
  if (!v.IsUndefined()) opt.buffers = static_cast<int>(ToIndex(env, v, "options.buffers", 1, 64));
  fetcher_ = std::make_shared<BlobFetcher>(std::move(opt));
  info.This().As<Napi::Object>().TypeTag(&kBlobFetchTag);
}

BlobFetchWrap::~BlobFetchWrap() { StopThread(); }

void BlobFetchWrap::StopThread() {
  // Normally the thread has finished (it released the TSFN); at environment teardown it may not
  // have, and it must not outlive this object.
  if (thread_.joinable()) {
    fetcher_->Abort();
    thread_.join();
  }
}

Napi::Value BlobFetchWrap::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE(state_ == State::kIdle, env, "BAD_STATE", "BlobFetch.start() runs once, and it already ran");
  if (!info[0].IsUndefined() && !info[0].IsNull()) {
    MLOS_REQUIRE_TYPE(info[0].IsFunction(), env, "start(onProgress): onProgress must be a function");
    on_progress_ = Napi::Persistent(info[0].As<Napi::Function>());
  }
  deferred_ = std::make_unique<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
  Tsfn tsfn = Tsfn::New(env, "mlos.BlobFetch", 0, 1, this, &BlobFetchWrap::OnTsfnFinalize,
                        static_cast<void*>(nullptr));
  // Kept alive until the TSFN is finalized (after the result was delivered).
  Ref();
  state_ = State::kRunning;
  external_bytes_ = static_cast<int64_t>(fetcher_->MemoryBytes());
  Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);

  std::shared_ptr<BlobFetcher> fetcher = fetcher_;
  std::shared_ptr<std::atomic<uint64_t>> latest = latest_;
  std::shared_ptr<std::atomic<bool>> queued = queued_;
  const bool want_progress = !on_progress_.IsEmpty();
  try {
    thread_ = std::thread([fetcher, latest, queued, want_progress, tsfn]() mutable {
      std::function<void(uint64_t)> progress;
      if (want_progress) {
        progress = [&](uint64_t n) {
          latest->store(n, std::memory_order_relaxed);
          if (queued->exchange(true)) return;  // a call is queued: it will read the latest value
          auto* m = new Message{Message::kProgress, nullptr};
          if (tsfn.NonBlockingCall(m) != napi_ok) delete m;
        };
      }
      auto* done = new Message{Message::kDone, nullptr};
      try {
        done->result = std::make_unique<BlobFetchResult>(fetcher->Run(progress));
      } catch (const std::exception& e) {
        done->result = std::make_unique<BlobFetchResult>();
        done->result->error = FetchErrc::kFile;
        done->result->message = std::string("the native transfer failed: ") + e.what();
      }
      if (tsfn.BlockingCall(done) != napi_ok) delete done;
      tsfn.Release();
    });
  } catch (const std::system_error& e) {
    state_ = State::kDone;
    tsfn.Release();  // its finalizer drops the Ref above
    Napi::Error err = MakeJsError(env, JsErrorKind::kError, "BLOB_FETCH_FAIL",
                                  std::string("cannot start the transfer thread: ") + e.what());
    deferred_->Reject(err.Value());
  }
  return deferred_->Promise();
}

void BlobFetchWrap::CallJs(Napi::Env env, Napi::Function /*unused*/, BlobFetchWrap* self, Message* msg) {
  std::unique_ptr<Message> m(msg);
  if (env == nullptr || self == nullptr) return;  // the environment is going away
  try {
    self->Deliver(env, m.get());
  } catch (...) {
    // Nothing can be thrown from here; Deliver settles the promise on every path it can.
  }
}

void BlobFetchWrap::Deliver(Napi::Env env, Message* msg) {
  Napi::HandleScope scope(env);
  if (msg->kind == Message::kProgress) {
    queued_->store(false);
    if (on_progress_.IsEmpty() || !callback_error_.IsEmpty() || state_ != State::kRunning) return;
    try {
      on_progress_.Call({Napi::Number::New(env, static_cast<double>(latest_->load()))});
    } catch (const Napi::Error& e) {
      callback_error_ = Napi::Persistent(e.Value());
      fetcher_->Abort();
    }
    return;
  }
  state_ = State::kDone;
  Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
  external_bytes_ = 0;
  on_progress_.Reset();
  if (!callback_error_.IsEmpty()) {
    Napi::Value err = callback_error_.Value();
    callback_error_.Reset();
    deferred_->Reject(err);
    return;
  }
  try {
    deferred_->Resolve(ResultToJs(env, *msg->result));
  } catch (const Napi::Error& e) {
    deferred_->Reject(e.Value());
  }
}

void BlobFetchWrap::OnTsfnFinalize(Napi::Env env, void* /*unused*/, BlobFetchWrap* self) {
  self->StopThread();
  if (self->external_bytes_ != 0 && env != nullptr) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -self->external_bytes_);
    self->external_bytes_ = 0;
  }
  self->state_ = State::kDone;
  try {
    self->Unref();
  } catch (...) {
  }
}

Napi::Value BlobFetchWrap::Abort(const Napi::CallbackInfo& info) {
  fetcher_->Abort();
  return info.Env().Undefined();
}

Napi::Value BlobFetchWrap::IsRunning(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), state_ == State::kRunning);
}

}  // namespace mlos
