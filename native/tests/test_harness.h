// A tiny test harness for the native unit tests: no dependencies, no downloads.
//
//   TEST(name) { CHECK(cond); CHECK_EQ(a, b); REQUIRE(cond); }
//   int main() { return mlos_test::RunAll(); }
//
// CHECK records a failure and goes on; REQUIRE records one and leaves the test. Every test runs
// (in declaration order) and the last line printed is exactly "N passed, M failed"; the exit code
// is 0 only when M is 0. A test may print "SKIP: reason" through mlos_test::Skip(reason).
#pragma once

#include <cstdio>
#include <exception>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace mlos_test {

struct Case {
  const char* name;
  void (*fn)();
};

inline std::vector<Case>& Cases() {
  static std::vector<Case> cases;
  return cases;
}

inline int& CurrentFailures() {
  static int n = 0;
  return n;
}

struct Register {
  Register(const char* name, void (*fn)()) { Cases().push_back({name, fn}); }
};

struct RequireFailed {};

inline void Fail(const char* file, int line, const std::string& what) {
  ++CurrentFailures();
  std::fprintf(stderr, "    %s:%d: %s\n", file, line, what.c_str());
}

inline void Skip(const std::string& reason) { std::printf("    SKIP: %s\n", reason.c_str()); }

template <typename A, typename B>
std::string Describe(const char* ea, const char* eb, const A& a, const B& b) {
  std::ostringstream o;
  o << "expected " << ea << " == " << eb << ", got " << a << " vs " << b;
  return o.str();
}

inline int RunAll() {
  int passed = 0, failed = 0;
  for (const Case& c : Cases()) {
    CurrentFailures() = 0;
    std::printf("  %s\n", c.name);
    std::fflush(stdout);
    try {
      c.fn();
    } catch (const RequireFailed&) {
    } catch (const std::exception& e) {
      Fail(__FILE__, __LINE__, std::string("uncaught exception: ") + e.what());
    } catch (...) {
      Fail(__FILE__, __LINE__, "uncaught exception");
    }
    if (CurrentFailures() == 0) {
      ++passed;
      std::printf("  ok %s\n", c.name);
    } else {
      ++failed;
      std::printf("  FAILED %s\n", c.name);
    }
    std::fflush(stdout);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace mlos_test

#define MLOS_TEST_CAT2(a, b) a##b
#define MLOS_TEST_CAT(a, b) MLOS_TEST_CAT2(a, b)
#define TEST(name)                                                                     \
  static void MLOS_TEST_CAT(test_fn_, name)();                                         \
  static ::mlos_test::Register MLOS_TEST_CAT(test_reg_, name)(#name,                   \
                                                              &MLOS_TEST_CAT(test_fn_, name)); \
  static void MLOS_TEST_CAT(test_fn_, name)()

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) ::mlos_test::Fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define REQUIRE(cond)                                                        \
  do {                                                                       \
    if (!(cond)) {                                                           \
      ::mlos_test::Fail(__FILE__, __LINE__, "REQUIRE(" #cond ")");           \
      throw ::mlos_test::RequireFailed{};                                    \
    }                                                                        \
  } while (0)

#define CHECK_EQ(a, b)                                                                   \
  do {                                                                                   \
    const auto& mlos_a_ = (a);                                                           \
    const auto& mlos_b_ = (b);                                                           \
    if (!(mlos_a_ == mlos_b_))                                                           \
      ::mlos_test::Fail(__FILE__, __LINE__, ::mlos_test::Describe(#a, #b, mlos_a_, mlos_b_)); \
  } while (0)
