// The IPC door's client side: IpcConnection and the C API of include/mlos_ipc.h.
#include "ipc/ipc_client.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>

#include "ipc/ipc_wire.h"

namespace mlos::ipc {

namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr int64_t kSliceNs = 50'000'000;  // how often a waiting client looks at the connection

}  // namespace

std::shared_ptr<IpcConnection> IpcConnection::Connect(const std::string& name, uint64_t arena_bytes, std::string* error) {
  const std::string path = SocketPathFor(name);
  if (path.empty()) {
    *error = "IPC_BAD_NAME: the socket path for '" + name + "' is too long";
    return nullptr;
  }
  std::shared_ptr<IpcConnection> c(new IpcConnection());
  c->fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd_ < 0) {
    *error = std::string("IPC_CONNECT: socket failed: ") + std::strerror(errno);
    return nullptr;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (connect(c->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *error = "IPC_CONNECT: no mlos server at " + path + " (" + std::strerror(errno) + ")";
    return nullptr;
  }
  struct timeval tv {5, 0};
  setsockopt(c->fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  mlos_ipc_hello hello{};
  hello.magic = MLOS_IPC_HELLO_MAGIC;
  hello.version = MLOS_IPC_VERSION;
  hello.arena_bytes = arena_bytes;
  // A server that refuses (credentials, too many clients) may answer and close before reading the
  // hello: its answer is read whatever became of the hello.
  const bool said_hello = SendWithFd(c->fd_, &hello, sizeof hello, -1);
  mlos_ipc_welcome welcome{};
  int memfd = -1;
  if (!ReceiveWithFd(c->fd_, &welcome, sizeof welcome, &memfd)) {
    *error = "IPC_CONNECT: the server at " + path + (said_hello ? " did not answer the handshake" : " closed the connection before the handshake");
    return nullptr;
  }
  welcome.message[sizeof welcome.message - 1] = '\0';
  if (welcome.magic != MLOS_IPC_HELLO_MAGIC || welcome.status != 0 || memfd < 0) {
    if (memfd >= 0) close(memfd);
    *error = welcome.magic != MLOS_IPC_HELLO_MAGIC ? "IPC_CONNECT: " + path + " is not an mlos IPC server" : std::string(welcome.message);
    if (error->empty()) *error = "IPC_CONNECT: the server refused the connection";
    return nullptr;
  }
  void* base = mmap(nullptr, welcome.segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  close(memfd);
  if (base == MAP_FAILED) {
    *error = std::string("IPC_CONNECT: mapping the segment failed: ") + std::strerror(errno);
    return nullptr;
  }
  c->base_ = static_cast<uint8_t*>(base);
  c->bytes_ = welcome.segment_bytes;
  auto* h = static_cast<mlos_ipc_segment*>(base);
  const mlos_ipc_segment seen = *h;
  auto within = [&](uint64_t off, uint64_t n) { return off <= c->bytes_ && n <= c->bytes_ - off; };
  if (seen.magic != MLOS_IPC_SEGMENT_MAGIC || seen.version != MLOS_IPC_VERSION || seen.segment_bytes != c->bytes_ ||
      !within(seen.request_ring_offset, seen.request_ring_bytes) || !within(seen.response_ring_offset, seen.response_ring_bytes) ||
      !within(seen.arena_offset, seen.arena_bytes)) {
    *error = "IPC_CONNECT: the server's segment is not one this client understands";
    return nullptr;
  }
  const char* why = nullptr;
  c->requests_ = SpscRing::Attach(c->base_ + seen.request_ring_offset, seen.request_ring_bytes, &why);
  if (c->requests_) c->responses_ = SpscRing::Attach(c->base_ + seen.response_ring_offset, seen.response_ring_bytes, &why);
  if (!c->requests_ || !c->responses_) {
    *error = std::string("IPC_CONNECT: ") + (why ? why : "bad ring");
    return nullptr;
  }
  c->header_ = h;
  c->arena_ = c->base_ + seen.arena_offset;
  c->arena_bytes_ = seen.arena_bytes;
  c->instance_ = seen.server_instance;
  c->client_id_ = seen.client_id;
  return c;
}

IpcConnection::~IpcConnection() {
  if (fd_ >= 0) close(fd_);
  if (base_ != nullptr) munmap(base_, bytes_);
}

void IpcConnection::Disconnect() {
  // shutdown, not close: a thread waiting in Receive may still look at the descriptor.
  if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
  failed_ = true;
}

bool IpcConnection::Connected() {
  if (fd_ < 0 || failed_.load()) return false;
  if (__atomic_load_n(&header_->state, __ATOMIC_ACQUIRE) != MLOS_IPC_STATE_OPEN) return false;
  struct pollfd p {fd_, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL | POLLIN))) return false;
  return true;
}

bool IpcConnection::Send(const mlos_ipc_request& request) {
  if (fd_ < 0 || failed_.load()) return false;
  const uint32_t n = request.n_inputs <= MLOS_IPC_MAX_TENSORS ? request.n_inputs : MLOS_IPC_MAX_TENSORS;
  const uint32_t length = static_cast<uint32_t>(offsetof(mlos_ipc_request, inputs) + sizeof(mlos_ipc_tensor) * n);
  return requests_->TryPush(&request, length);
}

int IpcConnection::Receive(mlos_ipc_response* out, int64_t timeout_ns, int64_t spin_ns, std::string* error) {
  const int64_t start = NowNs();
  const int64_t deadline = timeout_ns < 0 ? INT64_MAX : start + timeout_ns;
  for (;;) {
    uint32_t length = 0;
    const SpscRing::PopResult got = responses_->TryPop(out, sizeof *out, &length);
    if (got == SpscRing::PopResult::kOk) {
      if (length < offsetof(mlos_ipc_response, outputs) || out->n_outputs > MLOS_IPC_MAX_TENSORS ||
          length < offsetof(mlos_ipc_response, outputs) + sizeof(mlos_ipc_tensor) * out->n_outputs) {
        failed_ = true;
        *error = "IPC_CORRUPT: the server sent a malformed response";
        return -1;
      }
      out->code[sizeof out->code - 1] = '\0';
      out->message[sizeof out->message - 1] = '\0';
      return 1;
    }
    if (got != SpscRing::PopResult::kEmpty) {
      failed_ = true;
      *error = "IPC_CORRUPT: the response ring is corrupt";
      return -1;
    }
    const int64_t now = NowNs();
    if (now - start < spin_ns) continue;
    if (!Connected()) {
      // A response pushed just before the server closed is still delivered.
      if (responses_->Pending() != 0) continue;
      failed_ = true;
      *error = "IPC_DISCONNECTED: the server closed the connection (restarted, stopped, or dropped this client)";
      return -1;
    }
    if (now >= deadline) return 0;
    responses_->Wait(std::min(kSliceNs, deadline - now), 0);
  }
}

}  // namespace mlos::ipc

