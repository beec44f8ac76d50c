// Unit tests for the CUDA allocators (native/src/cuda/cuda_alloc.h). Built by cmake-js into
// build/native-tests/ and run by scripts/run-tests.js after the node tests.
//
// Three kinds of test:
//   - detection and refusal, which run everywhere (no GPU here: they check the reason);
//   - the caching logic over a host-memory backend, which runs everywhere (and under ASan/UBSan);
//   - gpu_* tests on real CUDA memory, which print "SKIP <name>: <reason>" and pass where there is
//     no GPU (or the build has no CUDA).
#include "cuda/cuda_alloc.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <vector>

#if defined(MLOS_WITH_CUDA) && MLOS_WITH_CUDA
#include <cuda_runtime_api.h>
#define MLOS_TEST_CUDA 1
#else
#define MLOS_TEST_CUDA 0
#endif

#include "test_harness.h"

#if defined(__SANITIZE_ADDRESS__)
#define MLOS_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MLOS_TEST_ASAN 1
#endif
#endif
#if defined(MLOS_TEST_ASAN)
// The CUDA driver maps memory where ASan's shadow gap would be; allow it (it is the documented
// setting for CUDA under ASan). Leaks inside the driver library are not ours.
extern "C" const char* __asan_default_options() { return "protect_shadow_gap=0"; }
extern "C" const char* __lsan_default_suppressions() { return "leak:libcuda.so\nleak:libnvidia-\n"; }
#endif

using mlos::CachingAllocator;
using mlos::CudaAllocatorOptions;
using mlos::CudaAllocatorStats;
using mlos::CudaBlock;
using mlos::CudaDeviceAllocator;
using mlos::CudaErrc;
using mlos::CudaRuntime;
using mlos::CudaStatus;
using mlos::PinnedHostAllocator;

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

// Host memory standing in for CUDA, with a capacity (to make out-of-memory happen) and counts.
class HostBackend : public CachingAllocator::Backend {
 public:
  struct Counters {
    std::atomic<uint64_t> allocs{0};
    std::atomic<uint64_t> releases{0};
    std::atomic<int64_t> outstanding{0};  // bytes held
    std::atomic<bool> failRelease{false};
  };
  HostBackend(Counters* c, uint64_t capacity) : c_(c), capacity_(capacity) {}
  CudaStatus Allocate(uint64_t bytes, void** out) override {
    if (capacity_ != 0 && static_cast<uint64_t>(c_->outstanding.load()) + bytes > capacity_) {
      return CudaStatus::Error(CudaErrc::kOom, "host test backend: capacity reached");
    }
    void* p = std::aligned_alloc(256, bytes);
    if (p == nullptr) return CudaStatus::Error(CudaErrc::kOom, "aligned_alloc failed");
    std::memset(p, 0xab, std::min<uint64_t>(bytes, 64));
    sizes_[p] = bytes;
    c_->allocs += 1;
    c_->outstanding += static_cast<int64_t>(bytes);
    *out = p;
    return CudaStatus::Ok();
  }
  CudaStatus Release(void* ptr) override {
    auto it = sizes_.find(ptr);
    if (it == sizes_.end()) return CudaStatus::Error(CudaErrc::kFail, "release of unknown block");
    c_->outstanding -= static_cast<int64_t>(it->second);
    sizes_.erase(it);
    std::free(ptr);
    c_->releases += 1;
    if (c_->failRelease) return CudaStatus::Error(CudaErrc::kFail, "cudaFree failed: injected");
    return CudaStatus::Ok();
  }
  std::string Describe() const override { return "host test backend"; }

 private:
  Counters* c_;
  uint64_t capacity_;
  std::map<void*, uint64_t> sizes_;  // guarded by the allocator's mutex (called with it held)
};

std::unique_ptr<CachingAllocator> MakeHost(HostBackend::Counters* c, uint64_t limit = 0,
                                           uint64_t capacity = 0) {
  CudaAllocatorOptions o;
  o.limitBytes = limit;
  return std::make_unique<CachingAllocator>(std::make_unique<HostBackend>(c, capacity), o);
}

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// True (after printing "SKIP <name>: <reason>") when the GPU tests cannot run here.
bool SkipWithoutGpu(const char* name) {
  const mlos::CudaInfo& info = CudaRuntime::Probe();
  if (info.available) return false;
  std::printf("    SKIP %s: %s\n", name, info.reason.c_str());
  std::fflush(stdout);
  return true;
}

}  // namespace

// ---- size classes -----------------------------------------------------------------------------

