// The IPC door's JS classes; see ipc_binding.h.
#include "ipc/ipc_binding.h"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "common/errors.h"
#include "ipc/ipc_client.h"
#include "ipc/ipc_host.h"
#include "ipc/ipc_runner.h"
#include "ipc/ipc_wire.h"
#ifdef MLOS_WITH_ORT
#include "ipc/ipc_ort_model.h"
#include "ort/ort_session.h"
#endif

namespace mlos {

namespace {

using ipc::IpcConnection;
using ipc::IpcHost;
using ipc::IpcModel;
using ipc::Segment;

// A Buffer over `bytes` of a segment, which it keeps mapped until the Buffer is collected.
Napi::Buffer<uint8_t> SegmentBuffer(Napi::Env env, const std::shared_ptr<Segment>& seg, uint8_t* data, uint64_t bytes) {
  auto* hold = new std::shared_ptr<Segment>(seg);
  return Napi::Buffer<uint8_t>::New(env, data, static_cast<size_t>(bytes), [](Napi::Env, uint8_t*, std::shared_ptr<Segment>* h) { delete h; }, hold);
}

Napi::Array ShapeArray(Napi::Env env, const int64_t* shape, uint32_t rank) {
  Napi::Array a = Napi::Array::New(env, rank);
  for (uint32_t i = 0; i < rank; ++i) a.Set(i, Napi::Number::New(env, static_cast<double>(shape[i])));
  return a;
}

// ---- models another addon runs natively (mlos_ipc_runner) -------------------------------------------

class IpcRunnerModel : public IpcModel {
 public:
  explicit IpcRunnerModel(mlos_ipc_runner* r) : r_(r) { r_->retain(r_->self); }
  ~IpcRunnerModel() override { r_->release(r_->self); }
  void Run(const mlos_ipc_request& request, const std::shared_ptr<Segment>& seg, mlos_ipc_response* out) override {
    r_->run(r_->self, &request, seg->arena, seg->arena_bytes, out);
  }

 private:
  mlos_ipc_runner* r_;
};

// ---- models served through JavaScript --------------------------------------------------------------

// One request handed to the JS thread; the client thread waits for `done`.
struct PendingJs {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  bool abandoned = false;  // the client thread stopped waiting (shutdown): nothing may be written
  const mlos_ipc_request* request = nullptr;
  std::shared_ptr<Segment> segment;
  mlos_ipc_response* response = nullptr;
};

class IpcJsModel : public IpcModel, public std::enable_shared_from_this<IpcJsModel> {
 public:
  IpcJsModel(Napi::Env env, Napi::Function handler, const std::string& name) {
    tsfn_ = Napi::ThreadSafeFunction::New(env, handler, "mlos-ipc-" + name, 0, 1);
    tsfn_.Unref(env);  // the server's own handles keep the process alive, not this
  }
  ~IpcJsModel() override { Close(); }

  void Run(const mlos_ipc_request& r, const std::shared_ptr<Segment>& seg, mlos_ipc_response* out) override {
    auto p = std::make_shared<PendingJs>();
    p->request = &r;
    p->segment = seg;
    p->response = out;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_) return ipc::SetError(out, r.id, "IPC_SHUTTING_DOWN", "the server is shutting down");
      pending_.insert(p);
    }
    auto* data = new std::shared_ptr<PendingJs>(p);
    if (tsfn_.BlockingCall(data, &IpcJsModel::OnJsThread) != napi_ok) {
      delete data;
      Forget(p);
      return ipc::SetError(out, r.id, "IPC_SHUTTING_DOWN", "the server is shutting down");
    }
    std::unique_lock<std::mutex> lk(p->mu);
    p->cv.wait(lk, [&] { return p->done || p->abandoned; });
    if (!p->done) {
      ipc::SetError(out, r.id, "IPC_SHUTTING_DOWN", "the server is shutting down");
    }
    lk.unlock();
    Forget(p);
  }

