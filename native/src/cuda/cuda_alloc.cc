// CUDA allocators: see cuda_alloc.h for the design.
#include "cuda/cuda_alloc.h"

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <utility>

#if defined(MLOS_WITH_CUDA) && MLOS_WITH_CUDA
#define MLOS_CUDA_ON 1
#include <cuda_runtime_api.h>
#else
#define MLOS_CUDA_ON 0
#endif

namespace mlos {

const char* CudaErrcCode(CudaErrc code) {
  switch (code) {
    case CudaErrc::kOk: return "OK";
    case CudaErrc::kUnavailable: return "CUDA_UNAVAILABLE";
    case CudaErrc::kFail: return "CUDA_FAIL";
    case CudaErrc::kOom: return "CUDA_OOM";
    case CudaErrc::kBadArgument: return "BAD_ARGUMENT";
  }
  return "CUDA_FAIL";
}

namespace {

constexpr const char* kNotCompiled =
    "compiled without CUDA: this build of the mlos addon has no CUDA runtime (no CUDA toolkit was "
    "found, MLOS_CUDA=0, or a node-gyp build); install a toolkit and rebuild with "
    "`npm run build:native`";

std::string Bytes(uint64_t n) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[48];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, unit[u]);
  }
  return buf;
}

#if MLOS_CUDA_ON

// Clears the calling thread's last-error state after a failed call (non-sticky errors only
// linger there), and returns the error.
cudaError_t Clear(cudaError_t e) {
  if (e != cudaSuccess) cudaGetLastError();
  return e;
}

CudaStatus FailStatus(const char* call, cudaError_t e) {
  return CudaStatus::Error(CudaErrc::kFail, CudaRuntime::CallFailed(call, static_cast<int>(e)));
}

// Selects a device for the calling thread and restores the previous one when it goes away.
class DeviceGuard {
 public:
  DeviceGuard() = default;
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard() {
    if (restore_) Clear(cudaSetDevice(previous_));
  }
  CudaStatus Set(int device) {
    int current = 0;
    cudaError_t e = Clear(cudaGetDevice(&current));
    if (e != cudaSuccess) return FailStatus("cudaGetDevice", e);
    if (current == device) return CudaStatus::Ok();
    e = Clear(cudaSetDevice(device));
    if (e != cudaSuccess) {
      return FailStatus(("cudaSetDevice(" + std::to_string(device) + ")").c_str(), e);
    }
    previous_ = current;
    restore_ = true;
    return CudaStatus::Ok();
  }

 private:
  int previous_ = 0;
  bool restore_ = false;
};

