// Unit tests for BlobFetcher (native/src/fetch/blob_fetch.h) against a tiny HTTP server on a loopback
// socket in this process: full bodies, ranged resumes, a server that ignores the Range, chunked and
// read-until-close bodies, error bodies passed through, redirects left to the caller, a connection
// cut mid-body, a stall, an abort, a body longer than expected, a full disk (/dev/full).
#include "fetch/blob_fetch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_harness.h"

using mlos::BlobFetcher;
using mlos::BlobFetchOptions;
using mlos::BlobFetchResult;
using mlos::FetchErrc;
using mlos::FetchErrcCode;
using mlos::Sha256Hex;

namespace {

// One connection at a time: reads the request head, hands it to the handler, closes.
class TestServer {
 public:
  using Handler = std::function<void(int fd, const std::string& request)>;

  explicit TestServer(Handler handler) : handler_(std::move(handler)) {
    listen_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(listen_, 16) != 0) {
      std::perror("bind/listen");
      return;
    }
    socklen_t len = sizeof a;
    getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }

  ~TestServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    close(listen_);
  }

  uint16_t port() const { return port_; }

  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> lk(mu_);
    return requests_;
  }

 private:
  void Loop() {
    while (!stop_) {
      pollfd p{listen_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      const int fd = accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        head.append(buf, static_cast<size_t>(n));
      }
      {
        std::lock_guard<std::mutex> lk(mu_);
        requests_.push_back(head);
      }
      handler_(fd, head);
      close(fd);
    }
  }

  Handler handler_;
  int listen_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> requests_;
};

void Send(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w <= 0) return;
    c += w;
    n -= static_cast<size_t>(w);
  }
}
void Send(int fd, const std::string& s) { Send(fd, s.data(), s.size()); }

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::string TempFile() {
  const char* dir = std::getenv("TMPDIR");
  std::string path = std::string(dir && *dir ? dir : "/tmp") + "/blob-fetch-test-XXXXXX";
  const int fd = mkstemp(&path[0]);
  if (fd >= 0) close(fd);
  unlink(path.c_str());
  return path;
}

std::string ReadFile(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

void WriteFile(const std::string& path, const std::string& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string Head(int status, const std::string& reason, const std::vector<std::string>& headers) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
  for (const auto& x : headers) h += x + "\r\n";
  return h + "\r\n";
}

BlobFetchOptions Options(uint16_t port, const std::string& file) {
  BlobFetchOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.path = "/v2/acme/net/blobs/sha256:abc";
  o.headers = {{"User-Agent", "blob-fetch-test"}, {"Authorization", "Bearer t0ken"}};
  o.file = file;
  o.buffer_bytes = 64 << 10;  // small buffers: many hand-overs between the two threads
  o.stall_timeout_ms = 5000;
  return o;
}

// Range start asked for by a request head, or 0.
uint64_t RangeStart(const std::string& req) {
  const size_t p = req.find("Range: bytes=");
  return p == std::string::npos ? 0 : std::stoull(req.substr(p + 13));
}

}  // namespace

TEST(sha256_matches_a_known_vector) {
  CHECK_EQ(Sha256Hex("abc", 3), std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  CHECK_EQ(Sha256Hex("", 0), std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
}

TEST(a_200_body_is_written_hashed_and_reported) {
  const std::string data = RandomBytes(3 << 20, 1);
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Content-Length: " + std::to_string(data.size()), "Content-Type: application/octet-stream"}));
    // Several writes of odd sizes.
    for (size_t off = 0; off < data.size(); off += 100003) Send(fd, data.data() + off, std::min<size_t>(100003, data.size() - off));
  });
  const std::string file = TempFile();
  BlobFetcher f(Options(srv.port(), file));
  std::vector<uint64_t> seen;
  const BlobFetchResult r = f.Run([&](uint64_t n) { seen.push_back(n); });
  CHECK_EQ(r.status, 200);
  CHECK(r.error == FetchErrc::kOk);
  CHECK(r.complete);
  CHECK_EQ(r.received, data.size());
  CHECK_EQ(r.file_bytes, data.size());
  CHECK_EQ(r.body_offset, 0u);
  CHECK_EQ(r.sha256_hex, Sha256Hex(data.data(), data.size()));
  CHECK(ReadFile(file) == data);
  REQUIRE(!seen.empty());
  CHECK_EQ(seen.back(), data.size());
  for (size_t i = 1; i < seen.size(); ++i) CHECK(seen[i] > seen[i - 1]);
  REQUIRE(r.Header("content-type") != nullptr);
  CHECK_EQ(*r.Header("content-type"), std::string("application/octet-stream"));
  const auto reqs = srv.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].rfind("GET /v2/acme/net/blobs/sha256:abc HTTP/1.1\r\n", 0) == 0);
  CHECK(reqs[0].find("Host: 127.0.0.1:" + std::to_string(srv.port()) + "\r\n") != std::string::npos);
  CHECK(reqs[0].find("Authorization: Bearer t0ken\r\n") != std::string::npos);
  CHECK(reqs[0].find("Connection: close\r\n") != std::string::npos);
  CHECK(reqs[0].find("Range:") == std::string::npos);
  unlink(file.c_str());
}