  // Answers every request still waiting with IPC_SHUTTING_DOWN and refuses new ones.
  void Close() {
    std::set<std::shared_ptr<PendingJs>> waiting;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_) return;
      closing_ = true;
      waiting.swap(pending_);
    }
    for (auto& p : waiting) {
      std::lock_guard<std::mutex> lk(p->mu);
      p->abandoned = true;
      p->cv.notify_all();
    }
    tsfn_.Abort();
  }

 private:
  void Forget(const std::shared_ptr<PendingJs>& p) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.erase(p);
  }

  // On the JS thread: builds the request object, calls the handler, and completes from its promise.
  static void OnJsThread(Napi::Env env, Napi::Function handler, std::shared_ptr<PendingJs>* data) {
    std::shared_ptr<PendingJs> p = std::move(*data);
    delete data;
    if (env == nullptr) return Finish(p, nullptr, "IPC_SHUTTING_DOWN", "the server is shutting down");
    try {
      const mlos_ipc_request& r = *p->request;
      Napi::Object req = Napi::Object::New(env);
      req.Set("model", Napi::String::New(env, r.model));
      Napi::Array inputs = Napi::Array::New(env, r.n_inputs);
      for (uint32_t i = 0; i < r.n_inputs; ++i) {
        const mlos_ipc_tensor& t = r.inputs[i];
        Napi::Object o = Napi::Object::New(env);
        o.Set("name", Napi::String::New(env, t.name));
        o.Set("dtype", Napi::Number::New(env, t.dtype));
        o.Set("shape", ShapeArray(env, t.shape, t.rank));
        o.Set("data", SegmentBuffer(env, p->segment, p->segment->arena + t.offset, t.bytes));
        inputs.Set(i, o);
      }
      req.Set("inputs", inputs);
      Napi::Array outs = Napi::Array::New(env, r.n_outputs);
      for (uint32_t i = 0; i < r.n_outputs; ++i) outs.Set(i, Napi::String::New(env, r.outputs[i]));
      req.Set("outputs", outs);
      req.Set("window", SegmentBuffer(env, p->segment, p->segment->arena + r.out_offset, r.out_bytes));
      Napi::Value ret = handler.Call({req});
      if (!ret.IsPromise()) return Complete(env, p, ret);
      Napi::Object promise = ret.As<Napi::Object>();
      Napi::Function then = promise.Get("then").As<Napi::Function>();
      auto ok = Napi::Function::New(env, [p](const Napi::CallbackInfo& info) { Complete(info.Env(), p, info[0]); }, "ipcResolved");
      auto fail = Napi::Function::New(env, [p](const Napi::CallbackInfo& info) {
        Napi::Value e = info[0];
        std::string code = "IPC_RUN_FAILED", message = "the model failed";
        if (e.IsObject()) {
          Napi::Object eo = e.As<Napi::Object>();
          if (eo.Get("code").IsString()) code = eo.Get("code").As<Napi::String>().Utf8Value();
          if (eo.Get("message").IsString()) message = eo.Get("message").As<Napi::String>().Utf8Value();
        }
        Finish(p, nullptr, code.c_str(), message);
      }, "ipcRejected");
      then.Call(promise, {ok, fail});
    } catch (const Napi::Error& e) {
      Finish(p, nullptr, "IPC_RUN_FAILED", e.Message());
    }
  }

  // The handler's result: outputs placed in the window, or { code, message, neededBytes }.
  static void Complete(Napi::Env env, const std::shared_ptr<PendingJs>& p, Napi::Value v) {
    if (!v.IsObject()) return Finish(p, nullptr, "IPC_RUN_FAILED", "the model's handler returned no result");
    Napi::Object o = v.As<Napi::Object>();
    if (o.Get("code").IsString()) {
      uint64_t needed = o.Get("neededBytes").IsNumber() ? static_cast<uint64_t>(o.Get("neededBytes").As<Napi::Number>().DoubleValue()) : 0;
      std::string message = o.Get("message").IsString() ? o.Get("message").As<Napi::String>().Utf8Value() : "";
      return Finish(p, nullptr, o.Get("code").As<Napi::String>().Utf8Value().c_str(), message, needed);
    }
    mlos_ipc_response built{};
    const mlos_ipc_request& r = *p->request;
    Napi::Value list = o.Get("outputs");
    if (!list.IsArray()) return Finish(p, nullptr, "IPC_RUN_FAILED", "the model's handler returned no outputs");
    Napi::Array a = list.As<Napi::Array>();
    if (a.Length() > MLOS_IPC_MAX_TENSORS) return Finish(p, nullptr, "IPC_RUN_FAILED", "more outputs than the IPC door carries");
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Object t = a.Get(i).As<Napi::Object>();
      mlos_ipc_tensor& d = built.outputs[i];
      ipc::CopyName(d.name, sizeof d.name, t.Get("name").As<Napi::String>().Utf8Value().c_str());
      d.dtype = t.Get("dtype").As<Napi::Number>().Uint32Value();
      Napi::Array shape = t.Get("shape").As<Napi::Array>();
      if (shape.Length() > MLOS_IPC_MAX_RANK) return Finish(p, nullptr, "IPC_RUN_FAILED", "an output's rank is more than the IPC door carries");
      d.rank = shape.Length();
      for (uint32_t k = 0; k < d.rank; ++k) d.shape[k] = shape.Get(k).As<Napi::Number>().Int64Value();
      const uint64_t offset = static_cast<uint64_t>(t.Get("offset").As<Napi::Number>().DoubleValue());
      d.bytes = static_cast<uint64_t>(t.Get("bytes").As<Napi::Number>().DoubleValue());
      if (offset > r.out_bytes || d.bytes > r.out_bytes - offset) return Finish(p, nullptr, "IPC_RUN_FAILED", "an output lies outside the window");
      d.offset = r.out_offset + offset;
    }
    built.n_outputs = a.Length();
    Finish(p, &built, nullptr, "");
    (void)env;
  }

  static void Finish(const std::shared_ptr<PendingJs>& p, const mlos_ipc_response* ok, const char* code, const std::string& message, uint64_t needed = 0) {
    std::lock_guard<std::mutex> lk(p->mu);
    if (p->done || p->abandoned) return;
    mlos_ipc_response* out = p->response;
    const uint64_t id = p->request->id;
    if (ok != nullptr) {
      std::memcpy(out->outputs, ok->outputs, sizeof ok->outputs);
      out->n_outputs = ok->n_outputs;
      out->status = 0;
      out->id = id;
    } else {
      ipc::SetError(out, id, code, message);
      out->needed_bytes = needed;
    }
    p->done = true;
    p->cv.notify_all();
  }

  Napi::ThreadSafeFunction tsfn_;
  std::mutex mu_;
  bool closing_ = false;
  std::set<std::shared_ptr<PendingJs>> pending_;
};

