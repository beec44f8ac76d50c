// Unit tests for ShmPool (native/src/pool/shm_pool.h). Built by cmake-js into build/native-tests/ and
// run by scripts/run-tests.js after the node tests.
#include "pool/shm_pool.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <set>
#include <thread>

#include "test_harness.h"

using mlos::ShmCreateOptions;
using mlos::ShmErrc;
using mlos::ShmPool;
using mlos::ShmSlice;

namespace {

std::shared_ptr<ShmPool>* g_keep = nullptr;

std::shared_ptr<ShmPool> MakePool(uint64_t size) {
  ShmCreateOptions o;
  o.size = size;
  return ShmPool::Create(o);
}

bool SegmentExists(const std::string& name) {
  struct stat st;
  return stat(("/dev/shm" + name).c_str(), &st) == 0;
}

std::vector<std::string> SegmentsOfPid(pid_t pid) {
  std::vector<std::string> out;
  const std::string prefix = "mlos-" + std::to_string(pid) + "-";
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) out.push_back(e->d_name);
    }
    closedir(d);
  }
  return out;
}

}  // namespace

TEST(size_classes_round_to_powers_of_two_and_pages) {
  const uint64_t page = ShmPool::PageSize();
  CHECK_EQ(ShmPool::RoundedSize(0), 0u);
  CHECK_EQ(ShmPool::RoundedSize(1), 64u);
  CHECK_EQ(ShmPool::RoundedSize(64), 64u);
  CHECK_EQ(ShmPool::RoundedSize(65), 128u);
  CHECK_EQ(ShmPool::RoundedSize(1000), 1024u);
  CHECK_EQ(ShmPool::RoundedSize(65536), 65536u);
  CHECK_EQ(ShmPool::RoundedSize(65537), (65537 + page - 1) / page * page);
  CHECK_EQ(ShmPool::ClassIndex(64), 0);
  CHECK_EQ(ShmPool::ClassIndex(128), 1);
  CHECK_EQ(ShmPool::ClassIndex(65536), ShmPool::kNumClasses - 1);
  CHECK_EQ(ShmPool::ClassIndex(96), -1);
  CHECK_EQ(ShmPool::ClassIndex(1 << 20), -1);

  auto pool = MakePool(4 << 20);
  std::vector<ShmSlice> slices;
  for (uint64_t bytes : {1u, 63u, 64u, 65u, 100u, 4000u, 70000u, 1000000u, 3u}) {
    ShmSlice s;
    REQUIRE(pool->Alloc(bytes, &s).ok());
    CHECK_EQ(s.size, ShmPool::RoundedSize(bytes));
    CHECK_EQ(s.requested, bytes);
    CHECK_EQ(s.offset % ShmPool::kAlignment, 0u);
    CHECK_EQ(reinterpret_cast<uintptr_t>(pool->base() + s.offset) % 64, 0u);
    if (bytes > ShmPool::kMaxClassBytes) CHECK_EQ(s.offset % page, 0u);
    slices.push_back(s);
  }
  // No two live slices overlap.
  for (size_t i = 0; i < slices.size(); ++i) {
    for (size_t j = i + 1; j < slices.size(); ++j) {
      const auto& a = slices[i];
      const auto& b = slices[j];
      CHECK(a.offset + a.size <= b.offset || b.offset + b.size <= a.offset);
    }
  }
  // A freed small block is reused by the next request of its class.
  ShmSlice s100 = slices[4];
  REQUIRE(pool->Free(s100).ok());
  ShmSlice again;
  REQUIRE(pool->Alloc(120, &again).ok());
  CHECK_EQ(again.offset, s100.offset);
  CHECK(again.id != s100.id);
  // The old id no longer frees it.
  CHECK(pool->Free(s100).code == ShmErrc::kBadArgument);
  CHECK(pool->Free(again).ok());
  CHECK(pool->Free(again).code == ShmErrc::kBadArgument);
}