TEST(a_206_resume_hashes_the_kept_prefix_and_appends) {
  const std::string data = RandomBytes(2 << 20, 2);
  const size_t kept = 777777;
  TestServer srv([&](int fd, const std::string& req) {
    const uint64_t from = RangeStart(req);
    Send(fd, Head(206, "Partial Content",
                  {"Content-Length: " + std::to_string(data.size() - from),
                   "Content-Range: bytes " + std::to_string(from) + "-" + std::to_string(data.size() - 1) + "/" +
                       std::to_string(data.size())}));
    Send(fd, data.data() + from, data.size() - from);
  });
  const std::string file = TempFile();
  WriteFile(file, data.substr(0, kept) + "stale tail that must go");
  BlobFetchOptions o = Options(srv.port(), file);
  o.offset = kept;
  o.expected_size = static_cast<int64_t>(data.size());
  BlobFetcher f(o);
  const BlobFetchResult r = f.Run();
  CHECK_EQ(r.status, 206);
  CHECK(r.complete);
  CHECK_EQ(r.body_offset, kept);
  CHECK_EQ(r.received, data.size() - kept);
  CHECK_EQ(r.file_bytes, data.size());
  CHECK_EQ(r.sha256_hex, Sha256Hex(data.data(), data.size()));
  CHECK(ReadFile(file) == data);
  const auto reqs = srv.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].find("Range: bytes=777777-\r\n") != std::string::npos);
  unlink(file.c_str());
}

TEST(a_200_answer_to_a_range_request_starts_the_file_over) {
  const std::string data = RandomBytes(300000, 3);
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Content-Length: " + std::to_string(data.size())}));
    Send(fd, data);
  });
  const std::string file = TempFile();
  WriteFile(file, RandomBytes(1000, 99));  // not a prefix of data: must not survive
  BlobFetchOptions o = Options(srv.port(), file);
  o.offset = 1000;
  BlobFetcher f(o);
  const BlobFetchResult r = f.Run();
  CHECK_EQ(r.status, 200);
  CHECK(r.complete);
  CHECK_EQ(r.body_offset, 0u);
  CHECK_EQ(r.file_bytes, data.size());
  CHECK_EQ(r.sha256_hex, Sha256Hex(data.data(), data.size()));
  CHECK(ReadFile(file) == data);
  unlink(file.c_str());
}

TEST(a_206_from_the_wrong_byte_is_a_protocol_error_and_leaves_the_file) {
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(206, "Partial Content", {"Content-Length: 5", "Content-Range: bytes 3-7/8"}));
    Send(fd, "hello");
  });
  const std::string file = TempFile();
  WriteFile(file, "0123456789");
  BlobFetchOptions o = Options(srv.port(), file);
  o.offset = 10;
  BlobFetcher f(o);
  const BlobFetchResult r = f.Run();
  CHECK_EQ(r.status, 206);
  CHECK(r.error == FetchErrc::kProtocol);
  CHECK(!r.complete);
  CHECK_EQ(r.file_bytes, 10u);
  CHECK(ReadFile(file) == "0123456789");
  unlink(file.c_str());
}

