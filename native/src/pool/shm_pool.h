// ShmPool: a tensor pool in a named POSIX shared-memory segment.
//
// Plain C++17 (no Node-API here), so the unit tests link it on its own.
//
// Segment
//   Created with shm_open(O_CREAT | O_EXCL, 0600), sized with ftruncate (and, by default, reserved
//   with posix_fallocate so that a full /dev/shm is an error at creation, not a SIGBUS on first
//   touch), mapped read-write and shared. Default names are "/mlos-<pid>-<n>"; the pid in the name
//   is what lets a later process find segments left behind by a crashed one (CleanupStale).
//   Another process maps the same bytes with Attach(name); an attached pool is a view: it can read
//   and write any range but does not allocate (the allocator's book-keeping lives in the creating
//   process) and never unlinks the name.
//
// Allocator (owner pools only; all book-keeping is process-local, not in the segment)
//   - Small requests (<= kMaxClassBytes) are rounded up to a power of two from 64 B (size classes
//     64, 128, ..., 64 KiB). Freed small blocks go to a per-class free list and are reused as is.
//   - Large requests are rounded up to whole pages and placed page-aligned.
//   - Blocks come from one ordered map of free ranges (best fit, coalesced on free). When a request
//     does not fit, the per-class free lists are given back to the range map (coalescing) and the
//     request is retried once; only then is it SHM_EXHAUSTED.
//   - Every block starts on a 64-byte boundary of the mapping (the mapping is page-aligned).
//   - One mutex guards the allocator; Alloc/Free/Stats are safe from any thread.
//
// Slices are (offset, size) pairs plus an allocation id: Free(slice) frees only when the block at
// that offset is still the same allocation, so a late finaliser for an already freed (and perhaps
// reused) block is a harmless no-op.
//
// Lifetime
//   Close() unlinks the name (owner) and unmaps. The destructor calls Close(). Every segment this
//   process creates is also recorded in a process-wide registry that unlinks whatever is still
//   linked at exit (atexit); the registry entry records the creating pid, so a fork()ed child that
//   exits does not unlink its parent's segments. SIGKILL, or a signal that kills the process
//   without running exit handlers, leaves the segment behind: CleanupStale() (run automatically
//   when an owner pool is created) unlinks /dev/shm/mlos-<pid>-* whose pid no longer exists.
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

// Stable error codes; the N-API layer turns them into the JS `code` property.
enum class ShmErrc {
  kOk = 0,
  kExhausted,    // SHM_EXHAUSTED: no free range large enough
  kFail,         // SHM_FAIL: a system call failed (errno text in the message)
  kBadArgument,  // BAD_ARGUMENT: a size, name, offset or slice that is not valid for this pool
  kClosed,       // CLOSED: the pool was closed
};

const char* ShmErrcCode(ShmErrc code);

struct ShmStatus {
  ShmErrc code = ShmErrc::kOk;
  std::string message;
  bool ok() const { return code == ShmErrc::kOk; }
  static ShmStatus Ok() { return {}; }
  static ShmStatus Error(ShmErrc c, std::string m) { return {c, std::move(m)}; }
};

// Thrown by the constructors (Create/Attach) only; Alloc/Free return a ShmStatus.
class ShmError : public std::exception {
 public:
  ShmError(ShmErrc code, std::string message) : code_(code), message_(std::move(message)) {}
  ShmErrc code() const { return code_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  ShmErrc code_;
  std::string message_;
};

struct ShmSlice {
  uint64_t offset = 0;     // from the start of the segment; a multiple of 64
  uint64_t size = 0;       // bytes reserved (the size class, or whole pages)
  uint64_t requested = 0;  // bytes asked for
  uint64_t id = 0;         // allocation id, unique within the pool; 0 = none
};

// Statistics. All sizes in bytes.
//   capacity       segment size (the requested size rounded up to whole pages)
//   used           bytes reserved by live slices (rounded sizes)
//   requested      bytes asked for by live slices
//   highWater      largest `used` seen
//   live           number of live slices
//   allocCount     allocations since creation
//   freeCount      frees since creation
//   freeBytes      capacity - used
//   cachedBytes    free bytes held in per-class free lists (free, but only for that class)
//   largestFree    largest contiguous free range outside the class free lists
//   fragmentation  1 - largestFree / freeBytes (0 when nothing is free): 0 means all free memory
//                  is one run; near 1 means it is scattered in small pieces or cached per class
struct ShmStats {
  uint64_t capacity = 0;
  uint64_t used = 0;
  uint64_t requested = 0;
  uint64_t highWater = 0;
  uint64_t live = 0;
  uint64_t allocCount = 0;
  uint64_t freeCount = 0;
  uint64_t freeBytes = 0;
  uint64_t cachedBytes = 0;
  uint64_t largestFree = 0;
  double fragmentation = 0.0;
};

struct ShmCreateOptions {
  uint64_t size = 0;        // bytes; rounded up to whole pages
  std::string name;         // empty: "/mlos-<pid>-<n>"; otherwise used as given ("/" prepended)
  bool reserve = true;      // posix_fallocate the segment at creation
  bool cleanupStale = true; // run CleanupStale() before creating
};

class ShmPool {
 public:
  static constexpr uint64_t kAlignment = 64;
  static constexpr uint64_t kMinClassBytes = 64;
  static constexpr uint64_t kMaxClassBytes = 64 * 1024;
  static constexpr int kNumClasses = 11;  // 64 B .. 64 KiB
  static constexpr const char* kNamePrefix = "mlos-";

