// SpscRing: order and content across threads and across processes (fork, a shared mapping),
// full and empty rings, messages too large, futex sleep and wake-up, and a peer that corrupts the
// header or a slot: the consumer answers kCorrupt and reads nothing out of bounds.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "ipc/ring.h"
#include "test_harness.h"

using mlos::ipc::SpscRing;

namespace {

// Anonymous shared memory: what a child made by fork() sees as the same bytes.
struct SharedMemory {
  explicit SharedMemory(size_t n) : bytes(n), p(mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)) {}
  ~SharedMemory() { munmap(p, bytes); }
  size_t bytes;
  void* p;
};

struct Header {
  uint64_t magic;
  uint32_t version, capacity, slot_bytes;
};

}  // namespace

TEST(ipc_ring_rejects_bad_sizes_and_foreign_memory) {
  SharedMemory m(1 << 16);
  CHECK(SpscRing::Create(m.p, m.bytes, 3, 64) == nullptr);     // not a power of two
  CHECK(SpscRing::Create(m.p, m.bytes, 4, 4) == nullptr);      // no room for a message
  CHECK(SpscRing::Create(m.p, m.bytes, 4, 60) == nullptr);     // not a multiple of 8
  CHECK(SpscRing::Create(m.p, 512, 64, 64) == nullptr);        // larger than the memory
  const char* why = nullptr;
  CHECK(SpscRing::Attach(m.p, m.bytes, &why) == nullptr);      // zeros: no ring
  CHECK(why != nullptr && std::strstr(why, "magic") != nullptr);
  auto ring = SpscRing::Create(m.p, m.bytes, 64, 64);
  REQUIRE(ring != nullptr);
  CHECK(SpscRing::Attach(m.p, m.bytes) != nullptr);
  CHECK(SpscRing::Attach(m.p, SpscRing::BytesFor(64, 64) - 1, &why) == nullptr);  // a peer claiming more slots than were handed over
  CHECK(std::strstr(why, "past its memory") != nullptr);
}

TEST(ipc_ring_fills_empties_and_refuses_oversized_messages) {
  SharedMemory m(1 << 16);
  auto ring = SpscRing::Create(m.p, m.bytes, 8, 32);
  REQUIRE(ring != nullptr);
  CHECK_EQ(ring->max_message(), 28u);
  char big[64] = {0};
  CHECK(!ring->TryPush(big, 29));
  for (uint32_t i = 0; i < 8; ++i) CHECK(ring->TryPush(&i, sizeof i));
  uint32_t x = 99;
  CHECK(!ring->TryPush(&x, sizeof x));  // full
  CHECK_EQ(ring->Pending(), 8u);
  char small[2];
  uint32_t len = 0;
  CHECK(ring->TryPop(small, sizeof small, &len) == SpscRing::PopResult::kTooSmall);
  CHECK_EQ(len, 4u);
  for (uint32_t i = 0; i < 8; ++i) {
    uint32_t got = 0;
    CHECK(ring->TryPop(&got, sizeof got, &len) == SpscRing::PopResult::kOk);
    CHECK_EQ(len, 4u);
    CHECK_EQ(got, i);
  }
  CHECK(ring->TryPop(&x, sizeof x, &len) == SpscRing::PopResult::kEmpty);
  CHECK(ring->TryPush(nullptr, 0));  // an empty message is a message
  CHECK(ring->TryPop(&x, sizeof x, &len) == SpscRing::PopResult::kOk);
  CHECK_EQ(len, 0u);
}

TEST(ipc_ring_keeps_order_and_content_between_threads) {
  SharedMemory m(1 << 20);
  auto producer = SpscRing::Create(m.p, m.bytes, 64, 64);
  auto consumer = SpscRing::Attach(m.p, m.bytes);
  REQUIRE(producer != nullptr && consumer != nullptr);
  const uint64_t n = 200000;
  std::thread t([&] {
    for (uint64_t i = 0; i < n;) {
      uint64_t msg[3] = {i, i * 7, ~i};
      if (producer->TryPush(msg, static_cast<uint32_t>(8 + (i % 3) * 8))) ++i;
    }
  });
  uint64_t next = 0, bad = 0;
  while (next < n) {
    uint64_t msg[3];
    uint32_t len;
    auto r = consumer->TryPop(msg, sizeof msg, &len);
    if (r == SpscRing::PopResult::kEmpty) {
      consumer->Wait(1000000);
      continue;
    }
    if (r != SpscRing::PopResult::kOk || len != 8 + (next % 3) * 8 || msg[0] != next || (len >= 16 && msg[1] != next * 7) || (len == 24 && msg[2] != ~next)) ++bad;
    ++next;
  }
  t.join();
  CHECK_EQ(bad, 0u);
}