TEST(size_classes_round_to_512_bytes_then_2_mib) {
  CHECK_EQ(CachingAllocator::RoundSize(0), 0u);
  CHECK_EQ(CachingAllocator::RoundSize(1), 512u);
  CHECK_EQ(CachingAllocator::RoundSize(512), 512u);
  CHECK_EQ(CachingAllocator::RoundSize(513), 1024u);
  CHECK_EQ(CachingAllocator::RoundSize(100000), 100352u);  // 196 x 512
  CHECK_EQ(CachingAllocator::RoundSize(kMiB - 1), kMiB);
  CHECK_EQ(CachingAllocator::RoundSize(kMiB), kMiB);
  CHECK_EQ(CachingAllocator::RoundSize(kMiB + 1), 2 * kMiB);
  CHECK_EQ(CachingAllocator::RoundSize(2 * kMiB), 2 * kMiB);
  CHECK_EQ(CachingAllocator::RoundSize(2 * kMiB + 1), 4 * kMiB);
  CHECK_EQ(CachingAllocator::RoundSize(3 * kMiB), 4 * kMiB);
  CHECK_EQ(CachingAllocator::RoundSize(CachingAllocator::kMaxRequest), CachingAllocator::kMaxRequest);
  CHECK_EQ(CachingAllocator::RoundSize(CachingAllocator::kMaxRequest + 1), 0u);
  CHECK_EQ(CachingAllocator::RoundSize(~uint64_t{0}), 0u);

  HostBackend::Counters c;
  auto a = MakeHost(&c);
  CudaBlock b;
  CHECK(a->Alloc(0, &b).code == CudaErrc::kBadArgument);
  CHECK(a->Alloc(CachingAllocator::kMaxRequest + 1, &b).code == CudaErrc::kBadArgument);
  for (uint64_t bytes : {1ull, 511ull, 700ull, 1ull << 20, (1ull << 20) + 1, 5ull << 20}) {
    REQUIRE(a->Alloc(bytes, &b).ok());
    CHECK_EQ(b.size, CachingAllocator::RoundSize(bytes));
    CHECK_EQ(b.requested, bytes);
    CHECK_EQ(reinterpret_cast<uintptr_t>(b.ptr) % 256, 0u);
    REQUIRE(a->Free(b).ok());
  }
  CHECK_EQ(std::string(mlos::CudaErrcCode(CudaErrc::kUnavailable)), std::string("CUDA_UNAVAILABLE"));
  CHECK_EQ(std::string(mlos::CudaErrcCode(CudaErrc::kFail)), std::string("CUDA_FAIL"));
  CHECK_EQ(std::string(mlos::CudaErrcCode(CudaErrc::kOom)), std::string("CUDA_OOM"));
  CHECK_EQ(std::string(mlos::CudaErrcCode(CudaErrc::kBadArgument)), std::string("BAD_ARGUMENT"));
}

// ---- detection --------------------------------------------------------------------------------

TEST(detection_reports_devices_or_why_there_are_none) {
  const mlos::CudaInfo& info = CudaRuntime::Probe();
  CHECK_EQ(info.compiled, CudaRuntime::Compiled());
  CHECK_EQ(&info, &CudaRuntime::Probe());  // once per process
  std::printf("    compiled=%d available=%d devices=%d runtime=%d driver=%d reason=\"%s\"\n",
              info.compiled, info.available, info.deviceCount, info.runtimeVersion,
              info.driverVersion, info.reason.c_str());
  if (info.available) {
    CHECK(info.reason.empty());
    CHECK(info.deviceCount > 0);
    CHECK_EQ(info.devices.size(), static_cast<size_t>(info.deviceCount));
    CHECK(CudaRuntime::Available().ok());
    mlos::CudaInfo now = CudaRuntime::Query(true);
    for (int i = 0; i < info.deviceCount; ++i) {
      const auto& d = now.devices[static_cast<size_t>(i)];
      std::printf("    device %d: %s, %llu bytes, %lld free, sm %s\n", d.index, d.name.c_str(),
                  static_cast<unsigned long long>(d.totalMemory),
                  static_cast<long long>(d.freeMemory), d.ComputeCapability().c_str());
      CHECK_EQ(d.index, i);
      CHECK(!d.name.empty());
      CHECK(d.totalMemory > 0);
      CHECK(d.freeMemory > 0 && static_cast<uint64_t>(d.freeMemory) <= d.totalMemory);
      CHECK(d.major >= 1);
    }
    return;
  }
  // No GPU: a reason, no devices, and Available() says the same.
  CHECK(!info.reason.empty());
  CHECK_EQ(info.deviceCount, 0);
  CHECK(info.devices.empty());
  CudaStatus st = CudaRuntime::Available();
  CHECK(st.code == CudaErrc::kUnavailable);
  CHECK_EQ(st.message, info.reason);
  CHECK(CudaRuntime::Query(true).devices.empty());
  if (info.compiled) {
    CHECK(Contains(info.reason, "no GPU"));
    CHECK(info.runtimeVersion > 0);
    if (info.errorNumber != 0) {
      // e.g. "no GPU: cudaGetDeviceCount failed: cudaErrorInsufficientDriver (35): CUDA driver
      // version is insufficient for CUDA runtime version (no NVIDIA driver is loaded, ...)"
      CHECK(Contains(info.reason, "cudaGetDeviceCount failed"));
      CHECK(Contains(info.reason, info.errorName + " (" + std::to_string(info.errorNumber) + ")"));
      CHECK(CudaRuntime::IsNoGpuError(info.errorNumber));
    }
    if (info.errorNumber == 35) {
      CHECK_EQ(info.errorName, std::string("cudaErrorInsufficientDriver"));
      CHECK(Contains(info.reason, "cudaErrorInsufficientDriver (35)"));
      CHECK_EQ(info.driverVersion, 0);
    }
  } else {
    CHECK(Contains(info.reason, "compiled without CUDA"));
    CHECK_EQ(info.runtimeVersion, 0);
    CHECK_EQ(info.errorNumber, 0);
  }
}

