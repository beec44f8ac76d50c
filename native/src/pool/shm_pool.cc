// ShmPool: see shm_pool.h for the design.
#include "pool/shm_pool.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace mlos {

namespace {

std::string ErrnoText(const char* what, const std::string& name, int err) {
  return std::string(what) + "(" + name + ") failed: " + std::strerror(err);
}

std::atomic<uint64_t> g_name_counter{0};

// ---- the registry of segments created by this process -------------------------------------

struct Registry {
  std::mutex mu;
  std::map<std::string, pid_t> names;  // name -> pid of the creating process
};

Registry& TheRegistry() {
  // Leaked on purpose: it must outlive every static destructor and atexit handler that uses it.
  static Registry* r = new Registry();
  return *r;
}

void AtExitUnlinkAll() { shm_registry::UnlinkAll(); }

void RegisterName(const std::string& name) {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(AtExitUnlinkAll); });
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.names[name] = getpid();
}

// True when the name was registered by this process (and is now removed): the caller unlinks.
bool UnregisterName(const std::string& name) {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.names.find(name);
  if (it == r.names.end() || it->second != getpid()) return false;
  r.names.erase(it);
  return true;
}

std::string NormalizeName(const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  return "/" + name;
}

bool ValidName(const std::string& n) {
  // "/" then 1..250 characters, none of them "/" or NUL.
  if (n.size() < 2 || n.size() > 251 || n[0] != '/') return false;
  for (size_t i = 1; i < n.size(); ++i) {
    if (n[i] == '/' || n[i] == '\0') return false;
  }
  return true;
}

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

const char* ShmErrcCode(ShmErrc code) {
  switch (code) {
    case ShmErrc::kOk: return "OK";
    case ShmErrc::kExhausted: return "SHM_EXHAUSTED";
    case ShmErrc::kFail: return "SHM_FAIL";
    case ShmErrc::kBadArgument: return "BAD_ARGUMENT";
    case ShmErrc::kClosed: return "CLOSED";
  }
  return "SHM_FAIL";
}

namespace shm_registry {

int UnlinkAll() {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  const pid_t self = getpid();
  int n = 0;
  for (auto it = r.names.begin(); it != r.names.end();) {
    if (it->second == self) {
      if (shm_unlink(it->first.c_str()) == 0) ++n;
      it = r.names.erase(it);
    } else {
      ++it;
    }
  }
  return n;
}

std::vector<std::string> Names() {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> out;
  const pid_t self = getpid();
  for (auto& [name, pid] : r.names) {
    if (pid == self) out.push_back(name);
  }
  return out;
}

}  // namespace shm_registry

// ---- static helpers ---------------------------------------------------------------------------

uint64_t ShmPool::PageSize() {
  static const uint64_t page = [] {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? static_cast<uint64_t>(p) : uint64_t{4096};
  }();
  return page;
}

uint64_t ShmPool::RoundedSize(uint64_t bytes) {
  if (bytes == 0) return 0;
  if (bytes > kMaxClassBytes) {
    if (bytes > std::numeric_limits<uint64_t>::max() - PageSize()) return 0;
    return RoundUp(bytes, PageSize());
  }
  uint64_t s = kMinClassBytes;
  while (s < bytes) s <<= 1;
  return s;
}

int ShmPool::ClassIndex(uint64_t rounded) {
  if (rounded < kMinClassBytes || rounded > kMaxClassBytes) return -1;
  int i = 0;
  for (uint64_t s = kMinClassBytes; s < rounded; s <<= 1) ++i;
  return (kMinClassBytes << i) == rounded ? i : -1;
}

int ShmPool::CleanupStale() {
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return 0;
  int removed = 0;
  const size_t plen = std::strlen(kNamePrefix);
  while (dirent* e = readdir(dir)) {
    const char* n = e->d_name;
    if (std::strncmp(n, kNamePrefix, plen) != 0) continue;
    // mlos-<pid>-<rest>
    const char* p = n + plen;
    char* end = nullptr;
    errno = 0;
    long pid = std::strtol(p, &end, 10);
    if (errno != 0 || end == p || *end != '-' || pid <= 0) continue;
    if (pid == static_cast<long>(getpid())) continue;
    if (kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive, or not ours
    if (shm_unlink((std::string("/") + n).c_str()) == 0) ++removed;
  }
  closedir(dir);
  return removed;
}

// ---- creation ---------------------------------------------------------------------------------

std::shared_ptr<ShmPool> ShmPool::Create(const ShmCreateOptions& options) {
  if (options.size == 0) throw ShmError(ShmErrc::kBadArgument, "pool size must be > 0");
  const uint64_t page = PageSize();
  if (options.size > (uint64_t{1} << 46)) {
    throw ShmError(ShmErrc::kBadArgument, "pool size is too large");
  }
  const uint64_t capacity = RoundUp(options.size, page);

  std::string name;
  if (options.name.empty()) {
    name = "/" + std::string(kNamePrefix) + std::to_string(getpid()) + "-" +
           std::to_string(g_name_counter.fetch_add(1));
  } else {
    name = NormalizeName(options.name);
    if (!ValidName(name)) {
      throw ShmError(ShmErrc::kBadArgument,
                     "invalid shared-memory name \"" + options.name +
                         "\": 1 to 250 characters, no \"/\" after the first");
    }
  }
  if (options.cleanupStale) CleanupStale();

  int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    const int err = errno;
    throw ShmError(err == EINVAL || err == ENAMETOOLONG ? ShmErrc::kBadArgument : ShmErrc::kFail,
                   ErrnoText("shm_open", name, err));
  }
  auto fail = [&](const char* what, int err) {
    close(fd);
    shm_unlink(name.c_str());
    throw ShmError(ShmErrc::kFail, ErrnoText(what, name, err));
  };
  if (ftruncate(fd, static_cast<off_t>(capacity)) != 0) fail("ftruncate", errno);
  if (options.reserve) {
    int err = posix_fallocate(fd, 0, static_cast<off_t>(capacity));
    if (err != 0 && err != EOPNOTSUPP && err != EINVAL) fail("posix_fallocate", err);
  }
  void* base = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) fail("mmap", errno);
  close(fd);  // the mapping keeps the segment alive

  std::shared_ptr<ShmPool> pool(new ShmPool());
  pool->name_ = name;
  pool->capacity_ = capacity;
  pool->base_ = static_cast<uint8_t*>(base);
  pool->owner_ = true;
  pool->free_ranges_.emplace(0, capacity);
  RegisterName(name);
  return pool;
}