TEST(a_chunked_body_is_decoded) {
  const std::string data = RandomBytes(1 << 20, 4);
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Transfer-Encoding: chunked"}));
    size_t off = 0, n = 1;
    char line[64];
    while (off < data.size()) {
      const size_t len = std::min(n, data.size() - off);
      std::snprintf(line, sizeof line, "%zx;ext=1\r\n", len);
      Send(fd, line);
      Send(fd, data.data() + off, len);
      Send(fd, "\r\n");
      off += len;
      n = n * 3 + 7;
    }
    Send(fd, "0\r\nX-Trailer: yes\r\n\r\n");
  });
  const std::string file = TempFile();
  BlobFetcher f(Options(srv.port(), file));
  const BlobFetchResult r = f.Run();
  CHECK_EQ(r.status, 200);
  CHECK(r.error == FetchErrc::kOk);
  CHECK(r.complete);
  CHECK_EQ(r.file_bytes, data.size());
  CHECK_EQ(r.sha256_hex, Sha256Hex(data.data(), data.size()));
  CHECK(ReadFile(file) == data);
  unlink(file.c_str());
}

TEST(a_body_without_length_ends_when_the_connection_closes) {
  const std::string data = RandomBytes(500000, 5);
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {}));
    Send(fd, data);
  });
  const std::string file = TempFile();
  BlobFetcher f(Options(srv.port(), file));
  const BlobFetchResult r = f.Run();
  CHECK(r.complete);
  CHECK_EQ(r.file_bytes, data.size());
  CHECK_EQ(r.sha256_hex, Sha256Hex(data.data(), data.size()));
  unlink(file.c_str());
}

TEST(error_answers_pass_status_headers_and_body_through_and_touch_no_file) {
  const std::string body404 = R"({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]})";
  const std::string big500(5000, 'x');
  std::atomic<int> which{0};
  TestServer srv([&](int fd, const std::string&) {
    if (which == 0) {
      Send(fd, Head(404, "Not Found", {"Content-Type: application/json", "Content-Length: " + std::to_string(body404.size())}));
      Send(fd, body404);
    } else if (which == 1) {
      Send(fd, Head(500, "Internal Server Error", {"Transfer-Encoding: chunked", "Retry-After: 3"}));
      Send(fd, "1388\r\n" + big500 + "\r\n0\r\n\r\n");
    } else if (which == 2) {
      Send(fd, Head(307, "Temporary Redirect", {"Location: http://elsewhere.example/blob?sig=1", "Content-Length: 100000"}));
      // no body at all: the fetcher must not wait for one
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    } else {
      Send(fd, Head(401, "Unauthorized", {"WWW-Authenticate: Bearer realm=\"http://a/token\",service=\"r\"", "WWW-Authenticate: Basic realm=\"x\"", "Content-Length: 2"}));
      Send(fd, "{}");
    }
  });
  const std::string file = TempFile();
  {
    BlobFetcher f(Options(srv.port(), file));
    const BlobFetchResult r = f.Run();
    CHECK_EQ(r.status, 404);
    CHECK(r.error == FetchErrc::kOk);
    CHECK(!r.complete);
    CHECK_EQ(r.error_body, body404);
    CHECK(!Exists(file));
  }
  which = 1;
  {
    BlobFetcher f(Options(srv.port(), file));
    const BlobFetchResult r = f.Run();
    CHECK_EQ(r.status, 500);
    CHECK_EQ(r.error_body.size(), 1024u);
    REQUIRE(r.Header("retry-after") != nullptr);
    CHECK_EQ(*r.Header("retry-after"), std::string("3"));
    CHECK(!Exists(file));
  }
  which = 2;
  {
    BlobFetcher f(Options(srv.port(), file));
    const auto t0 = std::chrono::steady_clock::now();
    const BlobFetchResult r = f.Run();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    CHECK_EQ(r.status, 307);
    REQUIRE(r.Header("location") != nullptr);
    CHECK_EQ(*r.Header("location"), std::string("http://elsewhere.example/blob?sig=1"));
    CHECK(r.error_body.empty());
    CHECK(ms < 1000);
    CHECK(!Exists(file));
  }
  which = 3;
  {
    BlobFetcher f(Options(srv.port(), file));
    const BlobFetchResult r = f.Run();
    CHECK_EQ(r.status, 401);
    int n = 0;
    for (const auto& h : r.headers) n += h.first == "www-authenticate";
    CHECK_EQ(n, 2);
  }
}