std::string VersionText(int v) {  // 13000 -> "13.0"
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

std::string NoGpuHint(cudaError_t e, int runtimeVersion) {
  switch (e) {
    case cudaErrorInsufficientDriver:
      return "no NVIDIA driver is loaded, or it is older than the CUDA " +
             VersionText(runtimeVersion) + " runtime mlos was built with";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is visible; check CUDA_VISIBLE_DEVICES";
    case cudaErrorStubLibrary:
      return "the CUDA driver library found is a stub, not a real driver";
    case cudaErrorSystemDriverMismatch:
      return "the NVIDIA kernel module and the user-mode driver are of different versions";
    case cudaErrorDevicesUnavailable:
      return "every CUDA device is busy or unavailable (compute mode)";
    default:
      return "";
  }
}

CudaInfo DoProbe() {
  CudaInfo info;
  info.compiled = true;
  Clear(cudaRuntimeGetVersion(&info.runtimeVersion));
  Clear(cudaDriverGetVersion(&info.driverVersion));
  int count = 0;  // cudaGetDeviceCount leaves it untouched when it fails
  cudaError_t e = Clear(cudaGetDeviceCount(&count));
  if (e != cudaSuccess) {
    info.errorNumber = static_cast<int>(e);
    info.errorName = cudaGetErrorName(e);
    info.reason = "no GPU: " + CudaRuntime::CallFailed("cudaGetDeviceCount", info.errorNumber);
    const std::string hint = NoGpuHint(e, info.runtimeVersion);
    if (!hint.empty()) info.reason += " (" + hint + ")";
    return info;
  }
  if (count <= 0) {
    info.reason = "no GPU: cudaGetDeviceCount found no CUDA device";
    return info;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    e = Clear(cudaGetDeviceProperties(&prop, i));
    if (e != cudaSuccess) {
      info.errorNumber = static_cast<int>(e);
      info.errorName = cudaGetErrorName(e);
      info.reason = "no GPU: " + CudaRuntime::CallFailed(
                                     ("cudaGetDeviceProperties(" + std::to_string(i) + ")").c_str(),
                                     info.errorNumber);
      info.devices.clear();
      return info;
    }
    CudaDeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.totalMemory = prop.totalGlobalMem;
    d.major = prop.major;
    d.minor = prop.minor;
    info.devices.push_back(std::move(d));
  }
  info.deviceCount = count;
  info.available = true;
  return info;
}

class DeviceBackend : public CachingAllocator::Backend {
 public:
  explicit DeviceBackend(int device) : device_(device) {}
  CudaStatus Allocate(uint64_t bytes, void** out) override {
    DeviceGuard guard;
    CudaStatus st = guard.Set(device_);
    if (!st.ok()) return st;
    void* p = nullptr;
    cudaError_t e = Clear(cudaMalloc(&p, static_cast<size_t>(bytes)));
    if (e == cudaErrorMemoryAllocation) {
      return CudaStatus::Error(CudaErrc::kOom,
                               CudaRuntime::CallFailed("cudaMalloc", static_cast<int>(e)));
    }
    if (e != cudaSuccess) return FailStatus("cudaMalloc", e);
    *out = p;
    return CudaStatus::Ok();
  }
  CudaStatus Release(void* ptr) override {
    DeviceGuard guard;
    CudaStatus st = guard.Set(device_);
    if (!st.ok()) return st;
    cudaError_t e = Clear(cudaFree(ptr));
    if (e != cudaSuccess) return FailStatus("cudaFree", e);
    return CudaStatus::Ok();
  }
  std::string Describe() const override { return "CUDA device " + std::to_string(device_); }

 private:
  int device_;
};

class PinnedBackend : public CachingAllocator::Backend {
 public:
  CudaStatus Allocate(uint64_t bytes, void** out) override {
    void* p = nullptr;
    cudaError_t e = Clear(cudaHostAlloc(&p, static_cast<size_t>(bytes), cudaHostAllocPortable));
    if (e == cudaErrorMemoryAllocation) {
      return CudaStatus::Error(CudaErrc::kOom,
                               CudaRuntime::CallFailed("cudaHostAlloc", static_cast<int>(e)));
    }
    if (e != cudaSuccess) return FailStatus("cudaHostAlloc", e);
    *out = p;
    return CudaStatus::Ok();
  }
  CudaStatus Release(void* ptr) override {
    cudaError_t e = Clear(cudaFreeHost(ptr));
    if (e != cudaSuccess) return FailStatus("cudaFreeHost", e);
    return CudaStatus::Ok();
  }
  std::string Describe() const override { return "pinned host memory"; }
};

#else  // !MLOS_CUDA_ON

CudaInfo DoProbe() {
  CudaInfo info;
  info.reason = kNotCompiled;
  return info;
}

// Never used: Create() refuses first. Here so that the class layout is the same in both builds.
class UnavailableBackend : public CachingAllocator::Backend {
 public:
  UnavailableBackend() = default;
  explicit UnavailableBackend(int /*device*/) {}
  CudaStatus Allocate(uint64_t, void**) override {
    return CudaStatus::Error(CudaErrc::kUnavailable, kNotCompiled);
  }
  CudaStatus Release(void*) override { return CudaStatus::Error(CudaErrc::kUnavailable, kNotCompiled); }
  std::string Describe() const override { return "CUDA (not compiled)"; }
};
using DeviceBackend = UnavailableBackend;
using PinnedBackend = UnavailableBackend;

#endif  // MLOS_CUDA_ON

}  // namespace

// ---- CudaRuntime ----------------------------------------------------------------------------------

bool CudaRuntime::Compiled() { return MLOS_CUDA_ON != 0; }

