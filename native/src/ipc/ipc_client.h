// IpcConnection: the client side of the IPC door (include/mlos_ipc.h), in C++; the C API
// (libmlos_ipc_client, ipc_client.cc) and the Node client's binding are thin layers over it.
// Plain C++17.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "ipc/ring.h"
#include "mlos_ipc.h"

namespace mlos::ipc {

class IpcConnection {
 public:
  // Connects to the server named `name` (see mlos_ipc_socket_path) asking for `arena_bytes`.
  // nullptr and *error on failure.
  static std::shared_ptr<IpcConnection> Connect(const std::string& name, uint64_t arena_bytes, std::string* error);
  ~IpcConnection();  // unmaps the segment (so: only when nothing uses the arena any more)

  uint8_t* arena() const { return arena_; }
  // The whole segment (header, rings, arena), for inspection tools and fault tests.
  uint8_t* segment() const { return base_; }
  uint64_t segment_bytes() const { return bytes_; }
  uint64_t arena_bytes() const { return arena_bytes_; }
  uint64_t server_instance() const { return instance_; }
  uint32_t client_id() const { return client_id_; }

  // Pushes one request (only its used part): false when the ring is full or the connection is closed.
  bool Send(const mlos_ipc_request& request);
  // 1: a response was popped into `out`; 0: none within `timeout_ns` (spinning `spin_ns` first);
  // -1: the connection failed (*error says why).
  int Receive(mlos_ipc_response* out, int64_t timeout_ns, int64_t spin_ns, std::string* error);
  // Whether the server is still there.
  bool Connected();
  // Ends the connection (the server frees its side; a Receive waiting returns -1); the socket is
  // closed and the mapping unmapped at destruction.
  void Disconnect();

 private:
  IpcConnection() = default;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  uint64_t bytes_ = 0;
  uint8_t* arena_ = nullptr;
  uint64_t arena_bytes_ = 0;
  uint64_t instance_ = 0;
  uint32_t client_id_ = 0;
  mlos_ipc_segment* header_ = nullptr;
  std::unique_ptr<SpscRing> requests_, responses_;
  std::atomic<bool> failed_{false};
};

}  // namespace mlos::ipc
