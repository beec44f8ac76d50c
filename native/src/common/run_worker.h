// What both addons' models share (mlos_native's OrtSession, mlos_torch's TorchModule): loading
// and running on libuv worker threads behind a promise, and the "nicer" priority of the threads
// that run models.
#pragma once

#include <napi.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/errors.h"

namespace mlos {

// Worker threads that run models are made "nicer" than the event loop's thread (once per thread;
// an unprivileged process cannot take it back, and need not: these threads only do background
// work). With more busy threads than cores, the kernel then gives the event loop the CPU soon
// after it wakes, which keeps its delay low under load. How nice matters: with Linux's EEVDF
// scheduler a waking thread does not always preempt a running one at once, and with four runs on
// two cores at nice 5 the loop's thread waited up to 8 ms for a CPU (perf sched timehist), often
// enough to put its p99 delay near 2 ms; at nice 10 the waits are rarer and the p99 stays near
// 1.1-1.6 ms, while a busy loop still leaves the runs ~10 % of a contended core rather than none.
// MLOS_RUN_NICE sets the nice value (default 10; 0 leaves priorities alone). A thread already at
// least that nice (one that ran the other addon's models) is left as it is, so nothing is niced
// twice.
inline void LowerWorkerPriorityOnce() {
  static const int increment = [] {
    const char* env = std::getenv("MLOS_RUN_NICE");
    return env != nullptr ? std::atoi(env) : 10;
  }();
  thread_local bool done = false;
  if (done || increment <= 0) return;
  done = true;
#ifdef __linux__
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  errno = 0;
  const int current = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  if (errno == 0 && current < increment) setpriority(PRIO_PROCESS, static_cast<id_t>(tid), std::min(19, increment));
#endif
}

// Runs a prepared plan on a libuv worker thread and settles a promise on the JS thread: resolved
// with Build(env, plan, kept) after Run(plan), or rejected with the plan's coded error. `Plan` has `error` (empty
// on success) and `errorCode`. The owner object (the session or module) and every JS object whose
// memory the run uses (`keep`, handed back to Build as `kept`) stay referenced until it is done.
template <typename Plan, void (*Run)(Plan&),
          Napi::Value (*Build)(Napi::Env, Plan&, const std::vector<Napi::Value>& kept)>
class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, const char* name, Napi::Object owner, std::unique_ptr<Plan> plan,
            const std::vector<Napi::Object>& keep)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), plan_(std::move(plan)) {
    owner_ = Napi::Persistent(owner);
    for (const auto& o : keep) keep_.push_back(Napi::Persistent(o));
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    LowerWorkerPriorityOnce();
    Run(*plan_);
    if (!plan_->error.empty()) SetError(plan_->error);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      std::vector<Napi::Value> kept;
      for (const auto& ref : keep_) kept.push_back(ref.Value());
      deferred_.Resolve(Build(env, *plan_, kept));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& /*unused*/) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    deferred_.Reject(MakeJsError(env, JsErrorKind::kError, plan_->errorCode, plan_->error).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::unique_ptr<Plan> plan_;
  Napi::ObjectReference owner_;
  std::vector<Napi::ObjectReference> keep_;
};

// Loads a model on a libuv worker thread (reading and optimising a large one takes seconds), then
// makes its JS object on the JS thread: the loaded state is handed to the class's constructor
// through the addon data's `pending` slot, set only around that call (so user code cannot reach
// the constructor's branch that takes it). `open` returns "" or what failed; a failure rejects
// with `failCode` and the model's path.
template <typename State>
class OpenWorker : public Napi::AsyncWorker {
 public:
  using OpenFn = std::function<std::string(std::shared_ptr<State>*)>;

  OpenWorker(Napi::Env env, const char* name, std::string path, OpenFn open, std::shared_ptr<State>* pending,
             Napi::FunctionReference* constructor, const char* failCode)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        open_(std::move(open)),
        pending_(pending),
        constructor_(constructor),
        failCode_(failCode) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    error_ = open_(&state_);
    if (!error_.empty()) SetError(error_);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      *pending_ = std::move(state_);
      Napi::Object obj = constructor_->New({env.Undefined(), Napi::String::New(env, path_)});
      pending_->reset();
      deferred_.Resolve(obj);
    } catch (const Napi::Error& e) {
      pending_->reset();
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& /*unused*/) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    deferred_.Reject(MakeJsError(env, JsErrorKind::kError, failCode_, error_ + " (model " + path_ + ")").Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  OpenFn open_;
  std::shared_ptr<State>* pending_;
  Napi::FunctionReference* constructor_;
  const char* failCode_;
  std::shared_ptr<State> state_;
  std::string error_;
};

}  // namespace mlos