const CudaInfo& CudaRuntime::Probe() {
  // Leaked on purpose: usable from static destructors and atexit handlers. A function-local
  // static is initialised once, thread-safely.
  static const CudaInfo* info = new CudaInfo(DoProbe());
  return *info;
}

CudaInfo CudaRuntime::Query(bool withFreeMemory) {
  CudaInfo info = Probe();
#if MLOS_CUDA_ON
  if (info.available && withFreeMemory) {
    for (CudaDeviceInfo& d : info.devices) {
      DeviceGuard guard;
      if (!guard.Set(d.index).ok()) continue;
      size_t freeBytes = 0, totalBytes = 0;
      if (Clear(cudaMemGetInfo(&freeBytes, &totalBytes)) == cudaSuccess) {
        d.freeMemory = static_cast<int64_t>(freeBytes);
      }
    }
  }
#else
  (void)withFreeMemory;
#endif
  return info;
}

CudaStatus CudaRuntime::Available() {
  const CudaInfo& info = Probe();
  if (info.available) return CudaStatus::Ok();
  return CudaStatus::Error(CudaErrc::kUnavailable, info.reason);
}

bool CudaRuntime::IsNoGpuError(int cudaError) {
#if MLOS_CUDA_ON
  switch (static_cast<cudaError_t>(cudaError)) {
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice:
    case cudaErrorStubLibrary:
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInitializationError:
    case cudaErrorNotPermitted:
    case cudaErrorSystemNotReady:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      return true;
    default:
      return false;
  }
#else
  (void)cudaError;
  return false;
#endif
}

std::string CudaRuntime::ErrorName(int cudaError) {
#if MLOS_CUDA_ON
  return std::string(cudaGetErrorName(static_cast<cudaError_t>(cudaError))) + " (" +
         std::to_string(cudaError) + ")";
#else
  return "cudaError " + std::to_string(cudaError);
#endif
}

std::string CudaRuntime::CallFailed(const char* call, int cudaError) {
  std::string s = std::string(call) + " failed: " + ErrorName(cudaError);
#if MLOS_CUDA_ON
  s += ": ";
  s += cudaGetErrorString(static_cast<cudaError_t>(cudaError));
#endif
  return s;
}

// ---- CachingAllocator ---------------------------------------------------------------------------

uint64_t CachingAllocator::RoundSize(uint64_t bytes) {
  if (bytes == 0 || bytes > kMaxRequest) return 0;
  const uint64_t g = bytes <= kSmallMax ? kSmallGranularity : kLargeGranularity;
  return (bytes + g - 1) / g * g;
}

CachingAllocator::CachingAllocator(std::unique_ptr<Backend> backend,
                                   const CudaAllocatorOptions& options)
    : backend_(std::move(backend)), limit_(options.limitBytes) {
  stats_.limitBytes = limit_;
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& entry : cache_) {
    for (void* p : entry.second) backend_->Release(p);
  }
  cache_.clear();
  for (auto& entry : live_) backend_->Release(const_cast<void*>(entry.first));
  live_.clear();
}

void CachingAllocator::NotePeaksLocked() {
  stats_.reservedBytes = stats_.allocatedBytes + stats_.cachedBytes;
  stats_.peakAllocatedBytes = std::max(stats_.peakAllocatedBytes, stats_.allocatedBytes);
  stats_.peakReservedBytes = std::max(stats_.peakReservedBytes, stats_.reservedBytes);
}

CudaStatus CachingAllocator::ReleaseCachedLocked(uint64_t need, uint64_t limit) {
  CudaStatus first;
  while (!cache_.empty() &&
         (limit == 0 || stats_.allocatedBytes + stats_.cachedBytes + need > limit)) {
    auto it = std::prev(cache_.end());  // the largest class
    void* p = it->second.back();
    const uint64_t size = it->first;
    it->second.pop_back();
    if (it->second.empty()) cache_.erase(it);
    // Dropped from the books whatever happens: a block whose release failed is not reusable.
    stats_.cachedBytes -= size;
    stats_.cachedBlocks -= 1;
    CudaStatus st = backend_->Release(p);
    if (st.ok()) {
      stats_.backendFrees += 1;
    } else if (first.ok()) {
      first = st;
    }
  }
  stats_.reservedBytes = stats_.allocatedBytes + stats_.cachedBytes;
  return first;
}