TEST(a_connection_cut_mid_body_keeps_every_byte_that_arrived) {
  const std::string data = RandomBytes(2 << 20, 6);
  const size_t sent = 1234567;
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Content-Length: " + std::to_string(data.size())}));
    Send(fd, data.data(), sent);
  });
  const std::string file = TempFile();
  BlobFetcher f(Options(srv.port(), file));
  const BlobFetchResult r = f.Run();
  CHECK_EQ(r.status, 200);
  CHECK(r.error == FetchErrc::kReset);
  CHECK_EQ(std::string(FetchErrcCode(r.error, r.sys_errno)), std::string("ECONNRESET"));
  CHECK(!r.complete);
  CHECK(r.sha256_hex.empty());
  CHECK_EQ(r.received, sent);
  CHECK_EQ(r.file_bytes, sent);
  CHECK(ReadFile(file) == data.substr(0, sent));
  unlink(file.c_str());
}

TEST(a_stalled_server_times_out_and_what_arrived_is_kept) {
  std::atomic<bool> release{false};
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Content-Length: 1000000"}));
    Send(fd, std::string(1000, 'a'));
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  });
  const std::string file = TempFile();
  BlobFetchOptions o = Options(srv.port(), file);
  o.stall_timeout_ms = 300;
  BlobFetcher f(o);
  const auto t0 = std::chrono::steady_clock::now();
  const BlobFetchResult r = f.Run();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  release = true;
  CHECK(r.error == FetchErrc::kTimeout);
  CHECK_EQ(std::string(FetchErrcCode(r.error, 0)), std::string("ETIMEDOUT"));
  CHECK(ms >= 250 && ms < 3000);
  CHECK_EQ(r.file_bytes, 1000u);
  CHECK(ReadFile(file) == std::string(1000, 'a'));
  unlink(file.c_str());
}

TEST(abort_stops_a_transfer_promptly) {
  std::atomic<bool> release{false};
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Content-Length: 1000000"}));
    Send(fd, std::string(5000, 'b'));
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  });
  const std::string file = TempFile();
  BlobFetcher f(Options(srv.port(), file));
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    f.Abort();
  });
  const auto t0 = std::chrono::steady_clock::now();
  const BlobFetchResult r = f.Run();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  aborter.join();
  release = true;
  CHECK(r.error == FetchErrc::kCanceled);
  CHECK(ms < 2000);
  CHECK_EQ(r.file_bytes, 5000u);
  unlink(file.c_str());
}

TEST(an_abort_before_the_start_cancels_and_leaves_the_file) {
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Content-Length: 3"}));
    Send(fd, "abc");
  });
  const std::string file = TempFile();
  WriteFile(file, RandomBytes(3 << 20, 10));
  BlobFetchOptions o = Options(srv.port(), file);
  o.offset = 3 << 20;
  BlobFetcher f(o);
  f.Abort();
  const BlobFetchResult r = f.Run();
  CHECK(r.error == FetchErrc::kCanceled);
  CHECK(!r.complete);
  CHECK_EQ(r.file_bytes, uint64_t{3} << 20);
  struct stat st;
  CHECK(stat(file.c_str(), &st) == 0 && st.st_size == (3 << 20));
  unlink(file.c_str());
}

TEST(an_abort_after_the_head_before_any_byte_creates_no_file) {
  std::atomic<bool> release{false};
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Content-Length: 100"}));
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  });
  const std::string file = TempFile();
  BlobFetcher f(Options(srv.port(), file));
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    f.Abort();
  });
  const BlobFetchResult r = f.Run();
  aborter.join();
  release = true;
  CHECK(r.error == FetchErrc::kCanceled);
  CHECK_EQ(r.status, 200);
  CHECK(!Exists(file));
}

TEST(an_empty_body_makes_an_empty_file) {
  TestServer srv([&](int fd, const std::string&) { Send(fd, Head(200, "OK", {"Content-Length: 0"})); });
  const std::string file = TempFile();
  BlobFetcher f(Options(srv.port(), file));
  const BlobFetchResult r = f.Run();
  CHECK(r.complete);
  CHECK_EQ(r.file_bytes, 0u);
  CHECK_EQ(r.sha256_hex, Sha256Hex("", 0));
  struct stat st;
  CHECK(stat(file.c_str(), &st) == 0 && st.st_size == 0);
  unlink(file.c_str());
}

