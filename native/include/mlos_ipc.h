/*
 * mlos_ipc.h: the shared-memory IPC door of MLOS Core, for clients in any language.
 *
 * A client on the same machine as `axon serve --ipc-name NAME` connects to the server's Unix
 * socket (mlos_ipc_socket_path), says hello, and receives one file descriptor: a sealed memfd
 * segment that only it and the server share. The segment holds
 *   - a header (struct mlos_ipc_segment),
 *   - a request ring (the client produces, the server consumes),
 *   - a response ring (the server produces, the client consumes),
 *   - an arena: the client's own tensor memory. It writes inputs there and names them by offset;
 *     the server runs the model on them in place and writes the outputs into a window of the
 *     arena that the request names.
 * The socket stays open for as long as the client is connected: its end tells the server the
 * client is gone (its segment is then freed), and tells the client the server is gone.
 *
 * The rings are single-producer single-consumer rings of fixed-size slots (see the layout below);
 * each slot holds a 4-byte length and then one message (struct mlos_ipc_request or
 * struct mlos_ipc_response). Both sides wake a sleeping peer with a futex on the ring's wake word.
 *
 * This header is two things: the wire format (every struct below is the exact layout in the
 * shared memory, little-endian, naturally aligned), and the C API of libmlos_ipc_client, a small
 * library that implements the client side (see examples/ipc-client.c). A client in another
 * language may link that library, or speak the format itself.
 *
 * Everything a client writes is checked by the server before use (offsets and lengths against the
 * arena, dtypes and shapes against the model); a bad request gets an error response, a corrupt
 * ring gets the client disconnected. A client that never reads its responses is disconnected
 * after the server's lease timeout, without stalling anyone else.
 */
#ifndef MLOS_IPC_H
#define MLOS_IPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the wire format ------------------------------------------------------------------------ */

#define MLOS_IPC_VERSION 1u
#define MLOS_IPC_HELLO_MAGIC 0x4f4c4c4548534f4cull   /* "LOSHELLO" read as little-endian */
#define MLOS_IPC_SEGMENT_MAGIC 0x31435049534f4c4dull /* "MLOSIPC1" read as little-endian */
#define MLOS_IPC_MAX_TENSORS 8
#define MLOS_IPC_MAX_RANK 8
#define MLOS_IPC_NAME_BYTES 64
#define MLOS_IPC_MODEL_BYTES 128
#define MLOS_IPC_ALIGN 64 /* tensors the server writes start on this boundary of the arena */

/* The client's first (and only) message on the socket. */
struct mlos_ipc_hello {
  uint64_t magic;       /* MLOS_IPC_HELLO_MAGIC */
  uint32_t version;     /* MLOS_IPC_VERSION */
  uint32_t reserved;
  uint64_t arena_bytes; /* the arena size it asks for (the server may cap it) */
};

/* The server's answer; on success the segment's descriptor comes with it (SCM_RIGHTS). */
struct mlos_ipc_welcome {
  uint64_t magic;         /* MLOS_IPC_HELLO_MAGIC */
  uint32_t version;       /* MLOS_IPC_VERSION */
  int32_t status;         /* 0, or an error (message says which) and no descriptor */
  uint64_t segment_bytes; /* the size to map */
  char message[240];      /* NUL-terminated */
};

/* The start of the segment (4096 bytes are reserved for it). */
struct mlos_ipc_segment {
  uint64_t magic;   /* MLOS_IPC_SEGMENT_MAGIC */
  uint32_t version; /* MLOS_IPC_VERSION */
  uint32_t client_id;
  uint64_t segment_bytes;
  uint64_t request_ring_offset, request_ring_bytes;
  uint64_t response_ring_offset, response_ring_bytes;
  uint64_t arena_offset, arena_bytes;
  uint64_t server_instance; /* random per server start: a client that reconnects sees a restart */
  uint32_t state;           /* MLOS_IPC_STATE_*, written by the server */
  uint32_t reserved;
};
#define MLOS_IPC_SEGMENT_HEADER_BYTES 4096u
#define MLOS_IPC_STATE_OPEN 0u
#define MLOS_IPC_STATE_CLOSED 1u /* the server dropped this client or is shutting down */

