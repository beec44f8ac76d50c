// SpscRing: a single-producer, single-consumer ring of fixed-size message slots in memory that two
// processes share (the IPC door's request and response rings: one pair per client).
//
// Plain C++17 (no Node-API), so the unit tests and the C client build it on their own.
//
// Layout (all little-endian, in the shared mapping; the header takes one 64-byte line per writer
// so that the two sides never write the same cache line):
//   line 0  magic "MLOSRNG1", version, capacity (slots, a power of two), slot bytes
//   line 1  head: slots published so far (written by the producer only)
//   line 2  tail: slots consumed so far (written by the consumer only)
//   line 3  wake: a futex word the producer bumps after publishing; waiting: the consumer's flag
//   slots   capacity x slot bytes; each slot is a 4-byte length, then the message
//
// Publishing is a release store of head after the slot is written; consuming reads head with
// acquire, copies the slot out, then release-stores tail. A consumer that finds the ring empty
// spins a little, then sets `waiting`, re-checks, and sleeps on `wake` (FUTEX_WAIT on the shared
// word, with a timeout so that its thread can look at shutdown and leases). A producer that
// published wakes it only when `waiting` is set, so a busy ring costs no system call.
//
// The other side is not trusted: every value read from the mapping is checked before use. A head
// that is behind the tail or more than `capacity` ahead of it, or a slot length past its slot,
// makes Pop answer kCorrupt (the caller drops that peer) instead of reading out of bounds.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace mlos::ipc {

class SpscRing {
 public:
  static constexpr uint64_t kMagic = 0x31474e52534f4c4dull;  // "MLOSRNG1" read as little-endian
  static constexpr uint32_t kVersion = 1;
  static constexpr size_t kHeaderBytes = 256;
  static constexpr size_t kLengthBytes = 4;

  enum class PopResult { kOk, kEmpty, kCorrupt, kTooSmall };

  // Bytes of memory a ring of `capacity` slots of `slot_bytes` each needs (header included).
  static size_t BytesFor(uint32_t capacity, uint32_t slot_bytes);

  // Writes a fresh header over `memory` (`bytes` long, 64-byte aligned) and returns the ring, or
  // nullptr when the sizes do not fit (capacity not a power of two, slot_bytes not a multiple of
  // 8 above kLengthBytes, or `bytes` too small).
  static std::unique_ptr<SpscRing> Create(void* memory, size_t bytes, uint32_t capacity, uint32_t slot_bytes);

  // The ring another process created in `memory`, checked: magic, version, sizes that fit in
  // `bytes`. nullptr when anything is off; *why (if given) then says what.
  // The ring object only points into `memory`, which must outlive it.
  static std::unique_ptr<SpscRing> Attach(void* memory, size_t bytes, const char** why = nullptr);

  uint32_t capacity() const { return capacity_; }
  uint32_t slot_bytes() const { return slot_bytes_; }
  // The largest message one slot holds.
  uint32_t max_message() const { return slot_bytes_ - static_cast<uint32_t>(kLengthBytes); }

  // Producer: copies `message` into the next slot and publishes it; false when the ring is full
  // or the message is larger than max_message(). Wakes a sleeping consumer.
  bool TryPush(const void* message, uint32_t length);

  // Consumer: copies the oldest message into `out` (`capacity` bytes) and frees its slot.
  PopResult TryPop(void* out, uint32_t capacity, uint32_t* length);

  // Consumer: returns once the ring is not empty, after `timeout_ns`, or on a wake-up; spins
  // `spin` times first. True when a message is (or may be) there.
  bool Wait(int64_t timeout_ns, int spin = 2000);

  // Wakes the consumer whatever its state (shutdown, tests).
  void WakeConsumer();

  // Messages waiting, as the consumer sees them (may be stale by the time it returns).
  uint64_t Pending() const;

 private:
  SpscRing() = default;
  uint8_t* Slot(uint64_t index) const { return slots_ + (index & (capacity_ - 1)) * slot_bytes_; }

  struct Header;

  Header* header_ = nullptr;
  uint8_t* slots_ = nullptr;
  uint32_t capacity_ = 0;
  uint32_t slot_bytes_ = 0;
};

}  // namespace mlos::ipc
