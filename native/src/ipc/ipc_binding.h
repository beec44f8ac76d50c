// The IPC door's JS classes (the surface bindings/native.ts types as IpcHost and IpcClient).
//
//   new IpcHost(socketPath, { maxArenaBytes?, maxClients?, leaseMs? })   listens (ipc_host.h)
//   .instance (bigint) .path
//   .setOrtModel(name, ortSession)   serve an OrtSession natively on the client threads
//   .setRunnerModel(name, runner)    serve a model another addon runs natively: runner is an External
//                                    over an mlos_ipc_runner (ipc_runner.h; the torch plugin's)
//   .setJsModel(name, handler)       serve a model through JavaScript: handler(request) ->
//                                    Promise<{ outputs: [{ name, dtype, shape, offset, bytes }] }
//                                    | { code, message, neededBytes? }>; request: { model,
//                                    inputs: [{ name, dtype, shape, data: Buffer over the
//                                    client's arena }], outputs: [names], window: Buffer }
//                                    (offsets are within the window; dtype: ONNX number)
//   .removeModel(name)               later requests get IPC_MODEL_NOT_FOUND
//   .stats() -> { clients, segmentBytes, connections, refused, dropped, unknownModel }
//   .modelCounts() -> { [name]: { requests, failures, computeNs } }
//   .close()                         stops (JS requests waiting are answered IPC_SHUTTING_DOWN)
//
//   new IpcClient(name, arenaBytes)  connects (ipc_client.h)
//   .arena (ArrayBuffer over the shared arena) .serverInstance (bigint) .clientId
//   .send(requestBytes) -> boolean   false when the ring is full or the connection is gone
//   .receive(out, spinMicros) -> 1 | 0 | -1   a response into `out` (1), none yet (0), the
//                                    connection failed (-1, .lastError says why)
//   .receiveAsync(out, timeoutMs) -> Promise<1 | 0 | -1>   the same, waiting on a worker thread
//   .connected() -> boolean  .close()
//   .segment() -> ArrayBuffer over the whole segment (header, rings, arena): inspection and fault tests
#pragma once

#include <napi.h>

namespace mlos {

void InitIpc(Napi::Env env, Napi::Object exports);

}  // namespace mlos