// ---- IpcHost --------------------------------------------------------------------------------------

class IpcHostWrap : public Napi::ObjectWrap<IpcHostWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "IpcHost",
                       {InstanceMethod<&IpcHostWrap::SetOrtModel>("setOrtModel"), InstanceMethod<&IpcHostWrap::SetJsModel>("setJsModel"),
                        InstanceMethod<&IpcHostWrap::SetRunnerModel>("setRunnerModel"),
                        InstanceMethod<&IpcHostWrap::RemoveModel>("removeModel"), InstanceMethod<&IpcHostWrap::Stats>("stats"),
                        InstanceMethod<&IpcHostWrap::ModelCounts>("modelCounts"), InstanceMethod<&IpcHostWrap::Close>("close"),
                        InstanceAccessor<&IpcHostWrap::Instance>("instance"), InstanceAccessor<&IpcHostWrap::Path>("path")});
  }

  explicit IpcHostWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IpcHostWrap>(info) {
    Napi::Env env = info.Env();
    MLOS_REQUIRE_TYPE(info.IsConstructCall(), env, "IpcHost must be called with new");
    MLOS_REQUIRE_TYPE(info[0].IsString(), env, "IpcHost(socketPath, options?): socketPath must be a string");
    ipc::IpcHostOptions o;
    o.socket_path = info[0].As<Napi::String>().Utf8Value();
    if (info[1].IsObject()) {
      Napi::Object opts = info[1].As<Napi::Object>();
      if (opts.Get("maxArenaBytes").IsNumber()) o.max_arena_bytes = static_cast<uint64_t>(opts.Get("maxArenaBytes").As<Napi::Number>().DoubleValue());
      if (opts.Get("maxClients").IsNumber()) o.max_clients = opts.Get("maxClients").As<Napi::Number>().Uint32Value();
      if (opts.Get("leaseMs").IsNumber()) o.lease_ns = static_cast<int64_t>(opts.Get("leaseMs").As<Napi::Number>().DoubleValue() * 1e6);
    }
    std::string error;
    host_ = IpcHost::Start(o, &error);
    if (!host_) MLOS_THROW_CODE(env, "IPC_LISTEN_FAILED", error);
    path_ = o.socket_path;
  }
  ~IpcHostWrap() override { Shutdown(); }

 private:
  IpcHost& Live(Napi::Env env) {
    if (!host_) MLOS_THROW_CODE(env, "CLOSED", "this IPC host is closed");
    return *host_;
  }

  Napi::Value SetOrtModel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    IpcHost& host = Live(env);
    MLOS_REQUIRE_TYPE(info[0].IsString(), env, "setOrtModel(name, session): name must be a string");
