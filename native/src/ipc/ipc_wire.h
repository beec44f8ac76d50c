// What both sides of the IPC door share beyond the public header (include/mlos_ipc.h): the
// segment layout, the socket path, descriptor passing and request checks. Plain C++17.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "mlos_ipc.h"

namespace mlos::ipc {

static_assert(sizeof(mlos_ipc_segment) <= MLOS_IPC_SEGMENT_HEADER_BYTES, "the segment header outgrew its bytes");
static_assert(sizeof(mlos_ipc_request) + 4 <= MLOS_IPC_RING_SLOT_BYTES, "a request must fit a ring slot");
static_assert(sizeof(mlos_ipc_response) + 4 <= MLOS_IPC_RING_SLOT_BYTES, "a response must fit a ring slot");
// The layout is part of the wire format (clients in other languages, src/ipc/wire.ts): pinned.
static_assert(sizeof(mlos_ipc_tensor) == 152, "mlos_ipc_tensor's layout changed");
static_assert(offsetof(mlos_ipc_request, model) == 16 && offsetof(mlos_ipc_request, out_offset) == 144 &&
              offsetof(mlos_ipc_request, n_outputs) == 160 && offsetof(mlos_ipc_request, outputs) == 168 &&
              offsetof(mlos_ipc_request, inputs) == 680 && sizeof(mlos_ipc_request) == 1896, "mlos_ipc_request's layout changed");
static_assert(offsetof(mlos_ipc_response, compute_ns) == 16 && offsetof(mlos_ipc_response, code) == 32 &&
              offsetof(mlos_ipc_response, message) == 64 && offsetof(mlos_ipc_response, outputs) == 320 &&
              sizeof(mlos_ipc_response) == 1536, "mlos_ipc_response's layout changed");

// Slots per ring (a power of two): enough for a client that pipelines.
constexpr uint32_t kRingSlots = 64;

// Where each part of a segment with an arena of `arena_bytes` lies.
struct SegmentLayout {
  uint64_t request_ring_offset, request_ring_bytes;
  uint64_t response_ring_offset, response_ring_bytes;
  uint64_t arena_offset, arena_bytes;
  uint64_t total;
};
SegmentLayout LayoutFor(uint64_t arena_bytes);

// The socket path for a server name (see mlos_ipc_socket_path); "" when it does not fit.
std::string SocketPathFor(const std::string& name);

// Sends `bytes` and, when fd >= 0, the descriptor with them (SCM_RIGHTS). False on failure.
bool SendWithFd(int socket, const void* bytes, size_t length, int fd);
// Receives exactly `length` bytes and the descriptor that came with them (-1 if none). False on
// failure or end of stream.
bool ReceiveWithFd(int socket, void* bytes, size_t length, int* fd);

// Copies a NUL-terminated string of at most `capacity` - 1 bytes into a fixed field.
void CopyName(char* field, size_t capacity, const char* text);

// Checks a request that came off a ring against an arena of `arena_bytes`: its kind, counts,
// names (NUL-terminated), dtypes, ranks, shapes, byte lengths and ranges (overflow-safe). Empty
// when it is valid; else one line that says what is wrong, and *code the stable error code.
std::string ValidateRequest(const mlos_ipc_request& r, uint64_t arena_bytes, const char** code);

// Fills an error response for request `id`.
void SetError(mlos_ipc_response* out, uint64_t id, const char* code, const std::string& message);

}  // namespace mlos::ipc
