// IpcHost: the server side of the shared-memory IPC door (include/mlos_ipc.h). Plain C++17: the
// models it runs are IpcModel objects (ONNX Runtime sessions run natively, ipc_ort_model.cc;
// models whose plugin is JavaScript go through the addon's binding), so that the unit tests
// drive it with a model of their own.
//
// Threads: one listener accepts connections on the Unix socket; each client then gets a thread of
// its own that does the handshake (peer credentials checked, a sealed memfd segment handed over)
// and serves the client's request ring: it sleeps on the ring's futex, validates each request,
// runs the model in place on the arena and pushes the response. A client thread only ever waits
// for its own client, so a slow or hostile client stalls no one else:
//   - its socket closing (a crash, kill -9) ends its thread within kPollNs and frees its segment;
//   - a response ring it does not drain for `lease_ns` gets it disconnected;
//   - a corrupt ring gets it disconnected; a bad request gets an error response.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "mlos_ipc.h"

namespace mlos::ipc {

// A client's shared segment, mapped in the server; kept alive (shared_ptr) by whoever still
// reads or writes it after the client is gone (a run in flight, a JavaScript view).
struct Segment {
  uint8_t* base = nullptr;
  uint64_t bytes = 0;
  uint8_t* arena = nullptr;
  uint64_t arena_bytes = 0;
  ~Segment();
};

// A model the door runs. Run is called on client threads, concurrently for different clients.
class IpcModel {
 public:
  virtual ~IpcModel() = default;
  // Runs a validated request (ValidateRequest passed) on `segment`'s arena and fills `response`
  // (id already set): outputs written into the request's window, or an error.
  virtual void Run(const mlos_ipc_request& request, const std::shared_ptr<Segment>& segment, mlos_ipc_response* response) = 0;
};

struct IpcHostOptions {
  std::string socket_path;
  uint64_t max_arena_bytes = 1ull << 30;  // a client asking for more gets this much
  uint32_t max_clients = 64;
  int64_t lease_ns = 5'000'000'000;  // a client that leaves its response ring full this long is dropped
};

// Counts for one model (requests that reached it, those that failed, Session::Run time).
struct IpcModelCounts {
  uint64_t requests = 0, failures = 0, compute_ns = 0;
};

struct IpcHostStats {
  uint32_t clients = 0;          // connected now
  uint64_t segment_bytes = 0;    // their segments
  uint64_t connections = 0;      // accepted so far
  uint64_t refused = 0;          // refused at the handshake (credentials, too many, bad hello)
  uint64_t dropped = 0;          // disconnected by the server (corrupt ring, lease)
  uint64_t unknown_model = 0;    // requests for a model not (or no longer) served
};

class IpcHost {
 public:
  // Listens on options.socket_path (its directory made 0700 when missing, the socket 0600; a
  // stale socket of a dead server is replaced, a live one is an error). nullptr and *error on
  // failure.
  static std::unique_ptr<IpcHost> Start(const IpcHostOptions& options, std::string* error);
  ~IpcHost();

  // Stops accepting, marks every segment closed, wakes and joins every thread, removes the socket.
  void Stop();

  // Serves `model` under `name` (replacing what was there): requests that start after this call
  // run it. Remove: later requests get IPC_MODEL_NOT_FOUND; runs in flight finish on the model
  // they started with (the shared_ptr keeps it).
  void SetModel(const std::string& name, std::shared_ptr<IpcModel> model);
  void RemoveModel(const std::string& name);

  IpcHostStats Stats() const;
  std::map<std::string, IpcModelCounts> ModelCounts() const;
  uint64_t instance() const { return instance_; }
  const std::string& socket_path() const { return options_.socket_path; }

 private:
  struct Client;
  struct Counts {
    std::atomic<uint64_t> requests{0}, failures{0}, compute_ns{0};
  };
  struct ModelEntry {
    std::shared_ptr<IpcModel> model;
    std::shared_ptr<Counts> counts;
  };

  explicit IpcHost(const IpcHostOptions& options) : options_(options) {}
  void Listen();
  void Serve(const std::shared_ptr<Client>& client);
  bool Handshake(Client& client);
  void Reap(bool all);
  bool PushResponse(Client& client, const mlos_ipc_response& response);
  void Drop(Client& client, const std::string& why);

  IpcHostOptions options_;
  uint64_t instance_ = 0;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes the listener
  std::atomic<bool> stopping_{false};
  std::thread listener_;

  mutable std::mutex clients_mu_;
  std::vector<std::shared_ptr<Client>> clients_;
  uint32_t next_client_id_ = 1;

  mutable std::shared_mutex models_mu_;
  std::map<std::string, ModelEntry, std::less<>> models_;
  // Counts outlive a model's removal (a reloaded model keeps counting where it was).
  std::map<std::string, std::shared_ptr<Counts>, std::less<>> counts_;

  std::atomic<uint64_t> connections_{0}, refused_{0}, dropped_{0}, unknown_model_{0};
};

}  // namespace mlos::ipc