TEST(no_gpu_errors_are_told_apart_from_failures) {
  if (!CudaRuntime::Compiled()) {
    CHECK(!CudaRuntime::IsNoGpuError(35));
    CHECK_EQ(CudaRuntime::ErrorName(35), std::string("cudaError 35"));
    std::printf("    SKIP no_gpu_errors_are_told_apart_from_failures: %s\n",
                CudaRuntime::Probe().reason.c_str());
    return;
  }
  CHECK(CudaRuntime::IsNoGpuError(35));   // cudaErrorInsufficientDriver
  CHECK(CudaRuntime::IsNoGpuError(100));  // cudaErrorNoDevice
  CHECK(CudaRuntime::IsNoGpuError(34));   // cudaErrorStubLibrary
  CHECK(!CudaRuntime::IsNoGpuError(0));
  CHECK(!CudaRuntime::IsNoGpuError(2));   // cudaErrorMemoryAllocation
  CHECK(!CudaRuntime::IsNoGpuError(1));   // cudaErrorInvalidValue
  CHECK_EQ(CudaRuntime::ErrorName(35), std::string("cudaErrorInsufficientDriver (35)"));
  CHECK_EQ(CudaRuntime::ErrorName(2), std::string("cudaErrorMemoryAllocation (2)"));
  const std::string failed = CudaRuntime::CallFailed("cudaMalloc", 2);
  CHECK(Contains(failed, "cudaMalloc failed: cudaErrorMemoryAllocation (2): "));
}

TEST(allocators_refuse_with_cuda_unavailable_when_there_is_no_gpu) {
  const mlos::CudaInfo& info = CudaRuntime::Probe();
  std::shared_ptr<CudaDeviceAllocator> dev;
  std::shared_ptr<PinnedHostAllocator> pinned;
  if (info.available) {
    // With a GPU: a device out of range is a bad argument, and nothing is created.
    CudaStatus st = CudaDeviceAllocator::Create(info.deviceCount, {}, &dev);
    CHECK(st.code == CudaErrc::kBadArgument);
    CHECK(Contains(st.message, "out of range"));
    CHECK(CudaDeviceAllocator::Create(-1, {}, &dev).code == CudaErrc::kBadArgument);
    CHECK(dev == nullptr);
    std::printf("    SKIP allocators_refuse_with_cuda_unavailable_when_there_is_no_gpu: there is a GPU\n");
    return;
  }
  for (int device : {0, 1, -1}) {
    CudaStatus st = CudaDeviceAllocator::Create(device, {}, &dev);
    CHECK(st.code == CudaErrc::kUnavailable);
    CHECK_EQ(st.message, info.reason);
    CHECK(dev == nullptr);
  }
  CudaAllocatorOptions limited;
  limited.limitBytes = 1 << 20;
  CudaStatus st = PinnedHostAllocator::Create(limited, &pinned);
  CHECK(st.code == CudaErrc::kUnavailable);
  CHECK_EQ(std::string(mlos::CudaErrcCode(st.code)), std::string("CUDA_UNAVAILABLE"));
  CHECK_EQ(st.message, info.reason);
  CHECK(pinned == nullptr);
}

TEST(compiled_without_cuda_says_so) {
  if (CudaRuntime::Compiled()) {
    std::printf("    SKIP compiled_without_cuda_says_so: this build has CUDA (MLOS_WITH_CUDA)\n");
    return;
  }
  const mlos::CudaInfo& info = CudaRuntime::Probe();
  CHECK(!info.compiled);
  CHECK(!info.available);
  CHECK(Contains(info.reason, "compiled without CUDA"));
  std::shared_ptr<CudaDeviceAllocator> dev;
  CHECK(CudaDeviceAllocator::Create(0, {}, &dev).code == CudaErrc::kUnavailable);
}