TEST(a_body_longer_than_expected_is_refused) {
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Content-Length: 2000"}));
    Send(fd, std::string(2000, 'c'));
  });
  const std::string file = TempFile();
  BlobFetchOptions o = Options(srv.port(), file);
  o.expected_size = 1000;
  BlobFetcher f(o);
  const BlobFetchResult r = f.Run();
  CHECK(r.error == FetchErrc::kTooLong);
  CHECK_EQ(r.received, 0u);
  CHECK(!Exists(file));
  // Without a length, the body is cut at the expected size.
  TestServer srv2([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {}));
    Send(fd, std::string(2000, 'c'));
  });
  BlobFetchOptions o2 = Options(srv2.port(), file);
  o2.expected_size = 1000;
  BlobFetcher f2(o2);
  const BlobFetchResult r2 = f2.Run();
  CHECK(r2.error == FetchErrc::kTooLong);
  CHECK(!r2.complete);
  CHECK_EQ(r2.file_bytes, 1000u);
  unlink(file.c_str());
}

TEST(a_416_for_a_complete_file_reports_its_digest) {
  const std::string data = RandomBytes(70000, 7);
  TestServer srv([&](int fd, const std::string&) {
    // distribution sends the blob's length with an empty 416 body
    Send(fd, Head(416, "Requested Range Not Satisfiable", {"Content-Length: 70000", "Content-Range: bytes */70000"}));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  });
  const std::string file = TempFile();
  WriteFile(file, data);
  BlobFetchOptions o = Options(srv.port(), file);
  o.offset = data.size();
  BlobFetcher f(o);
  const BlobFetchResult r = f.Run();
  CHECK_EQ(r.status, 416);
  CHECK(r.complete);
  CHECK_EQ(r.file_bytes, data.size());
  CHECK_EQ(r.sha256_hex, Sha256Hex(data.data(), data.size()));
  unlink(file.c_str());
}

TEST(a_full_disk_is_reported_as_enospc) {
  if (!Exists("/dev/full")) {
    mlos_test::Skip("no /dev/full");
    return;
  }
  const std::string data = RandomBytes(1 << 20, 8);
  TestServer srv([&](int fd, const std::string&) {
    Send(fd, Head(200, "OK", {"Content-Length: " + std::to_string(data.size())}));
    Send(fd, data);
  });
  BlobFetcher f(Options(srv.port(), "/dev/full"));
  const BlobFetchResult r = f.Run();
  CHECK(r.error == FetchErrc::kDiskFull);
  CHECK_EQ(std::string(FetchErrcCode(r.error, r.sys_errno)), std::string("ENOSPC"));
  CHECK(!r.complete);
}

TEST(refused_connections_and_bad_arguments_fail_cleanly) {
  uint16_t port;
  {
    TestServer srv([](int, const std::string&) {});
    port = srv.port();
  }  // closed: nothing listens there now
  const std::string file = TempFile();
  {
    BlobFetcher f(Options(port, file));
    const BlobFetchResult r = f.Run();
    CHECK(r.error == FetchErrc::kConnect);
    CHECK_EQ(std::string(FetchErrcCode(r.error, r.sys_errno)), std::string("ECONNREFUSED"));
    CHECK_EQ(r.status, 0);
  }
  {
    BlobFetchOptions o = Options(port, file);
    o.headers.push_back({"X-Evil", "a\r\nInjected: 1"});
    BlobFetcher f(o);
    CHECK(f.Run().error == FetchErrc::kBadArgument);
  }
  {
    BlobFetchOptions o = Options(port, file);
    o.path = "/a b";
    BlobFetcher f(o);
    CHECK(f.Run().error == FetchErrc::kBadArgument);
  }
  {
    BlobFetchOptions o = Options(port, file);
    o.host = "no-such-host.invalid";
    BlobFetcher f(o);
    CHECK(f.Run().error == FetchErrc::kResolve);
  }
  CHECK(!Exists(file));
}

int main() { return mlos_test::RunAll(); }