TEST(ipc_ring_crosses_processes_and_sleeps_until_woken) {
  SharedMemory m(1 << 20);
  auto ring = SpscRing::Create(m.p, m.bytes, 16, 64);
  REQUIRE(ring != nullptr);
  const uint64_t n = 50000;
  pid_t child = fork();
  if (child == 0) {
    auto p = SpscRing::Attach(m.p, m.bytes);
    if (!p) _exit(2);
    // A pause first, so that the consumer goes to sleep on the futex and must be woken.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (uint64_t i = 0; i < n;) {
      if (p->TryPush(&i, sizeof i)) ++i;
    }
    _exit(0);
  }
  REQUIRE(child > 0);
  uint64_t next = 0, bad = 0, sleeps = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (next < n && std::chrono::steady_clock::now() < deadline) {
    uint64_t v;
    uint32_t len;
    auto r = ring->TryPop(&v, sizeof v, &len);
    if (r == SpscRing::PopResult::kEmpty) {
      ++sleeps;
      ring->Wait(100000000, 100);
      continue;
    }
    if (r != SpscRing::PopResult::kOk || v != next) ++bad;
    ++next;
  }
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_EQ(next, n);
  CHECK_EQ(bad, 0u);
  CHECK(sleeps > 0u);
}

TEST(ipc_ring_wait_times_out_and_wakes_on_demand) {
  SharedMemory m(1 << 16);
  auto ring = SpscRing::Create(m.p, m.bytes, 8, 64);
  REQUIRE(ring != nullptr);
  auto t0 = std::chrono::steady_clock::now();
  CHECK(!ring->Wait(20000000, 10));  // 20 ms, nothing comes
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= std::chrono::milliseconds(15));
  std::thread waker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ring->WakeConsumer();
  });
  t0 = std::chrono::steady_clock::now();
  ring->Wait(10000000000LL, 10);  // 10 s unless woken
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  waker.join();
}

TEST(ipc_ring_reports_a_corrupt_peer_instead_of_reading_out_of_bounds) {
  SharedMemory m(1 << 16);
  auto ring = SpscRing::Create(m.p, m.bytes, 8, 32);
  REQUIRE(ring != nullptr);
  auto* base = static_cast<uint8_t*>(m.p);
  auto* head = reinterpret_cast<std::atomic<uint64_t>*>(base + 64);
  auto* tail = reinterpret_cast<std::atomic<uint64_t>*>(base + 128);
  char out[32];
  uint32_t len;
  head->store(1000);  // far past a full ring
  CHECK(ring->TryPop(out, sizeof out, &len) == SpscRing::PopResult::kCorrupt);
  head->store(0);
  tail->store(5);  // head behind tail
  CHECK(ring->TryPop(out, sizeof out, &len) == SpscRing::PopResult::kCorrupt);
  tail->store(0);
  uint32_t x = 1;
  CHECK(ring->TryPush(&x, sizeof x));
  uint32_t huge = 1u << 30;
  std::memcpy(base + SpscRing::kHeaderBytes, &huge, 4);  // the slot's length runs past the slot
  CHECK(ring->TryPop(out, sizeof out, &len) == SpscRing::PopResult::kCorrupt);
  // A peer that rewrites the header's sizes after attach changes nothing: the copies taken at
  // attach are the ones used.
  reinterpret_cast<Header*>(base)->capacity = 1u << 20;
  std::memcpy(base + SpscRing::kHeaderBytes, &x, 4);
  CHECK(ring->TryPop(out, sizeof out, &len) == SpscRing::PopResult::kOk);
}

int main() { return mlos_test::RunAll(); }