TEST(exhaustion_is_an_error_and_recovers) {
  auto pool = MakePool(256 * 1024);
  const uint64_t cap = pool->capacity();
  std::vector<ShmSlice> slices;
  ShmSlice s;
  mlos::ShmStatus st;
  while ((st = pool->Alloc(1024, &s)).ok()) slices.push_back(s);
  CHECK(st.code == ShmErrc::kExhausted);
  CHECK_EQ(std::string(mlos::ShmErrcCode(st.code)), std::string("SHM_EXHAUSTED"));
  CHECK_EQ(slices.size(), cap / 1024);
  CHECK(pool->Alloc(cap + 1, &s).code == ShmErrc::kExhausted);
  CHECK(pool->Alloc(0, &s).code == ShmErrc::kBadArgument);

  // Freeing one block makes room for one more of that class.
  REQUIRE(pool->Free(slices.back()).ok());
  slices.pop_back();
  REQUIRE(pool->Alloc(1000, &s).ok());
  slices.push_back(s);
  CHECK(pool->Alloc(64, &s).code == ShmErrc::kExhausted);

  // After freeing everything, the class free lists are handed back and coalesced: the whole
  // capacity is one allocation again.
  for (auto& x : slices) REQUIRE(pool->Free(x).ok());
  auto stats = pool->Stats();
  CHECK_EQ(stats.used, 0u);
  CHECK_EQ(stats.cachedBytes, cap);
  CHECK(stats.fragmentation > 0.99);
  ShmSlice whole;
  REQUIRE(pool->Alloc(cap, &whole).ok());
  CHECK_EQ(whole.offset, 0u);
  CHECK(pool->Free(whole).ok());
  stats = pool->Stats();
  CHECK_EQ(stats.largestFree, cap);
  CHECK(stats.fragmentation == 0.0);
}

TEST(stats_track_use_and_high_water) {
  auto pool = MakePool(1 << 20);
  ShmSlice a, b, c;
  REQUIRE(pool->Alloc(100, &a).ok());
  REQUIRE(pool->Alloc(200000, &b).ok());
  REQUIRE(pool->Alloc(64, &c).ok());
  auto s = pool->Stats();
  CHECK_EQ(s.capacity, uint64_t{1} << 20);
  CHECK_EQ(s.used, a.size + b.size + c.size);
  CHECK_EQ(s.requested, 100u + 200000u + 64u);
  CHECK_EQ(s.live, 3u);
  CHECK_EQ(s.allocCount, 3u);
  CHECK_EQ(s.freeCount, 0u);
  CHECK_EQ(s.freeBytes, s.capacity - s.used);
  REQUIRE(pool->Free(b).ok());
  s = pool->Stats();
  CHECK_EQ(s.used, a.size + c.size);
  CHECK_EQ(s.highWater, a.size + b.size + c.size);
  CHECK_EQ(s.freeCount, 1u);
  CHECK_EQ(s.live, 2u);
  CHECK(s.fragmentation >= 0.0 && s.fragmentation < 1.0);
}

