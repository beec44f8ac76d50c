// CUDA memory for tensors: a caching device allocator and a pinned host allocator.
//
// Plain C++17 (no Node-API, and no CUDA header here), so the unit tests link it on its own. The
// CUDA runtime is called only from cuda_alloc.cc, and only when it is compiled with
// MLOS_WITH_CUDA=1 (native/CMakeLists.txt defines it when a CUDA toolkit is found, and links the
// runtime statically: the addon needs no libcudart at run time). Without it every entry point
// reports CUDA_UNAVAILABLE with the reason "compiled without CUDA".
//
// Detection (CudaRuntime)
//   Nothing touches CUDA until the first query. CudaRuntime::Probe() calls cudaGetDeviceCount once
//   per process: any error there (cudaErrorInsufficientDriver when no driver is loaded or it is too
//   old, cudaErrorNoDevice, cudaErrorStubLibrary, ...) or a count of 0 means "no GPU", and the
//   reason names the call, the error's name and number. Callers then use the CPU pool (ShmPool,
//   shm_pool.h): both allocators below refuse to be created with CUDA_UNAVAILABLE.
//
// Size classes (CachingAllocator::RoundSize)
//   <= 1 MiB   rounded up to a multiple of 512 B   (512, 1024, ..., 1 MiB: 2048 classes)
//   >  1 MiB   rounded up to a multiple of 2 MiB   (2 MiB, 4 MiB, ...)
//   A block is one cudaMalloc (cudaHostAlloc) of its class size: blocks are never split or merged,
//   so a freed block goes to the free list of its class and is reused only by a request of exactly
//   that class. cudaMalloc returns 256-byte aligned memory; so does every block.
//
// Caching (CachingAllocator, shared by both allocators)
//   Alloc takes a cached block of the class when there is one (a cache hit), otherwise it asks the
//   backend (a miss). With a limit (limitBytes > 0) the allocator never holds more than the limit
//   from CUDA (reservedBytes = allocated + cached): on a miss that would pass it, cached blocks are
//   released (largest first) until the request fits; if the live blocks alone leave no room it is
//   CUDA_OOM. When the backend itself is out of memory, the whole cache is released and the call
//   retried once before CUDA_OOM. EmptyCache() releases every cached block (cudaFree /
//   cudaFreeHost). The destructor releases every block, live ones too.
//   The allocator knows nothing of streams: a block must not be freed while work queued on it is
//   still running (every copy here is a synchronous cudaMemcpy).
//   One mutex guards each allocator (held across cudaMalloc, as PyTorch's does): every method is
//   safe from any thread. The device allocator sets its device around each CUDA call and restores
//   the calling thread's current device after.
//
// Blocks are (ptr, size, requested, id): Free(block) frees only while the block at ptr is still
// that allocation (same id), so a late finaliser for a block that was freed (and perhaps reused)
// is a harmless no-op.
//
// Statuses: no exceptions leave this core. CudaStatus codes are stable (the N-API layer turns
// them into the JS `code`): CUDA_UNAVAILABLE, CUDA_FAIL (the message names the CUDA call and
// cudaGetErrorName), CUDA_OOM, BAD_ARGUMENT.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace mlos {

enum class CudaErrc {
  kOk = 0,
  kUnavailable,  // CUDA_UNAVAILABLE: no GPU, no (or too old a) driver, or compiled without CUDA
  kFail,         // CUDA_FAIL: a CUDA call failed (its name and cudaGetErrorName in the message)
  kOom,          // CUDA_OOM: out of device (or pinned host) memory, or over the allocator's limit
  kBadArgument,  // BAD_ARGUMENT: a size, device, offset or block that is not valid here
};

const char* CudaErrcCode(CudaErrc code);

struct CudaStatus {
  CudaErrc code = CudaErrc::kOk;
  std::string message;
  bool ok() const { return code == CudaErrc::kOk; }
  static CudaStatus Ok() { return {}; }
  static CudaStatus Error(CudaErrc c, std::string m) { return {c, std::move(m)}; }
};

// ---- detection -----------------------------------------------------------------------------------

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  uint64_t totalMemory = 0;  // bytes (cudaDeviceProp::totalGlobalMem)
  int64_t freeMemory = -1;   // bytes (cudaMemGetInfo); -1 when not queried or the query failed
  int major = 0;             // compute capability
  int minor = 0;
  std::string ComputeCapability() const { return std::to_string(major) + "." + std::to_string(minor); }
};

struct CudaInfo {
  bool compiled = false;     // built with MLOS_WITH_CUDA
  bool available = false;    // compiled, a driver, and at least one device
  std::string reason;        // why not available; empty when available
  int errorNumber = 0;       // the cudaError_t that made it unavailable; 0 when none
  std::string errorName;     // its cudaGetErrorName; empty when none
  int runtimeVersion = 0;    // cudaRuntimeGetVersion, e.g. 13000; 0 when not compiled
  int driverVersion = 0;     // cudaDriverGetVersion; 0 when no driver is loaded
  int deviceCount = 0;
  std::vector<CudaDeviceInfo> devices;
};