#ifdef MLOS_WITH_ORT
    std::shared_ptr<OrtSessionState> st = OrtSessionWrap::StateOf(info[1]);
    if (!st) MLOS_THROW_TYPE(env, "setOrtModel(name, session): session must be an open OrtSession");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    DropJs(name);
    host.SetModel(name, ipc::MakeIpcOrtModel(std::move(st)));
#else
    MLOS_THROW_CODE(env, "ORT_UNAVAILABLE", "this build has no ONNX Runtime sessions");
#endif
    return env.Undefined();
  }

  Napi::Value SetRunnerModel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    IpcHost& host = Live(env);
    MLOS_REQUIRE_TYPE(info[0].IsString() && info[1].IsExternal(), env, "setRunnerModel(name, runner): a name and an mlos_ipc_runner External");
    auto* runner = info[1].As<Napi::External<mlos_ipc_runner>>().Data();
    MLOS_REQUIRE_TYPE(runner != nullptr && runner->abi == MLOS_IPC_RUNNER_ABI && runner->run && runner->retain && runner->release, env,
                      "setRunnerModel: the External is not an mlos_ipc_runner of this version");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    DropJs(name);
    host.SetModel(name, std::make_shared<IpcRunnerModel>(runner));
    return env.Undefined();
  }

  Napi::Value SetJsModel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    IpcHost& host = Live(env);
    MLOS_REQUIRE_TYPE(info[0].IsString() && info[1].IsFunction(), env, "setJsModel(name, handler): a name and a function");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    DropJs(name);
    auto model = std::make_shared<IpcJsModel>(env, info[1].As<Napi::Function>(), name);
    js_[name] = model;
    every_js_.push_back(model);
    host.SetModel(name, model);
    every_js_.erase(std::remove_if(every_js_.begin(), every_js_.end(), [](const std::weak_ptr<IpcJsModel>& w) { return w.expired(); }), every_js_.end());
    return env.Undefined();
  }

  Napi::Value RemoveModel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    MLOS_REQUIRE_TYPE(info[0].IsString(), env, "removeModel(name): name must be a string");
    if (!host_) return env.Undefined();
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    host_->RemoveModel(name);
    DropJs(name);
    return env.Undefined();
  }

  // Forgets the JS model served under `name` (replaced or removed). Requests it is running finish:
  // the host holds it for them, and it goes when the last one does.
  void DropJs(const std::string& name) { js_.erase(name); }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    ipc::IpcHostStats s = host_ ? host_->Stats() : ipc::IpcHostStats{};
    o.Set("clients", Napi::Number::New(env, s.clients));
    o.Set("segmentBytes", Napi::Number::New(env, static_cast<double>(s.segment_bytes)));
    o.Set("connections", Napi::Number::New(env, static_cast<double>(s.connections)));
    o.Set("refused", Napi::Number::New(env, static_cast<double>(s.refused)));
    o.Set("dropped", Napi::Number::New(env, static_cast<double>(s.dropped)));
    o.Set("unknownModel", Napi::Number::New(env, static_cast<double>(s.unknown_model)));
    return o;
  }

  Napi::Value ModelCounts(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!host_) return o;
    for (auto& [name, c] : host_->ModelCounts()) {
      Napi::Object m = Napi::Object::New(env);
      m.Set("requests", Napi::Number::New(env, static_cast<double>(c.requests)));
      m.Set("failures", Napi::Number::New(env, static_cast<double>(c.failures)));
      m.Set("computeNs", Napi::Number::New(env, static_cast<double>(c.compute_ns)));
      o.Set(name, m);
    }
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  void Shutdown() {
    // JS requests first: a client thread waiting on the JS thread (this one) must not be joined.
    for (auto& weak : every_js_) {
      if (auto m = weak.lock()) m->Close();
    }
    if (host_) host_->Stop();
    js_.clear();
    every_js_.clear();
    host_.reset();
  }

  Napi::Value Instance(const Napi::CallbackInfo& info) { return Napi::BigInt::New(info.Env(), host_ ? host_->instance() : 0); }
  Napi::Value Path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }

  std::unique_ptr<IpcHost> host_;
  std::map<std::string, std::shared_ptr<IpcJsModel>> js_;
  // Every JS model made, replaced ones included (they may still run requests): closed at shutdown.
  std::vector<std::weak_ptr<IpcJsModel>> every_js_;
  std::string path_;  // the socket's path (kept after close)
};