// ---- the caching logic, over host memory ------------------------------------------------------

TEST(freed_blocks_are_reused_by_requests_of_their_class) {
  HostBackend::Counters c;
  auto a = MakeHost(&c);
  CudaBlock x, y, z;
  REQUIRE(a->Alloc(1000, &x).ok());  // class 1024
  REQUIRE(a->Alloc(3 * kMiB, &y).ok());  // class 4 MiB
  CHECK_EQ(c.allocs.load(), 2u);
  REQUIRE(a->Free(x).ok());
  REQUIRE(a->Alloc(600, &z).ok());  // class 1024 again: the same block, from the cache
  CHECK_EQ(z.ptr, x.ptr);
  CHECK(z.id != x.id);
  CHECK_EQ(c.allocs.load(), 2u);
  // A request of another class does not take it.
  REQUIRE(a->Free(z).ok());
  CudaBlock w;
  REQUIRE(a->Alloc(1500, &w).ok());  // class 1536
  CHECK(w.ptr != x.ptr);
  CHECK_EQ(c.allocs.load(), 3u);
  // Large blocks are reused by class too.
  REQUIRE(a->Free(y).ok());
  CudaBlock y2;
  REQUIRE(a->Alloc(4 * kMiB, &y2).ok());
  CHECK_EQ(y2.ptr, y.ptr);

  CudaAllocatorStats s = a->Stats();
  CHECK_EQ(s.allocCount, 5u);
  CHECK_EQ(s.freeCount, 3u);
  CHECK_EQ(s.cacheHits, 2u);
  CHECK_EQ(s.cacheMisses, 3u);
  CHECK_EQ(s.backendAllocs, 3u);
  CHECK_EQ(s.liveBlocks, 2u);  // w, y2
  CHECK_EQ(s.allocatedBytes, 1536u + 4 * kMiB);
  CHECK_EQ(s.requestedBytes, 1500u + 4 * kMiB);
  CHECK_EQ(s.cachedBlocks, 1u);  // the 1024 block
  CHECK_EQ(s.cachedBytes, 1024u);
  CHECK_EQ(s.reservedBytes, s.allocatedBytes + s.cachedBytes);
  CHECK_EQ(s.peakAllocatedBytes, 1536u + 4 * kMiB);  // w and y live together
  CHECK_EQ(s.peakReservedBytes, 1024u + 1536u + 4 * kMiB);
  CHECK_EQ(s.limitBytes, 0u);
  CHECK_EQ(static_cast<uint64_t>(c.outstanding.load()), s.reservedBytes);
}

TEST(stale_and_foreign_blocks_are_rejected) {
  HostBackend::Counters c;
  auto a = MakeHost(&c);
  auto other = MakeHost(&c);
  CudaBlock x, again, mine;
  REQUIRE(a->Alloc(100, &x).ok());
  REQUIRE(a->Free(x).ok());
  CudaStatus st = a->Free(x);  // double free
  CHECK(st.code == CudaErrc::kBadArgument);
  CHECK(Contains(st.message, "not a live block"));
  REQUIRE(a->Alloc(100, &again).ok());
  CHECK_EQ(again.ptr, x.ptr);
  CHECK(a->Free(x).code == CudaErrc::kBadArgument);  // stale id: the reused block stays live
  CHECK_EQ(a->Stats().liveBlocks, 1u);
  REQUIRE(other->Alloc(100, &mine).ok());
  CHECK(a->Free(mine).code == CudaErrc::kBadArgument);  // another allocator's block
  CudaBlock looked;
  CHECK(a->Lookup(again.ptr, &looked));
  CHECK_EQ(looked.id, again.id);
  CHECK_EQ(looked.requested, 100u);
  CHECK(!a->Lookup(mine.ptr, &looked));
  // Covers: live, same id, range within the requested bytes.
  CHECK(a->Covers(again, 0, 100));
  CHECK(a->Covers(again, 100, 0));
  CHECK(a->Covers(again, 40, 60));
  CHECK(!a->Covers(again, 40, 61));
  CHECK(!a->Covers(again, 101, 0));
  CHECK(!a->Covers(again, 1, ~uint64_t{0}));
  CHECK(!a->Covers(x, 0, 1));
  REQUIRE(a->Free(again).ok());
  CHECK(!a->Covers(again, 0, 1));
  REQUIRE(other->Free(mine).ok());
}

