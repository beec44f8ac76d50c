#include "ipc/ring.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MLOS_CPU_RELAX() _mm_pause()
#else
#define MLOS_CPU_RELAX() ((void)0)
#endif

namespace mlos::ipc {

// The header as it lies in the mapping: one cache line per writer. Lock-free 64- and 32-bit
// atomics have the same representation as plain integers, so two processes (and the C client)
// can use the same words.
struct SpscRing::Header {
  struct alignas(64) Info {
    uint64_t magic;
    uint32_t version;
    uint32_t capacity;
    uint32_t slot_bytes;
  } info;
  alignas(64) std::atomic<uint64_t> head;  // producer
  alignas(64) std::atomic<uint64_t> tail;  // consumer
  alignas(64) std::atomic<uint32_t> wake;  // futex word: bumped by the producer
  std::atomic<uint32_t> waiting;           // the consumer is (about to be) asleep
};
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free, "the ring needs lock-free atomics to share them between processes");

namespace {

bool PowerOfTwo(uint32_t n) { return n != 0 && (n & (n - 1)) == 0; }

long Futex(std::atomic<uint32_t>* word, int op, uint32_t value, const struct timespec* timeout) {
  // Not FUTEX_PRIVATE_FLAG: the word lives in memory shared with another process.
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, timeout, nullptr, 0);
}

}  // namespace

size_t SpscRing::BytesFor(uint32_t capacity, uint32_t slot_bytes) { return kHeaderBytes + static_cast<size_t>(capacity) * slot_bytes; }

std::unique_ptr<SpscRing> SpscRing::Create(void* memory, size_t bytes, uint32_t capacity, uint32_t slot_bytes) {
  static_assert(sizeof(Header) <= kHeaderBytes, "the header outgrew its bytes");
  if (!memory || reinterpret_cast<uintptr_t>(memory) % 64 != 0) return nullptr;
  if (!PowerOfTwo(capacity) || slot_bytes <= kLengthBytes || slot_bytes % 8 != 0) return nullptr;
  if (BytesFor(capacity, slot_bytes) > bytes) return nullptr;
  auto* h = new (memory) Header();
  h->info.magic = kMagic;
  h->info.version = kVersion;
  h->info.capacity = capacity;
  h->info.slot_bytes = slot_bytes;
  h->head.store(0, std::memory_order_relaxed);
  h->tail.store(0, std::memory_order_relaxed);
  h->wake.store(0, std::memory_order_relaxed);
  h->waiting.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  return Attach(memory, bytes);
}

std::unique_ptr<SpscRing> SpscRing::Attach(void* memory, size_t bytes, const char** why) {
  auto fail = [why](const char* reason) -> std::unique_ptr<SpscRing> {
    if (why) *why = reason;
    return nullptr;
  };
  if (!memory || reinterpret_cast<uintptr_t>(memory) % 64 != 0) return fail("the ring's memory is not 64-byte aligned");
  if (bytes < kHeaderBytes) return fail("the ring's memory is smaller than its header");
  auto* h = static_cast<Header*>(memory);
  // Read once: the other side may change them later, and only these copies are used.
  const Header::Info info = h->info;
  if (info.magic != kMagic) return fail("no ring here (bad magic)");
  if (info.version != kVersion) return fail("the ring has another version");
  if (!PowerOfTwo(info.capacity) || info.slot_bytes <= kLengthBytes || info.slot_bytes % 8 != 0) return fail("the ring's sizes are invalid");
  if (BytesFor(info.capacity, info.slot_bytes) > bytes) return fail("the ring's slots run past its memory");
  std::unique_ptr<SpscRing> ring(new (std::nothrow) SpscRing());
  if (!ring) return fail("out of memory");
  ring->header_ = h;
  ring->slots_ = static_cast<uint8_t*>(memory) + kHeaderBytes;
  ring->capacity_ = info.capacity;
  ring->slot_bytes_ = info.slot_bytes;
  return ring;
}

bool SpscRing::TryPush(const void* message, uint32_t length) {
  if (length > max_message()) return false;
  const uint64_t head = header_->head.load(std::memory_order_relaxed);
  const uint64_t tail = header_->tail.load(std::memory_order_acquire);
  if (head - tail >= capacity_) return false;  // full (or a consumer that wrote nonsense: not ours to fix)
  uint8_t* slot = Slot(head);
  std::memcpy(slot, &length, kLengthBytes);
  if (length) std::memcpy(slot + kLengthBytes, message, length);
  header_->head.store(head + 1, std::memory_order_release);
  header_->wake.fetch_add(1, std::memory_order_seq_cst);
  if (header_->waiting.load(std::memory_order_seq_cst) != 0) Futex(&header_->wake, FUTEX_WAKE, 1, nullptr);
  return true;
}

SpscRing::PopResult SpscRing::TryPop(void* out, uint32_t out_capacity, uint32_t* length) {
  const uint64_t tail = header_->tail.load(std::memory_order_relaxed);
  const uint64_t head = header_->head.load(std::memory_order_acquire);
  if (head == tail) return PopResult::kEmpty;
  if (head - tail > capacity_) return PopResult::kCorrupt;  // behind the tail, or past a full ring
  const uint8_t* slot = Slot(tail);
  uint32_t n;
  std::memcpy(&n, slot, kLengthBytes);
  if (n > max_message()) return PopResult::kCorrupt;
  if (n > out_capacity) {
    *length = n;
    return PopResult::kTooSmall;
  }
  if (n) std::memcpy(out, slot + kLengthBytes, n);
  *length = n;
  header_->tail.store(tail + 1, std::memory_order_release);
  return PopResult::kOk;
}

uint64_t SpscRing::Pending() const {
  return header_->head.load(std::memory_order_acquire) - header_->tail.load(std::memory_order_relaxed);
}

bool SpscRing::Wait(int64_t timeout_ns, int spin) {
  for (int i = 0; i < spin; ++i) {
    if (Pending() != 0) return true;
    MLOS_CPU_RELAX();
  }
  const uint32_t seen = header_->wake.load(std::memory_order_seq_cst);
  header_->waiting.store(1, std::memory_order_seq_cst);
  // Re-check after announcing: a producer that published before it could see `waiting` bumped
  // `wake` already, and FUTEX_WAIT returns at once when the word is no longer `seen`.
  if (Pending() != 0) {
    header_->waiting.store(0, std::memory_order_relaxed);
    return true;
  }
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
  ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
  Futex(&header_->wake, FUTEX_WAIT, seen, timeout_ns >= 0 ? &ts : nullptr);
  header_->waiting.store(0, std::memory_order_relaxed);
  return Pending() != 0;
}

void SpscRing::WakeConsumer() {
  header_->wake.fetch_add(1, std::memory_order_seq_cst);
  Futex(&header_->wake, FUTEX_WAKE, 1, nullptr);
}

}  // namespace mlos::ipc
