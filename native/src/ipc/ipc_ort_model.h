// IpcOrtModel: an ONNX Runtime session served by the IPC door's client threads, with no
// JavaScript: inputs are OrtValues over the client's arena, outputs whose shapes follow from the
// inputs are preallocated in the request's window (ORT writes them in place), the others are
// allocated by ORT and copied into the window. Built with the addon (MLOS_WITH_ORT).
#pragma once

#include <memory>

#include "ipc/ipc_host.h"

namespace mlos {
struct OrtSessionState;
}

namespace mlos::ipc {

std::shared_ptr<IpcModel> MakeIpcOrtModel(std::shared_ptr<OrtSessionState> session);

}  // namespace mlos::ipc
