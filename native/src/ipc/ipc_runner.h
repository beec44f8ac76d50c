/*
 * mlos_ipc_runner: a model that another addon (the torch plugin's mlos_torch.node) hands to the
 * IPC door, so that the door's native threads run it with no JavaScript. A plain C interface,
 * because the two addons are separate shared libraries: the runner travels as a Node External
 * holding a pointer to this struct, and the door keeps it with retain() and lets it go with
 * release() (the External's finaliser releases the reference it was made with).
 */
#ifndef MLOS_IPC_RUNNER_H
#define MLOS_IPC_RUNNER_H

#include <stdint.h>

#include "mlos_ipc.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MLOS_IPC_RUNNER_ABI 0x4d4c4f5352554e31ull /* "MLOSRUN1" */

struct mlos_ipc_runner {
  uint64_t abi; /* MLOS_IPC_RUNNER_ABI */
  void* self;
  /* Runs a request the door has validated (offsets within the arena, byte lengths matching
   * shapes) on `arena`, and fills `response`: status 0 with the outputs written into the
   * request's window, or an error (code, message, needed_bytes). Any thread; may run
   * concurrently for different clients. */
  void (*run)(void* self, const struct mlos_ipc_request* request, uint8_t* arena, uint64_t arena_bytes,
              struct mlos_ipc_response* response);
  void (*retain)(void* self);
  void (*release)(void* self);
};

#ifdef __cplusplus
}
#endif

#endif /* MLOS_IPC_RUNNER_H */