class CudaRuntime {
 public:
  // True when this build calls the CUDA runtime (MLOS_WITH_CUDA).
  static bool Compiled();
  // Detection, done once per process (thread-safe); devices[i].freeMemory is -1 here.
  static const CudaInfo& Probe();
  // Probe() plus, when withFreeMemory, each device's free memory now (cudaMemGetInfo, which
  // creates the device's primary context if the process has none yet).
  static CudaInfo Query(bool withFreeMemory);
  // Ok when available, else kUnavailable with Probe().reason.
  static CudaStatus Available();
  // True for the cudaError_t values that mean "no GPU here" rather than "a call failed":
  // cudaErrorInsufficientDriver, cudaErrorNoDevice, cudaErrorStubLibrary, cudaErrorNotPermitted...
  // (see cuda_alloc.cc). Always false when not compiled.
  static bool IsNoGpuError(int cudaError);
  // "cudaErrorInsufficientDriver (35)"; "cudaError 35" when not compiled.
  static std::string ErrorName(int cudaError);
  // "<call> failed: cudaErrorX (N): <cudaGetErrorString>"
  static std::string CallFailed(const char* call, int cudaError);
};

// ---- the caching allocator ----------------------------------------------------------------------

struct CudaBlock {
  void* ptr = nullptr;     // device (or pinned host) pointer; 256-byte aligned
  uint64_t size = 0;       // bytes reserved: the size class
  uint64_t requested = 0;  // bytes asked for
  uint64_t id = 0;         // allocation id, unique within the allocator; 0 = none
};

struct CudaAllocatorOptions {
  uint64_t limitBytes = 0;  // most bytes held from CUDA (live + cached); 0 = no limit
};

// Statistics. All sizes in bytes.
//   allocatedBytes      size classes of live blocks
//   requestedBytes      bytes asked for by live blocks
//   cachedBytes         free blocks held in the cache
//   reservedBytes       allocated + cached: what the allocator holds from CUDA
//   peakAllocatedBytes  largest allocatedBytes seen
//   peakReservedBytes   largest reservedBytes seen
//   liveBlocks / cachedBlocks
//   allocCount / freeCount   successful Alloc / Free calls
//   cacheHits / cacheMisses  Allocs served from the cache / that went to CUDA
//   backendAllocs / backendFrees  cudaMalloc (cudaHostAlloc) / cudaFree (cudaFreeHost) calls
//                                 that succeeded
//   oomCount            Allocs that failed with CUDA_OOM
//   limitBytes          the limit (0 = none)
struct CudaAllocatorStats {
  uint64_t allocatedBytes = 0;
  uint64_t requestedBytes = 0;
  uint64_t cachedBytes = 0;
  uint64_t reservedBytes = 0;
  uint64_t peakAllocatedBytes = 0;
  uint64_t peakReservedBytes = 0;
  uint64_t liveBlocks = 0;
  uint64_t cachedBlocks = 0;
  uint64_t allocCount = 0;
  uint64_t freeCount = 0;
  uint64_t cacheHits = 0;
  uint64_t cacheMisses = 0;
  uint64_t backendAllocs = 0;
  uint64_t backendFrees = 0;
  uint64_t oomCount = 0;
  uint64_t limitBytes = 0;
};

class CachingAllocator {
 public:
  static constexpr uint64_t kSmallGranularity = 512;
  static constexpr uint64_t kSmallMax = uint64_t{1} << 20;       // 1 MiB
  static constexpr uint64_t kLargeGranularity = uint64_t{2} << 20;  // 2 MiB
  static constexpr uint64_t kMaxRequest = uint64_t{1} << 48;     // 256 TiB: larger is BAD_ARGUMENT

  // Where raw blocks come from: CUDA (the allocators below) or, in the tests, host memory.
  class Backend {
   public:
    virtual ~Backend() = default;
    // kOom when out of memory (the allocator then empties its cache and retries once); any other
    // failure is kFail. Called with the allocator's mutex held.
    virtual CudaStatus Allocate(uint64_t bytes, void** out) = 0;
    virtual CudaStatus Release(void* ptr) = 0;
    // For messages: "CUDA device 0", "pinned host memory".
    virtual std::string Describe() const = 0;
  };

  // The size class of a request (see the top of this file); 0 for 0 and for > kMaxRequest.
  static uint64_t RoundSize(uint64_t bytes);