CudaStatus CachingAllocator::Alloc(uint64_t bytes, CudaBlock* out) {
  if (bytes == 0 || bytes > kMaxRequest) {
    return CudaStatus::Error(CudaErrc::kBadArgument,
                             "bytes must be from 1 to " + std::to_string(kMaxRequest) + ", got " +
                                 std::to_string(bytes));
  }
  const uint64_t size = RoundSize(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* p = nullptr;
  auto it = cache_.find(size);
  if (it != cache_.end()) {
    p = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) cache_.erase(it);
    stats_.cachedBytes -= size;
    stats_.cachedBlocks -= 1;
    stats_.cacheHits += 1;
  } else {
    stats_.cacheMisses += 1;
    auto oom = [&](const std::string& why) {
      stats_.oomCount += 1;
      return CudaStatus::Error(
          CudaErrc::kOom, backend_->Describe() + ": out of memory allocating " +
                              std::to_string(bytes) + " bytes (size class " + Bytes(size) + "): " +
                              why + "; " + Bytes(stats_.allocatedBytes) + " allocated in " +
                              std::to_string(stats_.liveBlocks) + " live blocks, " +
                              Bytes(stats_.cachedBytes) + " cached");
    };
    if (limit_ != 0 && stats_.allocatedBytes + stats_.cachedBytes + size > limit_) {
      if (stats_.allocatedBytes + size > limit_) {
        return oom("over the allocator's limit of " + std::to_string(limit_) + " bytes");
      }
      CudaStatus st = ReleaseCachedLocked(size, limit_);
      if (!st.ok()) return st;
    }
    CudaStatus st = backend_->Allocate(size, &p);
    if (st.code == CudaErrc::kOom && !cache_.empty()) {
      // Give the cache back to CUDA and try once more.
      CudaStatus rel = ReleaseCachedLocked(0, 0);
      if (!rel.ok()) return rel;
      st = backend_->Allocate(size, &p);
    }
    if (st.code == CudaErrc::kOom) return oom(st.message);
    if (!st.ok()) return st;
    stats_.backendAllocs += 1;
  }
  const uint64_t id = next_id_++;
  live_[p] = Live{size, bytes, id};
  stats_.allocatedBytes += size;
  stats_.requestedBytes += bytes;
  stats_.liveBlocks += 1;
  stats_.allocCount += 1;
  NotePeaksLocked();
  *out = CudaBlock{p, size, bytes, id};
  return CudaStatus::Ok();
}

CudaStatus CachingAllocator::Free(const CudaBlock& block) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(block.ptr);
  if (it == live_.end() || it->second.id != block.id) {
    return CudaStatus::Error(CudaErrc::kBadArgument,
                             "not a live block of " + backend_->Describe() + " (freed already?)");
  }
  const Live live = it->second;
  live_.erase(it);
  stats_.allocatedBytes -= live.size;
  stats_.requestedBytes -= live.requested;
  stats_.liveBlocks -= 1;
  stats_.freeCount += 1;
  cache_[live.size].push_back(block.ptr);
  stats_.cachedBytes += live.size;
  stats_.cachedBlocks += 1;
  NotePeaksLocked();
  return CudaStatus::Ok();
}

bool CachingAllocator::Lookup(const void* ptr, CudaBlock* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return false;
  *out = CudaBlock{const_cast<void*>(ptr), it->second.size, it->second.requested, it->second.id};
  return true;
}

bool CachingAllocator::Covers(const CudaBlock& block, uint64_t offset, uint64_t bytes) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(block.ptr);
  if (it == live_.end() || it->second.id != block.id) return false;
  return offset <= it->second.requested && bytes <= it->second.requested - offset;
}

CudaStatus CachingAllocator::EmptyCache(uint64_t* released) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t before = stats_.cachedBytes;
  CudaStatus st = ReleaseCachedLocked(0, 0);
  if (released != nullptr) *released = before - stats_.cachedBytes;
  return st;
}