// ---- IpcClient ------------------------------------------------------------------------------------

class IpcClientWrap : public Napi::ObjectWrap<IpcClientWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "IpcClient",
                       {InstanceMethod<&IpcClientWrap::Send>("send"), InstanceMethod<&IpcClientWrap::Receive>("receive"),
                        InstanceMethod<&IpcClientWrap::ReceiveAsync>("receiveAsync"), InstanceMethod<&IpcClientWrap::Connected>("connected"),
                        InstanceMethod<&IpcClientWrap::Close>("close"), InstanceAccessor<&IpcClientWrap::Arena>("arena"),
                        InstanceMethod<&IpcClientWrap::Segment>("segment"),
                        InstanceAccessor<&IpcClientWrap::ServerInstance>("serverInstance"), InstanceAccessor<&IpcClientWrap::ClientId>("clientId"),
                        InstanceAccessor<&IpcClientWrap::LastError>("lastError")});
  }

  explicit IpcClientWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IpcClientWrap>(info) {
    Napi::Env env = info.Env();
    MLOS_REQUIRE_TYPE(info.IsConstructCall(), env, "IpcClient must be called with new");
    MLOS_REQUIRE_TYPE(info[0].IsString() && info[1].IsNumber(), env, "IpcClient(name, arenaBytes)");
    std::string error;
    conn_ = IpcConnection::Connect(info[0].As<Napi::String>().Utf8Value(), static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue()), &error);
    if (!conn_) {
      const size_t colon = error.find(':');
      const std::string code = colon != std::string::npos && colon < 32 ? error.substr(0, colon) : "IPC_CONNECT";
      MLOS_THROW_CODE(env, code.c_str(), error);
    }
  }

 private:
  Napi::Value Arena(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (arena_.IsEmpty()) {
      auto* hold = new std::shared_ptr<IpcConnection>(conn_);
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, conn_->arena(), static_cast<size_t>(conn_->arena_bytes()),
                                                    [](Napi::Env, void*, std::shared_ptr<IpcConnection>* h) { delete h; }, hold);
      arena_ = Napi::Persistent(ab);
    }
    return arena_.Value();
  }

  Napi::Value Segment(const Napi::CallbackInfo& info) {
    auto* hold = new std::shared_ptr<IpcConnection>(conn_);
    return Napi::ArrayBuffer::New(info.Env(), conn_->segment(), static_cast<size_t>(conn_->segment_bytes()),
                                  [](Napi::Env, void*, std::shared_ptr<IpcConnection>* h) { delete h; }, hold);
  }

  static bool Bytes(const Napi::Value& v, uint8_t** data, size_t* length) {
    if (!v.IsTypedArray()) return false;
    Napi::TypedArray t = v.As<Napi::TypedArray>();
    *data = static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    *length = t.ByteLength();
    return true;
  }

  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint8_t* data;
    size_t length;
    MLOS_REQUIRE_TYPE(Bytes(info[0], &data, &length) && length == sizeof(mlos_ipc_request), env, "send(request): a Uint8Array of one mlos_ipc_request");
    return Napi::Boolean::New(env, conn_->Send(*reinterpret_cast<const mlos_ipc_request*>(data)));
  }

  Napi::Value Receive(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint8_t* data;
    size_t length;
    MLOS_REQUIRE_TYPE(Bytes(info[0], &data, &length) && length == sizeof(mlos_ipc_response), env, "receive(out, spinMicros): out must be a Uint8Array of one mlos_ipc_response");
    const int64_t spin = info[1].IsNumber() ? static_cast<int64_t>(info[1].As<Napi::Number>().DoubleValue() * 1000) : 0;
    MLOS_REQUIRE(!busy_, env, "IPC_BUSY", "a receiveAsync is waiting on this connection");
    std::string error;
    const int r = conn_->Receive(reinterpret_cast<mlos_ipc_response*>(data), 0, spin, &error);
    if (r < 0) last_error_ = error;
    return Napi::Number::New(env, r);
  }

  class Waiter : public Napi::AsyncWorker {
   public:
    Waiter(Napi::Env env, IpcClientWrap* owner, Napi::Object out, uint8_t* data, int64_t timeout_ns)
        : Napi::AsyncWorker(env, "mlos-ipc-receive"), deferred_(Napi::Promise::Deferred::New(env)), owner_(owner), conn_(owner->conn_),
          data_(data), timeout_ns_(timeout_ns) {
      out_ = Napi::Persistent(out);
      self_ = Napi::Persistent(owner->Value());
    }
    Napi::Promise Promise() { return deferred_.Promise(); }
    void Execute() override { result_ = conn_->Receive(reinterpret_cast<mlos_ipc_response*>(data_), timeout_ns_, 0, &error_); }
    void OnOK() override {
      owner_->busy_ = false;
      if (result_ < 0) owner_->last_error_ = error_;
      deferred_.Resolve(Napi::Number::New(Env(), result_));
    }

   private:
    Napi::Promise::Deferred deferred_;
    IpcClientWrap* owner_;
    std::shared_ptr<IpcConnection> conn_;
    Napi::ObjectReference out_, self_;
    uint8_t* data_;
    int64_t timeout_ns_;
    int result_ = 0;
    std::string error_;
  };

  Napi::Value ReceiveAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint8_t* data;
    size_t length;
    MLOS_REQUIRE_TYPE(Bytes(info[0], &data, &length) && length == sizeof(mlos_ipc_response), env, "receiveAsync(out, timeoutMs): out must be a Uint8Array of one mlos_ipc_response");
    MLOS_REQUIRE(!busy_, env, "IPC_BUSY", "a receiveAsync is already waiting on this connection");
    const int64_t timeout = info[1].IsNumber() ? static_cast<int64_t>(info[1].As<Napi::Number>().DoubleValue() * 1e6) : -1;
    auto* w = new Waiter(env, this, info[0].As<Napi::Object>(), data, timeout);
    busy_ = true;
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value Connected(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), conn_->Connected()); }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    conn_->Disconnect();
    return info.Env().Undefined();
  }
  Napi::Value ServerInstance(const Napi::CallbackInfo& info) { return Napi::BigInt::New(info.Env(), conn_->server_instance()); }
  Napi::Value ClientId(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), conn_->client_id()); }
  Napi::Value LastError(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), last_error_); }

  std::shared_ptr<IpcConnection> conn_;
  Napi::Reference<Napi::ArrayBuffer> arena_;
  bool busy_ = false;
  std::string last_error_;
};

}  // namespace

void InitIpc(Napi::Env env, Napi::Object exports) {
  exports.Set("IpcHost", IpcHostWrap::Define(env));
  exports.Set("IpcClient", IpcClientWrap::Define(env));
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("requestBytes", Napi::Number::New(env, sizeof(mlos_ipc_request)));
  layout.Set("responseBytes", Napi::Number::New(env, sizeof(mlos_ipc_response)));
  layout.Set("requestInputs", Napi::Number::New(env, offsetof(mlos_ipc_request, inputs)));
  layout.Set("responseOutputs", Napi::Number::New(env, offsetof(mlos_ipc_response, outputs)));
  layout.Set("tensorBytes", Napi::Number::New(env, sizeof(mlos_ipc_tensor)));
  exports.Set("ipcLayout", layout);
}

}  // namespace mlos