TEST(empty_cache_gives_cached_blocks_back) {
  HostBackend::Counters c;
  auto a = MakeHost(&c);
  std::vector<CudaBlock> blocks(6);
  for (size_t i = 0; i < blocks.size(); ++i) REQUIRE(a->Alloc((i + 1) * 700, &blocks[i]).ok());
  for (size_t i = 0; i < 4; ++i) REQUIRE(a->Free(blocks[i]).ok());
  CudaAllocatorStats s = a->Stats();
  CHECK_EQ(s.cachedBlocks, 4u);
  const uint64_t cached = s.cachedBytes;
  uint64_t released = 0;
  REQUIRE(a->EmptyCache(&released).ok());
  CHECK_EQ(released, cached);
  s = a->Stats();
  CHECK_EQ(s.cachedBytes, 0u);
  CHECK_EQ(s.cachedBlocks, 0u);
  CHECK_EQ(s.backendFrees, 4u);
  CHECK_EQ(s.liveBlocks, 2u);
  CHECK_EQ(c.releases.load(), 4u);
  CHECK_EQ(static_cast<uint64_t>(c.outstanding.load()), s.allocatedBytes);
  // The next request of a released class goes to the backend again.
  CudaBlock again;
  REQUIRE(a->Alloc(700, &again).ok());
  CHECK_EQ(a->Stats().cacheMisses, 7u);
  REQUIRE(a->EmptyCache().ok());  // nothing cached: a no-op
  CHECK_EQ(c.releases.load(), 4u);
  // A failing release is reported, and the block is still dropped from the cache.
  REQUIRE(a->Free(again).ok());
  c.failRelease = true;
  CudaStatus st = a->EmptyCache(&released);
  c.failRelease = false;
  CHECK(st.code == CudaErrc::kFail);
  CHECK(Contains(st.message, "cudaFree failed"));
  CHECK_EQ(a->Stats().cachedBytes, 0u);
}

TEST(the_limit_releases_the_cache_then_reports_cuda_oom) {
  HostBackend::Counters c;
  auto a = MakeHost(&c, /*limit=*/8 * kMiB);
  CHECK_EQ(a->limitBytes(), 8 * kMiB);
  CudaBlock b4, b2, b2b, b1;
  REQUIRE(a->Alloc(4 * kMiB, &b4).ok());
  REQUIRE(a->Alloc(2 * kMiB, &b2).ok());
  REQUIRE(a->Alloc(2 * kMiB, &b2b).ok());  // 8 MiB reserved: at the limit
  CudaStatus st = a->Alloc(1, &b1);
  CHECK(st.code == CudaErrc::kOom);
  CHECK(Contains(st.message, "limit"));
  CHECK_EQ(a->Stats().oomCount, 1u);
  // One request larger than the limit is CUDA_OOM too, not a crash or a bad argument.
  CHECK(a->Alloc(9 * kMiB, &b1).code == CudaErrc::kOom);
  // With the 4 MiB block cached, a 512 B request (another class) fits under the limit only once
  // cached memory is released: the allocator releases it instead of failing.
  REQUIRE(a->Free(b4).ok());
  CHECK_EQ(a->Stats().reservedBytes, 8 * kMiB);
  REQUIRE(a->Alloc(1, &b1).ok());
  CudaAllocatorStats s = a->Stats();
  CHECK_EQ(s.cachedBytes, 0u);  // the 4 MiB block was given back
  CHECK_EQ(s.backendFrees, 1u);
  CHECK(s.reservedBytes <= 8 * kMiB);
  CHECK(s.peakReservedBytes <= 8 * kMiB);
  CHECK_EQ(s.oomCount, 2u);
  // The same class is served from the cache without touching the limit.
  REQUIRE(a->Free(b2).ok());
  REQUIRE(a->Alloc(2 * kMiB, &b2).ok());
  CHECK_EQ(a->Stats().cacheHits, 1u);
  REQUIRE(a->Free(b2).ok());
  REQUIRE(a->Free(b2b).ok());
  REQUIRE(a->Free(b1).ok());
}

TEST(backend_oom_empties_the_cache_and_retries_once) {
  HostBackend::Counters c;
  auto a = MakeHost(&c, /*limit=*/0, /*capacity=*/6 * kMiB);
  CudaBlock x, y, z;
  REQUIRE(a->Alloc(2 * kMiB, &x).ok());
  REQUIRE(a->Alloc(2 * kMiB, &y).ok());
  REQUIRE(a->Free(x).ok());
  REQUIRE(a->Free(y).ok());  // 4 MiB cached, 2 MiB left in the "device"
  REQUIRE(a->Alloc(4 * kMiB, &z).ok());  // does not fit until the cache is released
  CudaAllocatorStats s = a->Stats();
  CHECK_EQ(s.cachedBytes, 0u);
  CHECK_EQ(s.backendFrees, 2u);
  CHECK_EQ(s.oomCount, 0u);
  CudaBlock big;
  CudaStatus st = a->Alloc(4 * kMiB, &big);  // really out of memory
  CHECK(st.code == CudaErrc::kOom);
  CHECK(Contains(st.message, "host test backend: out of memory allocating 4194304 bytes"));
  CHECK(Contains(st.message, "capacity reached"));
  CHECK_EQ(a->Stats().oomCount, 1u);
  REQUIRE(a->Free(z).ok());
  REQUIRE(a->Alloc(4 * kMiB, &big).ok());  // and it recovers
  REQUIRE(a->Free(big).ok());
}