std::shared_ptr<ShmPool> ShmPool::Attach(const std::string& raw) {
  const std::string name = NormalizeName(raw);
  if (!ValidName(name)) {
    throw ShmError(ShmErrc::kBadArgument, "invalid shared-memory name \"" + raw + "\"");
  }
  int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    const int err = errno;
    throw ShmError(err == ENOENT ? ShmErrc::kBadArgument : ShmErrc::kFail,
                   ErrnoText("shm_open", name, err));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    throw ShmError(ShmErrc::kFail, ErrnoText("fstat", name, err));
  }
  if (st.st_size <= 0) {
    close(fd);
    throw ShmError(ShmErrc::kBadArgument, "shared-memory segment " + name + " is empty");
  }
  const uint64_t capacity = static_cast<uint64_t>(st.st_size);
  void* base = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (base == MAP_FAILED) throw ShmError(ShmErrc::kFail, ErrnoText("mmap", name, err));

  std::shared_ptr<ShmPool> pool(new ShmPool());
  pool->name_ = name;
  pool->capacity_ = capacity;
  pool->base_ = static_cast<uint8_t*>(base);
  pool->owner_ = false;
  return pool;
}

ShmPool::~ShmPool() { Close(); }

bool ShmPool::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

bool ShmPool::Contains(const void* p, uint64_t len) const {
  if (base_ == nullptr || p == nullptr) return false;
  auto a = reinterpret_cast<uintptr_t>(p);
  auto b = reinterpret_cast<uintptr_t>(base_);
  return a >= b && a - b <= capacity_ && len <= capacity_ - (a - b);
}

// ---- allocator --------------------------------------------------------------------------------

void ShmPool::InsertFreeRangeLocked(uint64_t offset, uint64_t size) {
  if (size == 0) return;
  auto next = free_ranges_.lower_bound(offset);
  // Merge with the previous range when it ends where this one starts.
  if (next != free_ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      size += prev->second;
      free_ranges_.erase(prev);
    }
  }
  // Merge with the next range when this one ends where it starts.
  if (next != free_ranges_.end() && offset + size == next->first) {
    size += next->second;
    free_ranges_.erase(next);
  }
  free_ranges_.emplace(offset, size);
}

bool ShmPool::CarveLocked(uint64_t size, uint64_t align, uint64_t* out) {
  // Best fit: the smallest range that holds `size` at an `align`ed start; lowest offset on ties.
  auto best = free_ranges_.end();
  uint64_t best_waste = std::numeric_limits<uint64_t>::max();
  for (auto it = free_ranges_.begin(); it != free_ranges_.end(); ++it) {
    const uint64_t start = RoundUp(it->first, align);
    const uint64_t head = start - it->first;
    if (head > it->second || it->second - head < size) continue;
    const uint64_t waste = it->second - size;
    if (waste < best_waste) {
      best = it;
      best_waste = waste;
      if (waste == 0) break;
    }
  }
  if (best == free_ranges_.end()) return false;
  const uint64_t roff = best->first, rsize = best->second;
  const uint64_t start = RoundUp(roff, align);
  free_ranges_.erase(best);
  InsertFreeRangeLocked(roff, start - roff);
  InsertFreeRangeLocked(start + size, roff + rsize - (start + size));
  *out = start;
  return true;
}

void ShmPool::TrimClassesLocked() {
  for (int c = 0; c < kNumClasses; ++c) {
    const uint64_t sz = kMinClassBytes << c;
    for (uint64_t off : class_free_[c]) InsertFreeRangeLocked(off, sz);
    cached_ -= sz * class_free_[c].size();
    class_free_[c].clear();
  }
}