  CachingAllocator(std::unique_ptr<Backend> backend, const CudaAllocatorOptions& options);
  ~CachingAllocator();  // releases every block, live ones too (errors ignored)
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // kBadArgument for 0 or > kMaxRequest; kOom; kFail.
  CudaStatus Alloc(uint64_t bytes, CudaBlock* out);
  // Returns the block to the cache if it is still allocation block.id; otherwise does nothing and
  // returns kBadArgument.
  CudaStatus Free(const CudaBlock& block);
  // The live block that starts at ptr, if any.
  bool Lookup(const void* ptr, CudaBlock* out) const;
  // True when block is live (same ptr and id) and [offset, offset + bytes) lies within its
  // requested bytes.
  bool Covers(const CudaBlock& block, uint64_t offset, uint64_t bytes) const;
  // Releases every cached block; *released (optional) gets the bytes given back. The first
  // backend failure is returned (the other blocks are still released).
  CudaStatus EmptyCache(uint64_t* released = nullptr);
  CudaAllocatorStats Stats() const;
  uint64_t limitBytes() const { return limit_; }
  std::string Describe() const { return backend_->Describe(); }

 private:
  // Releases cached blocks, largest first, until reserved_ + need <= limit (need = 0 and
  // limit = 0: everything). Returns the first failure.
  CudaStatus ReleaseCachedLocked(uint64_t need, uint64_t limit);
  void NotePeaksLocked();

  std::unique_ptr<Backend> backend_;
  const uint64_t limit_;

  mutable std::mutex mu_;
  std::map<uint64_t, std::vector<void*>> cache_;  // size class -> free blocks
  struct Live {
    uint64_t size;
    uint64_t requested;
    uint64_t id;
  };
  std::unordered_map<const void*, Live> live_;
  uint64_t next_id_ = 1;
  CudaAllocatorStats stats_;
};

// ---- the CUDA allocators --------------------------------------------------------------------------

// Device memory of one GPU, cached (cudaMalloc / cudaFree).
class CudaDeviceAllocator {
 public:
  // kUnavailable when there is no GPU (or no CUDA in this build); kBadArgument for a device index
  // out of range; kFail when the device cannot be selected.
  static CudaStatus Create(int device, const CudaAllocatorOptions& options,
                           std::shared_ptr<CudaDeviceAllocator>* out);

  int device() const { return device_; }
  CudaStatus Alloc(uint64_t bytes, CudaBlock* out) { return cache_.Alloc(bytes, out); }
  CudaStatus Free(const CudaBlock& block) { return cache_.Free(block); }
  bool Lookup(const void* ptr, CudaBlock* out) const { return cache_.Lookup(ptr, out); }
  CudaStatus EmptyCache(uint64_t* released = nullptr) { return cache_.EmptyCache(released); }
  CudaAllocatorStats Stats() const { return cache_.Stats(); }
  uint64_t limitBytes() const { return cache_.limitBytes(); }

  // Synchronous copies (cudaMemcpy) between host memory and [offset, offset + bytes) of a live
  // block; kBadArgument when the block is not live or the range is outside its requested bytes.
  CudaStatus CopyToDevice(const CudaBlock& dst, uint64_t offset, const void* src, uint64_t bytes);
  CudaStatus CopyFromDevice(const CudaBlock& src, uint64_t offset, void* dst, uint64_t bytes);

 private:
  CudaDeviceAllocator(int device, const CudaAllocatorOptions& options);
  // Both copies: `host` is read when toDevice, written otherwise.
  CudaStatus Copy(const CudaBlock& block, uint64_t offset, void* host, uint64_t bytes, bool toDevice);
  int device_;
  CachingAllocator cache_;
};

// Page-locked host memory, cached (cudaHostAlloc(cudaHostAllocPortable) / cudaFreeHost): staging
// buffers that cudaMemcpy(Async) moves at full speed. Needs a GPU like device memory does; without
// one it is kUnavailable and callers use the CPU pool (ShmPool) instead.
class PinnedHostAllocator {
 public:
  static CudaStatus Create(const CudaAllocatorOptions& options,
                           std::shared_ptr<PinnedHostAllocator>* out);

  CudaStatus Alloc(uint64_t bytes, CudaBlock* out) { return cache_.Alloc(bytes, out); }
  CudaStatus Free(const CudaBlock& block) { return cache_.Free(block); }
  bool Lookup(const void* ptr, CudaBlock* out) const { return cache_.Lookup(ptr, out); }
  CudaStatus EmptyCache(uint64_t* released = nullptr) { return cache_.EmptyCache(released); }
  CudaAllocatorStats Stats() const { return cache_.Stats(); }
  uint64_t limitBytes() const { return cache_.limitBytes(); }

 private:
  explicit PinnedHostAllocator(const CudaAllocatorOptions& options);
  CachingAllocator cache_;
};

}  // namespace mlos
