// The IPC door's server side; see ipc_host.h.
#include "ipc/ipc_host.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>

#include "ipc/ipc_wire.h"
#include "ipc/ring.h"

namespace mlos::ipc {

namespace {

// How often a client thread with nothing to do looks at its socket and at shutdown.
constexpr int64_t kPollNs = 50'000'000;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string Errno(const char* call) { return std::string(call) + " failed: " + std::strerror(errno); }

// A sealed memfd of `bytes`: the client cannot grow or shrink it, so the server's mapping stays
// valid whatever the client does with its descriptor (no SIGBUS).
int SealedMemfd(uint64_t bytes, std::string* error) {
  int fd = static_cast<int>(syscall(SYS_memfd_create, "mlos-ipc", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd < 0) {
    *error = Errno("memfd_create");
    return -1;
  }
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    *error = Errno("sizing or sealing the segment");
    close(fd);
    return -1;
  }
  return fd;
}

bool SocketClosed(int fd) {
  struct pollfd p {fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) return true;
  if (p.revents & POLLIN) {
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  return false;
}

}  // namespace

Segment::~Segment() {
  if (base != nullptr) munmap(base, bytes);
}

struct IpcHost::Client {
  uint32_t id = 0;
  int fd = -1;
  std::thread thread;
  std::atomic<bool> finished{false};
  std::atomic<bool> dropped{false};
  std::shared_ptr<Segment> segment;
  mlos_ipc_segment* header = nullptr;
  std::unique_ptr<SpscRing> requests, responses;
  ~Client() {
    if (fd >= 0) close(fd);
  }
};

std::unique_ptr<IpcHost> IpcHost::Start(const IpcHostOptions& options, std::string* error) {
  std::unique_ptr<IpcHost> host(new IpcHost(options));
  const std::string& path = options.socket_path;
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    *error = "the IPC socket path is empty or longer than " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes: '" + path + "'";
    return nullptr;
  }
  // The directory: made private when we create it.
  const size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    const std::string dir = path.substr(0, slash);
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      *error = Errno(("mkdir " + dir).c_str());
      return nullptr;
    }
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // A socket file already there: another server listening is an error; a dead one's is replaced.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      *error = "'" + path + "' exists and is not a socket";
      return nullptr;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live = probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) close(probe);
    if (live) {
      *error = "another server is listening on '" + path + "' (choose another --ipc-name)";
      return nullptr;
    }
    unlink(path.c_str());
  }
  host->listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (host->listen_fd_ < 0) {
    *error = Errno("socket");
    return nullptr;
  }
  const mode_t old = umask(0177);  // the socket is created 0600
  const int bound = bind(host->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old);
  if (bound != 0 || listen(host->listen_fd_, 128) != 0) {
    *error = Errno(("listening on " + path).c_str());
    return nullptr;
  }
  host->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (host->stop_fd_ < 0) {
    *error = Errno("eventfd");
    return nullptr;
  }
  std::random_device rd;
  host->instance_ = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(NowNs());
  if (host->instance_ == 0) host->instance_ = 1;
  host->listener_ = std::thread([h = host.get()] { h->Listen(); });
  return host;
}

