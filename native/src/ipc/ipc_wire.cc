// The IPC door's shared pieces; see ipc_wire.h.
#include "ipc/ipc_wire.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/dtype.h"
#include "ipc/ring.h"

namespace mlos::ipc {

namespace {

uint64_t AlignUp(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// Whether a fixed-size name field holds a NUL within its bytes (and is not empty when required).
bool Terminated(const char* field, size_t capacity) { return std::memchr(field, 0, capacity) != nullptr; }

}  // namespace

SegmentLayout LayoutFor(uint64_t arena_bytes) {
  SegmentLayout l{};
  const uint64_t ring = AlignUp(SpscRing::BytesFor(kRingSlots, MLOS_IPC_RING_SLOT_BYTES), 4096);
  l.request_ring_offset = MLOS_IPC_SEGMENT_HEADER_BYTES;
  l.request_ring_bytes = ring;
  l.response_ring_offset = l.request_ring_offset + ring;
  l.response_ring_bytes = ring;
  l.arena_offset = l.response_ring_offset + ring;
  l.arena_bytes = AlignUp(arena_bytes, 4096);
  l.total = l.arena_offset + l.arena_bytes;
  return l;
}

std::string SocketPathFor(const std::string& name) {
  std::string path;
  if (name.find('/') != std::string::npos) {
    path = name;
  } else {
    const char* runtime = std::getenv("XDG_RUNTIME_DIR");
    if (runtime != nullptr && runtime[0] != '\0') {
      path = std::string(runtime) + "/mlos/" + name + ".sock";
    } else {
      path = "/tmp/mlos-" + std::to_string(static_cast<unsigned long>(geteuid())) + "/" + name + ".sock";
    }
  }
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) return "";
  return path;
}

bool SendWithFd(int socket, const void* bytes, size_t length, int fd) {
  struct iovec iov;
  iov.iov_base = const_cast<void*>(bytes);
  iov.iov_len = length;
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(socket, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(length);
}

bool ReceiveWithFd(int socket, void* bytes, size_t length, int* fd) {
  *fd = -1;
  size_t got = 0;
  while (got < length) {
    struct iovec iov;
    iov.iov_base = static_cast<char*>(bytes) + got;
    iov.iov_len = length - got;
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
        int received;
        std::memcpy(&received, CMSG_DATA(c), sizeof(int));
        if (*fd < 0) {
          *fd = received;
        } else {
          close(received);  // only one is expected
        }
      }
    }
    got += static_cast<size_t>(n);
  }
  return true;
}

void CopyName(char* field, size_t capacity, const char* text) {
  size_t n = std::strlen(text);
  if (n >= capacity) n = capacity - 1;
  std::memcpy(field, text, n);
  std::memset(field + n, 0, capacity - n);
}

std::string ValidateRequest(const mlos_ipc_request& r, uint64_t arena_bytes, const char** code) {
  *code = "IPC_BAD_REQUEST";
  if (r.kind != MLOS_IPC_INFER) return "unknown request kind " + std::to_string(r.kind);
  if (!Terminated(r.model, sizeof r.model) || r.model[0] == '\0') return "the model name is empty or not NUL-terminated";
  if (r.n_inputs == 0 || r.n_inputs > MLOS_IPC_MAX_TENSORS) return "n_inputs is " + std::to_string(r.n_inputs) + ", not 1.." + std::to_string(MLOS_IPC_MAX_TENSORS);
  if (r.n_outputs > MLOS_IPC_MAX_TENSORS) return "n_outputs is " + std::to_string(r.n_outputs) + ", more than " + std::to_string(MLOS_IPC_MAX_TENSORS);
  for (uint32_t i = 0; i < r.n_outputs; ++i) {
    if (!Terminated(r.outputs[i], sizeof r.outputs[i]) || r.outputs[i][0] == '\0') return "output name " + std::to_string(i) + " is empty or not NUL-terminated";
  }
  *code = "IPC_OUT_OF_RANGE";
  if (r.out_offset > arena_bytes || r.out_bytes > arena_bytes - r.out_offset) {
    return "the output window [" + std::to_string(r.out_offset) + ", +" + std::to_string(r.out_bytes) + ") is outside the arena of " + std::to_string(arena_bytes) + " bytes";
  }
  for (uint32_t i = 0; i < r.n_inputs; ++i) {
    const mlos_ipc_tensor& t = r.inputs[i];
    const std::string where = "input " + std::to_string(i);
    *code = "IPC_BAD_TENSOR";
    if (!Terminated(t.name, sizeof t.name) || t.name[0] == '\0') return where + ": the name is empty or not NUL-terminated";
    const std::string named = "input '" + std::string(t.name) + "'";
    const DTypeInfo* d = DTypeByOnnx(static_cast<int32_t>(t.dtype));
    if (d == nullptr || d->bits == 0) return named + ": element type " + std::to_string(t.dtype) + " is not a numeric ONNX type";
    if (t.rank > MLOS_IPC_MAX_RANK) return named + ": rank " + std::to_string(t.rank) + " is more than " + std::to_string(MLOS_IPC_MAX_RANK);
    uint64_t elements = 1;
    for (uint32_t k = 0; k < t.rank; ++k) {
      if (t.shape[k] < 0) return named + ": dimension " + std::to_string(k) + " is negative";
      const uint64_t dim = static_cast<uint64_t>(t.shape[k]);
      if (dim != 0 && elements > UINT64_MAX / 64 / dim) return named + ": the shape's element count overflows";
      elements *= dim;
    }
    const uint64_t bytes = DTypeBytes(*d, elements);
    if (t.bytes != bytes) return named + ": " + std::to_string(t.bytes) + " bytes given, its " + d->name + " shape needs " + std::to_string(bytes);
    *code = "IPC_OUT_OF_RANGE";
    if (t.offset > arena_bytes || t.bytes > arena_bytes - t.offset) {
      return named + ": [" + std::to_string(t.offset) + ", +" + std::to_string(t.bytes) + ") is outside the arena of " + std::to_string(arena_bytes) + " bytes";
    }
    for (uint32_t j = 0; j < i; ++j) {
      *code = "IPC_BAD_REQUEST";
      if (std::strcmp(r.inputs[j].name, t.name) == 0) return named + " is given twice";
    }
  }
  *code = "";
  return "";
}

void SetError(mlos_ipc_response* out, uint64_t id, const char* code, const std::string& message) {
  out->id = id;
  out->status = 1;
  out->n_outputs = 0;
  out->compute_ns = 0;
  CopyName(out->code, sizeof out->code, code);
  CopyName(out->message, sizeof out->message, message.c_str());
}

}  // namespace mlos::ipc