TEST(destruction_releases_every_block) {
  HostBackend::Counters c;
  {
    auto a = MakeHost(&c);
    CudaBlock x, y;
    REQUIRE(a->Alloc(10, &x).ok());
    REQUIRE(a->Alloc(3 * kMiB, &y).ok());
    REQUIRE(a->Free(x).ok());
    CHECK(c.outstanding.load() > 0);
  }
  CHECK_EQ(c.outstanding.load(), 0);
  CHECK_EQ(c.allocs.load(), c.releases.load());
}

TEST(many_threads_share_one_allocator) {
  HostBackend::Counters c;
  auto a = MakeHost(&c, /*limit=*/64 * kMiB);
  constexpr int kThreads = 8;
  constexpr int kRounds = 2000;
  std::atomic<int> errors{0};
  std::atomic<int> ooms{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1u);
      std::uniform_int_distribution<uint64_t> small(1, 64 * 1024);
      std::vector<CudaBlock> held;
      for (int r = 0; r < kRounds; ++r) {
        const bool large = rng() % 16 == 0;
        const uint64_t bytes = large ? (1 + rng() % 3) * kMiB : small(rng);
        CudaBlock b;
        CudaStatus st = a->Alloc(bytes, &b);
        if (st.code == CudaErrc::kOom) {
          ++ooms;
        } else if (!st.ok()) {
          ++errors;
        } else {
          // The block is ours alone: write a thread-specific byte at both ends and read it back.
          auto* p = static_cast<uint8_t*>(b.ptr);
          p[0] = static_cast<uint8_t>(t);
          p[bytes - 1] = static_cast<uint8_t>(t);
          held.push_back(b);
        }
        if (held.size() > 8 || (rng() % 3 == 0 && !held.empty())) {
          const size_t i = rng() % held.size();
          const auto* p = static_cast<const uint8_t*>(held[i].ptr);
          if (p[0] != t || p[held[i].requested - 1] != t) ++errors;
          if (!a->Free(held[i]).ok()) ++errors;
          held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
        }
      }
      for (auto& b : held) {
        if (!a->Free(b).ok()) ++errors;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK_EQ(errors.load(), 0);
  CudaAllocatorStats s = a->Stats();
  CHECK_EQ(s.liveBlocks, 0u);
  CHECK_EQ(s.allocatedBytes, 0u);
  CHECK_EQ(s.allocCount, s.freeCount);
  CHECK_EQ(s.allocCount + static_cast<uint64_t>(ooms.load()),
           static_cast<uint64_t>(kThreads) * kRounds);
  CHECK(s.cacheHits > 0);
  CHECK(s.peakReservedBytes <= 64 * kMiB);
  CHECK_EQ(static_cast<uint64_t>(c.outstanding.load()), s.cachedBytes);
  REQUIRE(a->EmptyCache().ok());
  CHECK_EQ(c.outstanding.load(), 0);
}

// ---- on a GPU -----------------------------------------------------------------------------------

TEST(gpu_device_blocks_are_cached_and_reused) {
  if (SkipWithoutGpu("gpu_device_blocks_are_cached_and_reused")) return;
  std::shared_ptr<CudaDeviceAllocator> a;
  REQUIRE(CudaDeviceAllocator::Create(0, {}, &a).ok());
  CHECK_EQ(a->device(), 0);
  CudaBlock x, y;
  REQUIRE(a->Alloc(1000, &x).ok());
  CHECK(x.ptr != nullptr);
  CHECK_EQ(reinterpret_cast<uintptr_t>(x.ptr) % 256, 0u);
  REQUIRE(a->Free(x).ok());
  REQUIRE(a->Alloc(900, &y).ok());
  CHECK_EQ(y.ptr, x.ptr);
  CudaAllocatorStats s = a->Stats();
  CHECK_EQ(s.cacheHits, 1u);
  CHECK_EQ(s.backendAllocs, 1u);
  // Bytes round-trip through the block.
  std::vector<uint8_t> in(900), out(900, 0);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i * 7 + 3);
  REQUIRE(a->CopyToDevice(y, 0, in.data(), in.size()).ok());
  REQUIRE(a->CopyFromDevice(y, 0, out.data(), out.size()).ok());
  CHECK(in == out);
  REQUIRE(a->CopyFromDevice(y, 100, out.data(), 50).ok());
  CHECK(std::memcmp(out.data(), in.data() + 100, 50) == 0);
  CHECK(a->CopyToDevice(y, 1, in.data(), 900).code == CudaErrc::kBadArgument);
  CHECK(a->CopyFromDevice(x, 0, out.data(), 1).code == CudaErrc::kBadArgument);  // stale id
  REQUIRE(a->Free(y).ok());
  CHECK(a->CopyToDevice(y, 0, in.data(), 1).code == CudaErrc::kBadArgument);  // freed
#if MLOS_TEST_CUDA
  // An allocator on another device selects it around each call and restores the caller's.
  const int last = CudaRuntime::Probe().deviceCount - 1;
  if (last > 0) {
    std::shared_ptr<CudaDeviceAllocator> other;
    REQUIRE(CudaDeviceAllocator::Create(last, {}, &other).ok());
    REQUIRE(cudaSetDevice(0) == cudaSuccess);
    CudaBlock o;
    REQUIRE(other->Alloc(900, &o).ok());
    cudaPointerAttributes attr{};
    REQUIRE(cudaPointerGetAttributes(&attr, o.ptr) == cudaSuccess);
    CHECK(attr.type == cudaMemoryTypeDevice);
    CHECK_EQ(attr.device, last);
    REQUIRE(other->CopyToDevice(o, 0, in.data(), in.size()).ok());
    std::fill(out.begin(), out.end(), 0);
    REQUIRE(other->CopyFromDevice(o, 0, out.data(), out.size()).ok());
    CHECK(in == out);
    REQUIRE(other->Free(o).ok());
    REQUIRE(other->EmptyCache().ok());
    int current = -1;
    REQUIRE(cudaGetDevice(&current) == cudaSuccess);
    CHECK_EQ(current, 0);
  }
#endif
}