IpcHost::~IpcHost() {
  Stop();
  if (listen_fd_ >= 0) close(listen_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
}

void IpcHost::Stop() {
  if (stopping_.exchange(true)) {
    if (listener_.joinable()) listener_.join();
    return;
  }
  if (stop_fd_ >= 0) {
    uint64_t one = 1;
    ssize_t ignored = write(stop_fd_, &one, sizeof one);
    (void)ignored;
  }
  if (listener_.joinable()) listener_.join();
  Reap(true);
  if (listen_fd_ >= 0) {
    struct stat st;
    if (lstat(options_.socket_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(options_.socket_path.c_str());
  }
}

void IpcHost::Listen() {
  while (!stopping_.load()) {
    struct pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    int n = poll(fds, 2, 200);
    if (n < 0 && errno != EINTR) break;
    Reap(false);
    if (stopping_.load()) break;
    if (n <= 0 || !(fds[0].revents & POLLIN)) continue;
    for (;;) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) break;
      connections_++;
      auto client = std::make_shared<Client>();
      client->fd = fd;
      std::lock_guard<std::mutex> lock(clients_mu_);
      client->id = next_client_id_++;
      clients_.push_back(client);
      client->thread = std::thread([this, client] { Serve(client); });
    }
  }
}

// Joins the threads of clients that are done (all: after waking every one of them).
void IpcHost::Reap(bool all) {
  std::vector<std::shared_ptr<Client>> done;
  {
    std::lock_guard<std::mutex> lock(clients_mu_);
    for (auto it = clients_.begin(); it != clients_.end();) {
      if (all) {
        (*it)->dropped.store(true);
        if ((*it)->requests) (*it)->requests->WakeConsumer();
        shutdown((*it)->fd, SHUT_RDWR);
      }
      if (all || (*it)->finished.load()) {
        done.push_back(*it);
        it = clients_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : done) {
    if (c->thread.joinable()) c->thread.join();
  }
}

bool IpcHost::Handshake(Client& c) {
  struct timeval tv {2, 0};
  setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  mlos_ipc_welcome welcome{};
  welcome.magic = MLOS_IPC_HELLO_MAGIC;
  welcome.version = MLOS_IPC_VERSION;
  auto refuse = [&](const std::string& why) {
    refused_++;
    welcome.status = 1;
    CopyName(welcome.message, sizeof welcome.message, why.c_str());
    SendWithFd(c.fd, &welcome, sizeof welcome, -1);
    return false;
  };
  struct ucred cred {};
  socklen_t len = sizeof cred;
  if (getsockopt(c.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return refuse("IPC_PERMISSION: the peer's credentials could not be read");
  if (cred.uid != geteuid() && cred.uid != 0) {
    return refuse("IPC_PERMISSION: uid " + std::to_string(cred.uid) + " is not the server's user (" + std::to_string(geteuid()) + ")");
  }
  mlos_ipc_hello hello{};
  int stray = -1;
  if (!ReceiveWithFd(c.fd, &hello, sizeof hello, &stray)) {
    refused_++;
    return false;  // gone, or silent past the timeout
  }
  if (stray >= 0) close(stray);
  if (hello.magic != MLOS_IPC_HELLO_MAGIC) return refuse("IPC_BAD_HELLO: not an mlos IPC client (bad magic)");
  if (hello.version != MLOS_IPC_VERSION) {
    return refuse("IPC_VERSION: the client speaks version " + std::to_string(hello.version) + ", the server " + std::to_string(MLOS_IPC_VERSION));
  }
  {
    std::lock_guard<std::mutex> lock(clients_mu_);
    uint32_t live = 0;
    for (auto& other : clients_) live += other->segment != nullptr && !other->finished.load() ? 1 : 0;
    if (live >= options_.max_clients) return refuse("IPC_TOO_MANY_CLIENTS: the server already has " + std::to_string(live) + " IPC clients");
  }
  uint64_t arena = hello.arena_bytes == 0 ? (64ull << 20) : hello.arena_bytes;
  if (arena > options_.max_arena_bytes) arena = options_.max_arena_bytes;
  const SegmentLayout layout = LayoutFor(arena);
  std::string error;
  int memfd = SealedMemfd(layout.total, &error);
  if (memfd < 0) return refuse("IPC_NO_MEMORY: " + error);
  void* base = mmap(nullptr, layout.total, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (base == MAP_FAILED) {
    close(memfd);
    return refuse("IPC_NO_MEMORY: " + Errno("mmap"));
  }
  auto seg = std::make_shared<Segment>();
  seg->base = static_cast<uint8_t*>(base);
  seg->bytes = layout.total;
  seg->arena = seg->base + layout.arena_offset;
  seg->arena_bytes = layout.arena_bytes;
  auto* h = new (base) mlos_ipc_segment();
  h->magic = MLOS_IPC_SEGMENT_MAGIC;
  h->version = MLOS_IPC_VERSION;
  h->client_id = c.id;
  h->segment_bytes = layout.total;
  h->request_ring_offset = layout.request_ring_offset;
  h->request_ring_bytes = layout.request_ring_bytes;
  h->response_ring_offset = layout.response_ring_offset;
  h->response_ring_bytes = layout.response_ring_bytes;
  h->arena_offset = layout.arena_offset;
  h->arena_bytes = layout.arena_bytes;
  h->server_instance = instance_;
  __atomic_store_n(&h->state, MLOS_IPC_STATE_OPEN, __ATOMIC_RELEASE);
  auto requests = SpscRing::Create(seg->base + layout.request_ring_offset, layout.request_ring_bytes, kRingSlots, MLOS_IPC_RING_SLOT_BYTES);
  auto responses = SpscRing::Create(seg->base + layout.response_ring_offset, layout.response_ring_bytes, kRingSlots, MLOS_IPC_RING_SLOT_BYTES);
  {
    std::lock_guard<std::mutex> lock(clients_mu_);  // Reap reads them
    c.requests = std::move(requests);
    c.responses = std::move(responses);
    c.header = h;
    c.segment = seg;  // counted from here
  }
  welcome.segment_bytes = layout.total;
  const bool sent = SendWithFd(c.fd, &welcome, sizeof welcome, memfd);
  close(memfd);  // the server keeps its mapping, the client gets its own descriptor
  return sent;
}

void IpcHost::Drop(Client& c, const std::string& why) {
  if (c.dropped.exchange(true)) return;
  dropped_++;
  if (c.header != nullptr) __atomic_store_n(&c.header->state, MLOS_IPC_STATE_CLOSED, __ATOMIC_RELEASE);
  if (c.responses) c.responses->WakeConsumer();
  shutdown(c.fd, SHUT_RDWR);
  (void)why;
}

bool IpcHost::PushResponse(Client& c, const mlos_ipc_response& response) {
  // Only the used part of the response travels.
  const uint32_t length = static_cast<uint32_t>(offsetof(mlos_ipc_response, outputs) + sizeof(mlos_ipc_tensor) * response.n_outputs);
  if (c.responses->TryPush(&response, length)) return true;
  // The client is not reading: wait for room, up to the lease, watching its socket and shutdown.
  const int64_t deadline = NowNs() + options_.lease_ns;
  int64_t nap = 20'000;
  while (!c.dropped.load() && !stopping_.load()) {
    if (c.responses->TryPush(&response, length)) return true;
    if (NowNs() >= deadline) {
      Drop(c, "did not read its responses within the lease");
      return false;
    }
    if (SocketClosed(c.fd)) return false;
    struct timespec ts {0, static_cast<long>(nap)};
    nanosleep(&ts, nullptr);
    nap = std::min<int64_t>(nap * 2, 1'000'000);
  }
  return false;
}

void IpcHost::Serve(const std::shared_ptr<Client>& client) {
  Client& c = *client;
  if (Handshake(c)) {
    mlos_ipc_request request;
    mlos_ipc_response response;
    int64_t last_check = NowNs();
    while (!c.dropped.load() && !stopping_.load()) {
      uint32_t length = 0;
      const SpscRing::PopResult got = c.requests->TryPop(&request, sizeof request, &length);
      if (got == SpscRing::PopResult::kEmpty) {
        const int64_t now = NowNs();
        if (now - last_check >= kPollNs) {
          last_check = now;
          if (SocketClosed(c.fd)) break;
        }
        c.requests->Wait(kPollNs);
        continue;
      }
      if (got != SpscRing::PopResult::kOk) {
        Drop(c, "its request ring is corrupt");
        break;
      }
      std::memset(&response, 0, offsetof(mlos_ipc_response, outputs));
      if (length < offsetof(mlos_ipc_request, inputs)) {
        // Too short to hold the fields a response needs: nothing sensible can be answered.
        if (length >= sizeof(uint64_t) * 2) {
          uint64_t id;
          std::memcpy(&id, reinterpret_cast<uint8_t*>(&request) + 8, sizeof id);
          SetError(&response, id, "IPC_BAD_REQUEST", "the request message is " + std::to_string(length) + " bytes, shorter than its fixed fields");
          if (!PushResponse(c, response)) break;
        }
        continue;
      }
      // The unused tail of a short message: zeros, so that no stale descriptor is read.
      if (length < sizeof request) std::memset(reinterpret_cast<uint8_t*>(&request) + length, 0, sizeof request - length);
      response.id = request.id;
      const char* code = "";
      std::string invalid = ValidateRequest(request, c.segment->arena_bytes, &code);
      if (invalid.empty() && length < offsetof(mlos_ipc_request, inputs) + sizeof(mlos_ipc_tensor) * request.n_inputs) {
        code = "IPC_BAD_REQUEST";
        invalid = "the request message is " + std::to_string(length) + " bytes, too short for its " + std::to_string(request.n_inputs) + " inputs";
      }
      if (!invalid.empty()) {
        SetError(&response, request.id, code, invalid);
      } else {
        ModelEntry entry;
        {
          std::shared_lock<std::shared_mutex> lock(models_mu_);
          auto it = models_.find(std::string_view(request.model));
          if (it != models_.end()) entry = it->second;
        }
        if (!entry.model) {
          unknown_model_++;
          SetError(&response, request.id, "IPC_MODEL_NOT_FOUND", "model '" + std::string(request.model) + "' is not served over IPC (not loaded, or being unloaded)");
        } else {
          entry.model->Run(request, c.segment, &response);
          response.id = request.id;
          entry.counts->requests.fetch_add(1, std::memory_order_relaxed);
          entry.counts->compute_ns.fetch_add(response.compute_ns, std::memory_order_relaxed);
          if (response.status != 0) entry.counts->failures.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (!PushResponse(c, response)) break;
    }
  }
  if (c.header != nullptr) __atomic_store_n(&c.header->state, MLOS_IPC_STATE_CLOSED, __ATOMIC_RELEASE);
  if (c.responses) c.responses->WakeConsumer();
  shutdown(c.fd, SHUT_RDWR);
  {
    // The rings and the header point into the segment: they go with it, under the lock that
    // Reap and Stats take, so that nothing touches them once it may be unmapped.
    std::lock_guard<std::mutex> lock(clients_mu_);
    c.requests.reset();
    c.responses.reset();
    c.header = nullptr;
    c.segment.reset();  // freed once no run or view holds it
  }
  c.finished.store(true);
}

void IpcHost::SetModel(const std::string& name, std::shared_ptr<IpcModel> model) {
  std::unique_lock<std::shared_mutex> lock(models_mu_);
  auto& counts = counts_[name];
  if (!counts) counts = std::make_shared<Counts>();
  models_[name] = ModelEntry{std::move(model), counts};
}

void IpcHost::RemoveModel(const std::string& name) {
  std::unique_lock<std::shared_mutex> lock(models_mu_);
  auto it = models_.find(name);
  if (it != models_.end()) models_.erase(it);
}

IpcHostStats IpcHost::Stats() const {
  IpcHostStats s;
  {
    std::lock_guard<std::mutex> lock(clients_mu_);
    for (auto& c : clients_) {
      if (c->segment && !c->finished.load()) {
        s.clients++;
        s.segment_bytes += c->segment->bytes;
      }
    }
  }
  s.connections = connections_.load();
  s.refused = refused_.load();
  s.dropped = dropped_.load();
  s.unknown_model = unknown_model_.load();
  return s;
}

std::map<std::string, IpcModelCounts> IpcHost::ModelCounts() const {
  std::shared_lock<std::shared_mutex> lock(models_mu_);
  std::map<std::string, IpcModelCounts> out;
  for (auto& [name, c] : counts_) out[name] = IpcModelCounts{c->requests.load(), c->failures.load(), c->compute_ns.load()};
  return out;
}

}  // namespace mlos::ipc