TEST(four_threads_allocate_and_free_concurrently) {
  auto pool = MakePool(8 << 20);
  std::atomic<int> corrupt{0}, exhausted{0}, errors{0};
  auto worker = [&](int t) {
    std::mt19937 rng(1234 + t);
    std::vector<std::pair<ShmSlice, uint8_t>> mine;
    for (int i = 0; i < 20000; ++i) {
      const bool doAlloc = mine.empty() || (rng() % 100) < 55;
      if (doAlloc && mine.size() < 64) {
        uint64_t bytes = 1 + rng() % ((rng() % 10 == 0) ? 200000 : 4096);
        ShmSlice s;
        auto st = pool->Alloc(bytes, &s);
        if (st.code == ShmErrc::kExhausted) {
          ++exhausted;
          continue;
        }
        if (!st.ok()) {
          ++errors;
          continue;
        }
        const uint8_t tag = static_cast<uint8_t>(t * 64 + (i % 64));
        std::memset(pool->base() + s.offset, tag, s.requested);
        mine.emplace_back(s, tag);
      } else if (!mine.empty()) {
        size_t k = rng() % mine.size();
        auto [s, tag] = mine[k];
        const uint8_t* p = pool->base() + s.offset;
        for (uint64_t j = 0; j < s.requested; ++j) {
          if (p[j] != tag) {
            ++corrupt;
            break;
          }
        }
        if (!pool->Free(s).ok()) ++errors;
        mine[k] = mine.back();
        mine.pop_back();
      }
    }
    for (auto& [s, tag] : mine) {
      const uint8_t* p = pool->base() + s.offset;
      for (uint64_t j = 0; j < s.requested; ++j) {
        if (p[j] != tag) {
          ++corrupt;
          break;
        }
      }
      if (!pool->Free(s).ok()) ++errors;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  CHECK_EQ(corrupt.load(), 0);
  CHECK_EQ(errors.load(), 0);
  auto s = pool->Stats();
  CHECK_EQ(s.used, 0u);
  CHECK_EQ(s.live, 0u);
  CHECK_EQ(s.allocCount, s.freeCount);
  CHECK(s.highWater > 0);
  std::printf("    allocations %llu, exhausted %d, high water %llu of %llu\n",
              static_cast<unsigned long long>(s.allocCount), exhausted.load(),
              static_cast<unsigned long long>(s.highWater),
              static_cast<unsigned long long>(s.capacity));
}

TEST(forked_child_attaches_by_name_and_shares_bytes) {
  auto pool = MakePool(1 << 20);
  ShmSlice s;
  REQUIRE(pool->Alloc(4096, &s).ok());
  for (int i = 0; i < 4096; ++i) pool->base()[s.offset + i] = static_cast<uint8_t>(i * 7);
  const std::string name = pool->name();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int rc = 0;
    try {
      auto view = ShmPool::Attach(name.substr(1));  // without the leading "/" works too
      if (view->capacity() != pool->capacity() || view->owner()) rc = 2;
      for (int i = 0; i < 4096 && rc == 0; ++i) {
        if (view->base()[s.offset + i] != static_cast<uint8_t>(i * 7)) rc = 3;
      }
      ShmSlice x;
      if (view->Alloc(64, &x).code != ShmErrc::kBadArgument) rc = 4;
      for (int i = 0; i < 4096; ++i) view->base()[s.offset + i] = static_cast<uint8_t>(255 - i % 256);
      view->Close();
    } catch (...) {
      rc = 5;
    }
    // exit() runs the atexit registry in the child: it must not unlink the parent's segment.
    std::exit(rc);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK_EQ(WEXITSTATUS(status), 0);
  bool same = true;
  for (int i = 0; i < 4096; ++i) same = same && pool->base()[s.offset + i] == static_cast<uint8_t>(255 - i % 256);
  CHECK(same);
  CHECK(SegmentExists(name));
}

TEST(close_unlinks_and_attach_then_fails) {
  auto pool = MakePool(1 << 16);
  const std::string name = pool->name();
  CHECK(SegmentExists(name));
  struct stat st;
  REQUIRE(stat(("/dev/shm" + name).c_str(), &st) == 0);
  CHECK_EQ(st.st_mode & 0777, 0600u);
  auto names = mlos::shm_registry::Names();
  CHECK(std::find(names.begin(), names.end(), name) != names.end());
  pool->Close();
  CHECK(!SegmentExists(name));
  CHECK(pool->closed());
  names = mlos::shm_registry::Names();
  CHECK(std::find(names.begin(), names.end(), name) == names.end());
  ShmSlice s;
  CHECK(pool->Alloc(64, &s).code == ShmErrc::kClosed);
  try {
    ShmPool::Attach(name);
    CHECK(false);
  } catch (const mlos::ShmError& e) {
    CHECK(e.code() == ShmErrc::kBadArgument);
  }
  // A taken name is an error, not a crash; a bad name is BAD_ARGUMENT.
  auto other = MakePool(1 << 16);
  ShmCreateOptions o;
  o.size = 4096;
  o.name = other->name();
  try {
    ShmPool::Create(o);
    CHECK(false);
  } catch (const mlos::ShmError& e) {
    CHECK(e.code() == ShmErrc::kFail);
  }
  o.name = "a/b";
  try {
    ShmPool::Create(o);
    CHECK(false);
  } catch (const mlos::ShmError& e) {
    CHECK(e.code() == ShmErrc::kBadArgument);
  }
}

TEST(stale_segments_of_a_killed_process_are_removed) {
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(pipefd[0]);
    auto a = MakePool(1 << 16);
    auto b = MakePool(1 << 16);
    char ok = 1;
    (void)!write(pipefd[1], &ok, 1);
    pause();  // killed by the parent
    _exit(0);
  }
  close(pipefd[1]);
  char ok = 0;
  REQUIRE(read(pipefd[0], &ok, 1) == 1);
  close(pipefd[0]);
  CHECK_EQ(SegmentsOfPid(pid).size(), 2u);
  // While the process lives its segments are not stale.
  ShmPool::CleanupStale();
  CHECK_EQ(SegmentsOfPid(pid).size(), 2u);
  kill(pid, SIGKILL);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status));
  CHECK_EQ(SegmentsOfPid(pid).size(), 2u);  // left behind
  // Creating a pool cleans them up.
  auto pool = MakePool(1 << 16);
  CHECK_EQ(SegmentsOfPid(pid).size(), 0u);
  CHECK(SegmentExists(pool->name()));
}

TEST(registry_unlinks_at_exit) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    auto a = MakePool(1 << 16);
    auto b = MakePool(1 << 16);
    g_keep = new std::shared_ptr<ShmPool>(a);  // never destroyed: only the exit-time registry unlinks it
    std::exit(SegmentsOfPid(getpid()).size() == 2 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK_EQ(WEXITSTATUS(status), 0);
  CHECK_EQ(SegmentsOfPid(pid).size(), 0u);
}

int main() { return mlos_test::RunAll(); }