ShmStatus ShmPool::Alloc(uint64_t bytes, ShmSlice* out) {
  if (!owner_) {
    return ShmStatus::Error(ShmErrc::kBadArgument,
                            "pool " + name_ + " is attached: only the creating process allocates");
  }
  if (bytes == 0) return ShmStatus::Error(ShmErrc::kBadArgument, "allocation size must be > 0");
  if (bytes > capacity_) {
    return ShmStatus::Error(ShmErrc::kExhausted,
                            "allocation of " + std::to_string(bytes) +
                                " bytes exceeds the pool capacity of " + std::to_string(capacity_));
  }
  const uint64_t rounded = RoundedSize(bytes);
  const int cls = ClassIndex(rounded);
  const uint64_t align = cls >= 0 ? kAlignment : PageSize();

  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return ShmStatus::Error(ShmErrc::kClosed, "pool " + name_ + " is closed");
  uint64_t offset = 0;
  bool got = false;
  if (cls >= 0 && !class_free_[cls].empty()) {
    offset = class_free_[cls].back();
    class_free_[cls].pop_back();
    cached_ -= rounded;
    got = true;
  }
  if (!got) got = CarveLocked(rounded, align, &offset);
  if (!got && cached_ > 0) {
    TrimClassesLocked();
    got = CarveLocked(rounded, align, &offset);
  }
  if (!got) {
    return ShmStatus::Error(
        ShmErrc::kExhausted,
        "pool " + name_ + " has no free range for " + std::to_string(bytes) + " bytes (" +
            std::to_string(capacity_ - used_) + " of " + std::to_string(capacity_) + " free)");
  }
  const uint64_t id = next_id_++;
  live_.emplace(offset, Live{rounded, bytes, id});
  used_ += rounded;
  requested_ += bytes;
  high_water_ = std::max(high_water_, used_);
  ++alloc_count_;
  *out = ShmSlice{offset, rounded, bytes, id};
  return ShmStatus::Ok();
}

ShmStatus ShmPool::Free(const ShmSlice& slice) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(slice.offset);
  if (it == live_.end() || it->second.id != slice.id) {
    return ShmStatus::Error(ShmErrc::kBadArgument,
                            "no live allocation " + std::to_string(slice.id) + " at offset " +
                                std::to_string(slice.offset) + " (already freed?)");
  }
  const Live l = it->second;
  live_.erase(it);
  used_ -= l.size;
  requested_ -= l.requested;
  ++free_count_;
  if (closed_) return ShmStatus::Ok();
  const int cls = ClassIndex(l.size);
  if (cls >= 0) {
    class_free_[cls].push_back(slice.offset);
    cached_ += l.size;
  } else {
    InsertFreeRangeLocked(slice.offset, l.size);
  }
  return ShmStatus::Ok();
}

ShmStatus ShmPool::FreeAt(uint64_t offset) {
  ShmSlice s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(offset);
    if (it == live_.end()) {
      return ShmStatus::Error(ShmErrc::kBadArgument,
                              "no live allocation at offset " + std::to_string(offset));
    }
    s = ShmSlice{offset, it->second.size, it->second.requested, it->second.id};
  }
  return Free(s);
}

bool ShmPool::Lookup(uint64_t offset, ShmSlice* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(offset);
  if (it == live_.end()) return false;
  *out = ShmSlice{offset, it->second.size, it->second.requested, it->second.id};
  return true;
}

ShmStats ShmPool::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ShmStats s;
  s.capacity = capacity_;
  s.used = used_;
  s.requested = requested_;
  s.highWater = high_water_;
  s.live = live_.size();
  s.allocCount = alloc_count_;
  s.freeCount = free_count_;
  s.freeBytes = capacity_ - used_;
  s.cachedBytes = cached_;
  for (auto& [off, size] : free_ranges_) s.largestFree = std::max(s.largestFree, size);
  s.fragmentation =
      s.freeBytes == 0 ? 0.0
                       : 1.0 - static_cast<double>(s.largestFree) / static_cast<double>(s.freeBytes);
  if (!owner_) {  // an attached view keeps no book-keeping
    s.freeBytes = 0;
    s.largestFree = 0;
    s.fragmentation = 0.0;
  }
  return s;
}

// ---- lifetime ---------------------------------------------------------------------------------

ShmStatus ShmPool::Unlink() {
  if (!owner_) return ShmStatus::Ok();
  std::lock_guard<std::mutex> lock(mu_);
  if (unlinked_) return ShmStatus::Ok();
  unlinked_ = true;
  // Only unlink a name the registry still holds for this process: after an exit-time UnlinkAll,
  // or in a fork()ed child, the name is not ours to remove.
  if (UnregisterName(name_) && shm_unlink(name_.c_str()) != 0 && errno != ENOENT) {
    return ShmStatus::Error(ShmErrc::kFail, ErrnoText("shm_unlink", name_, errno));
  }
  return ShmStatus::Ok();
}

void ShmPool::Close() {
  Unlink();
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return;
  closed_ = true;
  if (base_ != nullptr) munmap(base_, capacity_);
  base_ = nullptr;
  free_ranges_.clear();
  for (auto& v : class_free_) v.clear();
  cached_ = 0;
}

}  // namespace mlos
