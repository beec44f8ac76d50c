// The CUDA allocator tests (cuda_alloc_test.cc) against a fake CUDA runtime over host memory, so
// that the code paths which need a GPU (device selection, cudaMalloc/cudaFree, cudaHostAlloc,
// cudaMemcpy, out-of-memory, the copies' bounds) run on every machine with a CUDA toolkit, under
// the sanitizers too. Only built when CMake finds a toolkit (the fake needs its headers for the
// types); it links no libcudart. The real runtime is tested by cuda_alloc_test where a GPU is.
//
// The fake: MLOS_FAKE_CUDA_DEVICES devices (default 2) of 4 GiB each, "mlos fake CUDA device",
// compute capability 9.0. Device pointers are host memory (256-byte aligned) recorded with their
// device and size; cudaMemcpy checks that the device side of a copy lies within a live allocation
// of the current device, and a device allocation past the capacity is cudaErrorMemoryAllocation.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace {

constexpr size_t kFakeCapacity = size_t{4} << 30;

struct Allocation {
  size_t size;
  int device;  // -1: pinned host memory
};

struct FakeState {
  std::mutex mu;
  std::map<const char*, Allocation> allocations;  // start -> allocation
  size_t used[64] = {};
};

FakeState& State() {
  static FakeState* s = new FakeState();  // leaked: used until exit
  return *s;
}

thread_local int t_device = 0;
thread_local cudaError_t t_last = cudaSuccess;

cudaError_t Ret(cudaError_t e) {
  if (e != cudaSuccess) t_last = e;
  return e;
}

int DeviceCount() {
  const char* env = std::getenv("MLOS_FAKE_CUDA_DEVICES");
  const int n = env ? std::atoi(env) : 2;
  return n < 0 ? 0 : (n > 64 ? 64 : n);
}

// The allocation holding [p, p + n), or nullptr.
const Allocation* Find(const void* p, size_t n) {
  FakeState& s = State();
  const char* c = static_cast<const char*>(p);
  auto it = s.allocations.upper_bound(c);
  if (it == s.allocations.begin()) return nullptr;
  --it;
  if (c < it->first || n > it->second.size || static_cast<size_t>(c - it->first) > it->second.size - n) {
    return nullptr;
  }
  return &it->second;
}

}  // namespace

cudaError_t cudaGetDeviceCount(int* count) {
  const int n = DeviceCount();
  if (n == 0) return Ret(cudaErrorNoDevice);
  *count = n;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= DeviceCount()) return Ret(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "mlos fake CUDA device %d", device);
  prop->totalGlobalMem = kFakeCapacity;
  prop->major = 9;
  prop->minor = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = t_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= DeviceCount()) return Ret(cudaErrorInvalidDevice);
  t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = t_last;
  t_last = cudaSuccess;
  return e;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorStubLibrary: return "cudaErrorStubLibrary";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaErrorMemoryAllocation: return "out of memory";
    default: return "fake CUDA runtime error";
  }
}

cudaError_t cudaMalloc(void** p, size_t size) {
  if (size == 0 || p == nullptr) return Ret(cudaErrorInvalidValue);
  FakeState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.used[t_device] + size > kFakeCapacity) return Ret(cudaErrorMemoryAllocation);
  void* m = std::aligned_alloc(256, (size + 255) / 256 * 256);
  if (m == nullptr) return Ret(cudaErrorMemoryAllocation);
  s.allocations[static_cast<const char*>(m)] = Allocation{size, t_device};
  s.used[t_device] += size;
  *p = m;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (p == nullptr) return cudaSuccess;
  FakeState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.allocations.find(static_cast<const char*>(p));
  if (it == s.allocations.end() || it->second.device < 0) return Ret(cudaErrorInvalidValue);
  s.used[it->second.device] -= it->second.size;
  s.allocations.erase(it);
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int /*flags*/) {
  if (size == 0 || p == nullptr) return Ret(cudaErrorInvalidValue);
  FakeState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  void* m = std::aligned_alloc(256, (size + 255) / 256 * 256);
  if (m == nullptr) return Ret(cudaErrorMemoryAllocation);
  s.allocations[static_cast<const char*>(m)] = Allocation{size, -1};
  *p = m;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* p) {
  FakeState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.allocations.find(static_cast<const char*>(p));
  if (it == s.allocations.end() || it->second.device >= 0) return Ret(cudaErrorInvalidValue);
  s.allocations.erase(it);
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  FakeState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  *total = kFakeCapacity;
  *free = kFakeCapacity - s.used[t_device];
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  FakeState& s = State();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    const void* dev = kind == cudaMemcpyHostToDevice ? dst : src;
    if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToHost) {
      return Ret(cudaErrorInvalidValue);
    }
    const Allocation* a = Find(dev, count);
    if (a == nullptr || a->device != t_device) return Ret(cudaErrorInvalidValue);
  }
  std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* p) {
  FakeState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  std::memset(attr, 0, sizeof *attr);
  const Allocation* a = Find(p, 1);
  if (a == nullptr) {
    attr->type = cudaMemoryTypeUnregistered;
  } else if (a->device < 0) {
    attr->type = cudaMemoryTypeHost;
  } else {
    attr->type = cudaMemoryTypeDevice;
    attr->device = a->device;
  }
  return cudaSuccess;
}

// MLOS_FAKE_CUDA_ONLY: the fake runtime alone (to link a throwaway addon against it by hand).
#ifndef MLOS_FAKE_CUDA_ONLY
#include "cuda_alloc_test.cc"
#endif