CudaAllocatorStats CachingAllocator::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  CudaAllocatorStats s = stats_;
  s.reservedBytes = s.allocatedBytes + s.cachedBytes;
  return s;
}

// ---- CudaDeviceAllocator ------------------------------------------------------------------------

CudaDeviceAllocator::CudaDeviceAllocator(int device, const CudaAllocatorOptions& options)
    : device_(device), cache_(std::make_unique<DeviceBackend>(device), options) {}

CudaStatus CudaDeviceAllocator::Create(int device, const CudaAllocatorOptions& options,
                                       std::shared_ptr<CudaDeviceAllocator>* out) {
  CudaStatus st = CudaRuntime::Available();
  if (!st.ok()) return st;
  const CudaInfo& info = CudaRuntime::Probe();
  if (device < 0 || device >= info.deviceCount) {
    return CudaStatus::Error(CudaErrc::kBadArgument,
                             "device " + std::to_string(device) + " is out of range: there " +
                                 (info.deviceCount == 1 ? "is 1 CUDA device"
                                                        : "are " + std::to_string(info.deviceCount) +
                                                              " CUDA devices"));
  }
#if MLOS_CUDA_ON
  {
    DeviceGuard guard;  // the device must be selectable (not prohibited, not lost)
    st = guard.Set(device);
    if (!st.ok()) return st;
  }
#endif
  out->reset(new CudaDeviceAllocator(device, options));
  return CudaStatus::Ok();
}

// Both directions of cudaMemcpy between host memory and [offset, offset + bytes) of a live block.
CudaStatus CudaDeviceAllocator::Copy(const CudaBlock& block, uint64_t offset, void* host, uint64_t bytes,
                                     bool toDevice) {
  const char* what = toDevice ? "copyToDevice" : "copyFromDevice";
  if (!cache_.Covers(block, offset, bytes)) {
    return CudaStatus::Error(CudaErrc::kBadArgument,
                             std::string(what) + ": [" + std::to_string(offset) + ", " +
                                 std::to_string(offset + bytes) +
                                 ") is not within a live block of " + cache_.Describe());
  }
  if (bytes == 0) return CudaStatus::Ok();
#if MLOS_CUDA_ON
  DeviceGuard guard;
  CudaStatus st = guard.Set(device_);
  if (!st.ok()) return st;
  uint8_t* device = static_cast<uint8_t*>(block.ptr) + offset;
  cudaError_t e = Clear(toDevice ? cudaMemcpy(device, host, static_cast<size_t>(bytes), cudaMemcpyHostToDevice)
                                 : cudaMemcpy(host, device, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost));
  if (e != cudaSuccess) return FailStatus(toDevice ? "cudaMemcpy(HostToDevice)" : "cudaMemcpy(DeviceToHost)", e);
  return CudaStatus::Ok();
#else
  (void)host;
  return CudaStatus::Error(CudaErrc::kUnavailable, kNotCompiled);
#endif
}

CudaStatus CudaDeviceAllocator::CopyToDevice(const CudaBlock& dst, uint64_t offset, const void* src,
                                             uint64_t bytes) {
  return Copy(dst, offset, const_cast<void*>(src), bytes, true);  // only read when toDevice
}

CudaStatus CudaDeviceAllocator::CopyFromDevice(const CudaBlock& src, uint64_t offset, void* dst,
                                               uint64_t bytes) {
  return Copy(src, offset, dst, bytes, false);
}

// ---- PinnedHostAllocator ------------------------------------------------------------------------

PinnedHostAllocator::PinnedHostAllocator(const CudaAllocatorOptions& options)
    : cache_(std::make_unique<PinnedBackend>(), options) {}

CudaStatus PinnedHostAllocator::Create(const CudaAllocatorOptions& options,
                                       std::shared_ptr<PinnedHostAllocator>* out) {
  CudaStatus st = CudaRuntime::Available();
  if (!st.ok()) return st;
  out->reset(new PinnedHostAllocator(options));
  return CudaStatus::Ok();
}

}  // namespace mlos
