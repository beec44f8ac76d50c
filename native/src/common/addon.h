// Per-environment state of the addon (one per Node environment: the main thread and each worker).
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

namespace mlos {

class ShmPool;
struct OrtSessionState;

struct AddonData {
  // The JS class for coded errors (errors.h), handed over by the loader through setErrorClass.
  Napi::FunctionReference errorClass;
  // The ShmPool JS constructor, for ShmPool.attach.
  Napi::FunctionReference shmPoolConstructor;
  // Set by ShmPool.attach just around constructing the JS object that wraps it.
  std::shared_ptr<ShmPool> pendingAttach;
  // Every pool created in this environment; the environment's cleanup hook unlinks those still
  // alive (the process-wide atexit registry in shm_pool.cc is the second line).
  std::vector<std::weak_ptr<ShmPool>> pools;
  // The OrtSession JS constructor, and the session OrtSession.open created on a worker thread,
  // set just around constructing the JS object that wraps it.
  Napi::FunctionReference ortSessionConstructor;
  std::shared_ptr<OrtSessionState> pendingSession;
};

inline AddonData* GetAddonData(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

}  // namespace mlos