TEST(gpu_empty_cache_returns_device_memory) {
  if (SkipWithoutGpu("gpu_empty_cache_returns_device_memory")) return;
#if MLOS_TEST_CUDA
  std::shared_ptr<CudaDeviceAllocator> a;
  REQUIRE(CudaDeviceAllocator::Create(0, {}, &a).ok());
  REQUIRE(cudaSetDevice(0) == cudaSuccess);
  constexpr uint64_t kBig = 512 * kMiB;
  CudaBlock b;
  REQUIRE(a->Alloc(kBig, &b).ok());
  size_t free0 = 0, total = 0;
  REQUIRE(cudaMemGetInfo(&free0, &total) == cudaSuccess);
  REQUIRE(a->Free(b).ok());
  size_t free1 = 0;
  REQUIRE(cudaMemGetInfo(&free1, &total) == cudaSuccess);
  CHECK(free1 < free0 + kBig / 2);  // still held by the cache
  uint64_t released = 0;
  REQUIRE(a->EmptyCache(&released).ok());
  CHECK_EQ(released, kBig);
  size_t free2 = 0;
  REQUIRE(cudaMemGetInfo(&free2, &total) == cudaSuccess);
  CHECK(free2 >= free0 + kBig / 2);  // given back to CUDA
  CudaAllocatorStats s = a->Stats();
  CHECK_EQ(s.reservedBytes, 0u);
  CHECK_EQ(s.backendFrees, 1u);
#endif
}

TEST(gpu_limit_and_real_exhaustion_are_cuda_oom) {
  if (SkipWithoutGpu("gpu_limit_and_real_exhaustion_are_cuda_oom")) return;
  const mlos::CudaInfo& info = CudaRuntime::Probe();
  {
    CudaAllocatorOptions o;
    o.limitBytes = 16 * kMiB;
    std::shared_ptr<CudaDeviceAllocator> a;
    REQUIRE(CudaDeviceAllocator::Create(0, o, &a).ok());
    std::vector<CudaBlock> held;
    CudaBlock b;
    CudaStatus st;
    while ((st = a->Alloc(4 * kMiB, &b)).ok()) held.push_back(b);
    CHECK(st.code == CudaErrc::kOom);
    CHECK_EQ(held.size(), 4u);
    CHECK(Contains(st.message, "limit"));
    for (auto& h : held) REQUIRE(a->Free(h).ok());
  }
  {
    // More than the device has, in one request: cudaMalloc's own out-of-memory.
    std::shared_ptr<CudaDeviceAllocator> a;
    REQUIRE(CudaDeviceAllocator::Create(0, {}, &a).ok());
    CudaBlock b;
    CudaStatus st = a->Alloc(info.devices[0].totalMemory * 2, &b);
    CHECK(st.code == CudaErrc::kOom);
    CHECK(Contains(st.message, "cudaMalloc failed: cudaErrorMemoryAllocation (2)"));
    REQUIRE(a->Alloc(1 * kMiB, &b).ok());  // the allocator (and CUDA's error state) recovers
    REQUIRE(a->Free(b).ok());
  }
}

