// The CUDA allocators' JS surface: node-addon-api wrappers over mlos::CudaDeviceAllocator and
// mlos::PinnedHostAllocator (cuda_alloc.h). Registered by InitCudaAlloc from addon.cc, in every
// build: without CUDA (or without a GPU) cudaInfo() says why and the constructors throw.
//
//   cudaInfo() -> { compiled, available, reason?, deviceCount, devices: [{ index, name,
//                   totalMemory, freeMemory, computeCapability }], runtimeVersion, driverVersion,
//                   errorName?, errorNumber? }
//       Detection runs once per process, on the first call (nothing touches CUDA at load time);
//       freeMemory is read on every call (cudaMemGetInfo; null when that fails).
//
//   new CudaDeviceAllocator(device = 0, { limitBytes? })
//       NativeError CUDA_UNAVAILABLE (message: the reason) where there is no GPU; RangeError
//       BAD_ARGUMENT for a device out of range.
//     .device .limitBytes                  read-only own properties
//     .alloc(bytes) -> CudaDeviceBuffer    a frozen, type-tagged plain object
//                                          { address: bigint, byteLength, size, device }: the
//                                          device pointer, the bytes asked for, the size class.
//                                          It holds the allocator; when it is collected without
//                                          free() its block goes back to the cache (device memory
//                                          is not reported to V8: free() explicitly).
//     .free(buffer)                        returns the block to the cache now
//     .copyToDevice(buffer, src, offset = 0)    synchronous cudaMemcpy of src (an ArrayBuffer or
//     .copyFromDevice(buffer, dst, offset = 0)  view) to / from [offset, offset + src.byteLength)
//     .emptyCache() -> number              cudaFree of every cached block; the bytes given back
//     .stats() -> object                   see CudaAllocatorStats in cuda_alloc.h
//   CudaDeviceAllocator.roundSize(bytes) -> number   the size class (works without a GPU)
//
//   new PinnedHostAllocator({ limitBytes? })
//     .alloc(bytes) -> ArrayBuffer         an external ArrayBuffer over pinned (cudaHostAlloc)
//                                          memory, reported to V8; its finaliser returns the block
//     .free(buffer | view)                 returns the block now and detaches the ArrayBuffer
//     .emptyCache() -> number, .stats(), .limitBytes   as above
//
// Every method checks its receiver's type tag (a forged receiver is a TypeError), and
// free/copy check the buffer's tag and that it belongs to this allocator.
#pragma once

#include <napi.h>

#include <memory>

#include "common/addon.h"
#include "cuda/cuda_alloc.h"

namespace mlos {

// Registers cudaInfo, CudaDeviceAllocator and PinnedHostAllocator on exports.
void InitCudaAlloc(Napi::Env env, Napi::Object exports);

class CudaDeviceAllocatorWrap : public Napi::ObjectWrap<CudaDeviceAllocatorWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit CudaDeviceAllocatorWrap(const Napi::CallbackInfo& info);
  static CudaDeviceAllocatorWrap* FromReceiver(const Napi::CallbackInfo& info);

 private:
  template <Napi::Value (CudaDeviceAllocatorWrap::*Method)(const Napi::CallbackInfo&)>
  static Napi::Value Checked(const Napi::CallbackInfo& info) {
    return (FromReceiver(info)->*Method)(info);
  }
  static Napi::Value RoundSize(const Napi::CallbackInfo& info);

  Napi::Value Alloc(const Napi::CallbackInfo& info);
  Napi::Value Free(const Napi::CallbackInfo& info);
  Napi::Value CopyToDevice(const Napi::CallbackInfo& info);
  Napi::Value CopyFromDevice(const Napi::CallbackInfo& info);
  Napi::Value EmptyCache(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);

  std::shared_ptr<CudaDeviceAllocator> alloc_;
};

class PinnedHostAllocatorWrap : public Napi::ObjectWrap<PinnedHostAllocatorWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit PinnedHostAllocatorWrap(const Napi::CallbackInfo& info);
  static PinnedHostAllocatorWrap* FromReceiver(const Napi::CallbackInfo& info);

 private:
  template <Napi::Value (PinnedHostAllocatorWrap::*Method)(const Napi::CallbackInfo&)>
  static Napi::Value Checked(const Napi::CallbackInfo& info) {
    return (FromReceiver(info)->*Method)(info);
  }

  Napi::Value Alloc(const Napi::CallbackInfo& info);
  Napi::Value Free(const Napi::CallbackInfo& info);
  Napi::Value EmptyCache(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);

  std::shared_ptr<PinnedHostAllocator> alloc_;
};

}  // namespace mlos