  // Creates and maps a new segment. Throws ShmError (kBadArgument, kFail).
  static std::shared_ptr<ShmPool> Create(const ShmCreateOptions& options);
  // Maps an existing segment by name ("/mlos-..." or "mlos-..."). Throws ShmError.
  static std::shared_ptr<ShmPool> Attach(const std::string& name);

  // Unlinks /dev/shm/mlos-<pid>-* whose <pid> is not a live process. Returns how many.
  static int CleanupStale();
  // The size class of a request: the power of two >= bytes from 64 B, or whole pages above
  // kMaxClassBytes. 0 for 0.
  static uint64_t RoundedSize(uint64_t bytes);
  // Index of the size class for a rounded small size, or -1 for a large size.
  static int ClassIndex(uint64_t rounded);
  static uint64_t PageSize();

  ~ShmPool();
  ShmPool(const ShmPool&) = delete;
  ShmPool& operator=(const ShmPool&) = delete;

  const std::string& name() const { return name_; }
  uint64_t capacity() const { return capacity_; }
  bool owner() const { return owner_; }
  bool closed() const;
  // Base of the mapping (page-aligned); nullptr once closed.
  uint8_t* base() const { return base_; }
  bool Contains(const void* p, uint64_t len) const;

  // Owner pools only. kExhausted when it does not fit; kBadArgument for 0 or > capacity;
  // kClosed after Close(); kBadArgument on an attached pool.
  ShmStatus Alloc(uint64_t bytes, ShmSlice* out);
  // Frees the block at slice.offset if it is still allocation slice.id; otherwise does nothing and
  // returns kBadArgument.
  ShmStatus Free(const ShmSlice& slice);
  // Frees whatever block starts at `offset`. kBadArgument when none does.
  ShmStatus FreeAt(uint64_t offset);
  // The live slice that starts at `offset`, if any.
  bool Lookup(uint64_t offset, ShmSlice* out) const;

  ShmStats Stats() const;

  // Unlinks the name (owner pools; idempotent). The mapping stays valid until Close().
  ShmStatus Unlink();
  // Unlinks (owner) and unmaps. Idempotent. Pointers into the pool are invalid afterwards.
  void Close();

 private:
  ShmPool() = default;
  bool CarveLocked(uint64_t size, uint64_t align, uint64_t* offset);
  void InsertFreeRangeLocked(uint64_t offset, uint64_t size);
  void TrimClassesLocked();

  std::string name_;
  uint64_t capacity_ = 0;
  uint8_t* base_ = nullptr;
  bool owner_ = false;
  bool unlinked_ = false;

  mutable std::mutex mu_;
  bool closed_ = false;
  std::map<uint64_t, uint64_t> free_ranges_;  // offset -> size, coalesced
  std::vector<uint64_t> class_free_[kNumClasses];
  struct Live {
    uint64_t size;
    uint64_t requested;
    uint64_t id;
  };
  std::unordered_map<uint64_t, Live> live_;
  uint64_t next_id_ = 1;
  uint64_t used_ = 0;
  uint64_t requested_ = 0;
  uint64_t cached_ = 0;
  uint64_t high_water_ = 0;
  uint64_t alloc_count_ = 0;
  uint64_t free_count_ = 0;
};

// The process-wide registry of segments this process created and has not unlinked yet.
namespace shm_registry {
// Unlinks every segment this process (getpid()) created that is still linked. Returns how many.
// Called at exit; also usable from a Node environment cleanup hook.
int UnlinkAll();
// Names currently registered by this process.
std::vector<std::string> Names();
}  // namespace shm_registry

}  // namespace mlos