// ---- the C API -----------------------------------------------------------------------------------

struct mlos_ipc_client {
  std::shared_ptr<mlos::ipc::IpcConnection> connection;
};

namespace {
void SetErrorText(char* out, size_t capacity, const std::string& text) {
  if (out == nullptr || capacity == 0) return;
  size_t n = text.size() < capacity - 1 ? text.size() : capacity - 1;
  std::memcpy(out, text.data(), n);
  out[n] = '\0';
}
}  // namespace

extern "C" {

int mlos_ipc_socket_path(const char* name, char* out, size_t capacity) {
  const std::string path = mlos::ipc::SocketPathFor(name ? name : "mlos");
  if (path.empty() || path.size() + 1 > capacity) return -1;
  std::memcpy(out, path.c_str(), path.size() + 1);
  return static_cast<int>(path.size());
}

mlos_ipc_client* mlos_ipc_connect(const char* name, uint64_t arena_bytes, char* error, size_t error_capacity) {
  std::string why;
  auto c = mlos::ipc::IpcConnection::Connect(name ? name : "mlos", arena_bytes, &why);
  if (!c) {
    SetErrorText(error, error_capacity, why);
    return nullptr;
  }
  return new (std::nothrow) mlos_ipc_client{std::move(c)};
}

void* mlos_ipc_arena(mlos_ipc_client* client) { return client->connection->arena(); }
uint64_t mlos_ipc_arena_bytes(mlos_ipc_client* client) { return client->connection->arena_bytes(); }
uint64_t mlos_ipc_server_instance(mlos_ipc_client* client) { return client->connection->server_instance(); }
int mlos_ipc_connected(mlos_ipc_client* client) { return client->connection->Connected() ? 1 : 0; }

int mlos_ipc_send(mlos_ipc_client* client, const struct mlos_ipc_request* request) {
  return client->connection->Send(*request) ? 0 : -1;
}

int mlos_ipc_receive(mlos_ipc_client* client, struct mlos_ipc_response* response, int timeout_ms, char* error, size_t error_capacity) {
  std::string why;
  const int r = client->connection->Receive(response, timeout_ms < 0 ? -1 : static_cast<int64_t>(timeout_ms) * 1'000'000, 20'000, &why);
  if (r < 0) SetErrorText(error, error_capacity, why);
  return r;
}

int mlos_ipc_infer(mlos_ipc_client* client, const struct mlos_ipc_request* request, struct mlos_ipc_response* response, int timeout_ms,
                   char* error, size_t error_capacity) {
  if (!client->connection->Send(*request)) {
    SetErrorText(error, error_capacity, client->connection->Connected() ? "IPC_BUSY: the request ring is full" : "IPC_DISCONNECTED: the server is gone");
    return -1;
  }
  for (;;) {
    const int r = mlos_ipc_receive(client, response, timeout_ms, error, error_capacity);
    if (r == 0) {
      SetErrorText(error, error_capacity, "IPC_TIMEOUT: no response within " + std::to_string(timeout_ms) + " ms");
      return -1;
    }
    if (r < 0) return -1;
    if (response->id == request->id) return 0;  // an older request's answer otherwise: skipped
  }
}

void mlos_ipc_close(mlos_ipc_client* client) { delete client; }

}  // extern "C"