/* One tensor: where it lies in the arena, its element type and shape. */
struct mlos_ipc_tensor {
  char name[MLOS_IPC_NAME_BYTES]; /* NUL-terminated */
  uint32_t dtype;                 /* ONNX element type number (1 float32, 7 int64, ...) */
  uint32_t rank;                  /* at most MLOS_IPC_MAX_RANK */
  int64_t shape[MLOS_IPC_MAX_RANK];
  uint64_t offset; /* from the start of the arena */
  uint64_t bytes;  /* exactly the elements' bytes */
};

#define MLOS_IPC_INFER 1u

struct mlos_ipc_request {
  uint32_t kind; /* MLOS_IPC_INFER */
  uint32_t n_inputs;
  uint64_t id;                      /* echoed in the response */
  char model[MLOS_IPC_MODEL_BYTES]; /* the model's name, NUL-terminated */
  uint64_t out_offset;              /* the window of the arena the server may write outputs into */
  uint64_t out_bytes;
  uint32_t n_outputs; /* 0: every output of the model; else the names below */
  uint32_t reserved;
  char outputs[MLOS_IPC_MAX_TENSORS][MLOS_IPC_NAME_BYTES];
  struct mlos_ipc_tensor inputs[MLOS_IPC_MAX_TENSORS];
};

struct mlos_ipc_response {
  uint64_t id;
  int32_t status; /* 0: ok; else code and message say what was wrong */
  uint32_t n_outputs;
  uint64_t compute_ns;   /* the model's own run time */
  uint64_t needed_bytes; /* with IPC_OUTPUT_TOO_SMALL: the window the outputs need */
  char code[32];         /* a stable error code, e.g. "IPC_BAD_TENSOR" */
  char message[256];     /* one line, NUL-terminated */
  struct mlos_ipc_tensor outputs[MLOS_IPC_MAX_TENSORS];
};

#define MLOS_IPC_RING_SLOT_BYTES 2048u /* each ring slot: a 4-byte length, then the message */

/* ---- the client library (libmlos_ipc_client) ------------------------------------------------ */

typedef struct mlos_ipc_client mlos_ipc_client;

/* The socket of the server named `name` ("mlos" by default): $XDG_RUNTIME_DIR/mlos/NAME.sock, or
 * /tmp/mlos-UID/NAME.sock without XDG_RUNTIME_DIR; a name holding a '/' is a path already.
 * Writes at most `capacity` bytes; returns the length, or -1 when it does not fit. */
int mlos_ipc_socket_path(const char* name, char* out, size_t capacity);

/* Connects to the server named `name` with an arena of `arena_bytes`. NULL on failure, with the
 * reason in `error` (at most `error_capacity` bytes, NUL-terminated). */
mlos_ipc_client* mlos_ipc_connect(const char* name, uint64_t arena_bytes, char* error, size_t error_capacity);

/* The arena: the client's tensor memory, shared with the server. */
void* mlos_ipc_arena(mlos_ipc_client* client);
uint64_t mlos_ipc_arena_bytes(mlos_ipc_client* client);
/* The server's instance number (changes when the server restarts). */
uint64_t mlos_ipc_server_instance(mlos_ipc_client* client);

/* Sends `request` (its id is the caller's) and waits for its response, at most `timeout_ms`
 * (< 0: no limit). Returns 0 with `response` filled (check response->status), or -1 on a failure
 * of the connection (server gone, timeout, corrupt ring), with the reason in `error`. */
int mlos_ipc_infer(mlos_ipc_client* client, const struct mlos_ipc_request* request, struct mlos_ipc_response* response,
                   int timeout_ms, char* error, size_t error_capacity);

/* Lower level, for pipelining: push one request (0, or -1 when the ring is full) and pop one
 * response (1 when one was there, 0 when none came within `timeout_ms`, -1 on a connection failure). */
int mlos_ipc_send(mlos_ipc_client* client, const struct mlos_ipc_request* request);
int mlos_ipc_receive(mlos_ipc_client* client, struct mlos_ipc_response* response, int timeout_ms, char* error,
                     size_t error_capacity);

/* Whether the server is still there (its socket open, the segment not closed). */
int mlos_ipc_connected(mlos_ipc_client* client);

/* Disconnects and unmaps the arena. */
void mlos_ipc_close(mlos_ipc_client* client);

#ifdef __cplusplus
}
#endif

#endif /* MLOS_IPC_H */