TEST(gpu_many_threads_allocate) {
  if (SkipWithoutGpu("gpu_many_threads_allocate")) return;
  std::shared_ptr<CudaDeviceAllocator> a;
  REQUIRE(CudaDeviceAllocator::Create(0, {}, &a).ok());
  constexpr int kThreads = 8;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) + 11u);
      std::vector<CudaBlock> held;
      std::vector<uint8_t> in(4096, static_cast<uint8_t>(t + 1)), out(4096);
      for (int r = 0; r < 300; ++r) {
        CudaBlock b;
        const uint64_t bytes = 4096 + (rng() % 8) * 4096 + (rng() % 8 == 0 ? 3 * kMiB : 0);
        if (!a->Alloc(bytes, &b).ok()) {
          ++errors;
          continue;
        }
        if (!a->CopyToDevice(b, 0, in.data(), in.size()).ok()) ++errors;
        held.push_back(b);
        if (held.size() > 4) {
          CudaBlock& f = held.front();
          if (!a->CopyFromDevice(f, 0, out.data(), out.size()).ok() || out != in) ++errors;
          if (!a->Free(f).ok()) ++errors;
          held.erase(held.begin());
        }
      }
      for (auto& b : held) {
        if (!a->Free(b).ok()) ++errors;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK_EQ(errors.load(), 0);
  CudaAllocatorStats s = a->Stats();
  CHECK_EQ(s.liveBlocks, 0u);
  CHECK(s.cacheHits > 0);
  REQUIRE(a->EmptyCache().ok());
  CHECK_EQ(a->Stats().reservedBytes, 0u);
}

TEST(gpu_pinned_host_memory_round_trips_through_cudamemcpy) {
  if (SkipWithoutGpu("gpu_pinned_host_memory_round_trips_through_cudamemcpy")) return;
#if MLOS_TEST_CUDA
  std::shared_ptr<PinnedHostAllocator> pinned;
  REQUIRE(PinnedHostAllocator::Create({}, &pinned).ok());
  std::shared_ptr<CudaDeviceAllocator> dev;
  REQUIRE(CudaDeviceAllocator::Create(0, {}, &dev).ok());
  constexpr uint64_t kBytes = 3 * kMiB + 5;
  CudaBlock h1, h2, d;
  REQUIRE(pinned->Alloc(kBytes, &h1).ok());
  REQUIRE(pinned->Alloc(kBytes, &h2).ok());
  REQUIRE(dev->Alloc(kBytes, &d).ok());
  // cudaHostAlloc'd memory is reported as host memory registered with CUDA.
  cudaPointerAttributes attr{};
  REQUIRE(cudaPointerGetAttributes(&attr, h1.ptr) == cudaSuccess);
  CHECK(attr.type == cudaMemoryTypeHost);
  auto* p1 = static_cast<uint8_t*>(h1.ptr);
  auto* p2 = static_cast<uint8_t*>(h2.ptr);
  for (uint64_t i = 0; i < kBytes; ++i) p1[i] = static_cast<uint8_t>(i * 31 + 7);
  std::memset(p2, 0, kBytes);
  REQUIRE(cudaSetDevice(0) == cudaSuccess);
  REQUIRE(cudaMemcpy(d.ptr, p1, kBytes, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(p2, d.ptr, kBytes, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(std::memcmp(p1, p2, kBytes) == 0);
  // Pinned blocks are cached like device blocks.
  REQUIRE(pinned->Free(h1).ok());
  CudaBlock h3;
  REQUIRE(pinned->Alloc(kBytes - 5, &h3).ok());
  CHECK_EQ(h3.ptr, h1.ptr);
  CudaAllocatorStats s = pinned->Stats();
  CHECK_EQ(s.cacheHits, 1u);
  CHECK_EQ(s.backendAllocs, 2u);
  REQUIRE(pinned->Free(h2).ok());
  REQUIRE(pinned->Free(h3).ok());
  uint64_t released = 0;
  REQUIRE(pinned->EmptyCache(&released).ok());
  CHECK_EQ(released, 2 * CachingAllocator::RoundSize(kBytes));
  REQUIRE(dev->Free(d).ok());
#endif
}

int main() { return mlos_test::RunAll(); }
