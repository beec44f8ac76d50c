// A blob download off the JS thread: one plain-HTTP GET streamed into a file, SHA-256 computed as
// the bytes arrive. Plain C++17 and POSIX sockets, no Node-API (blob_fetch_binding.h wraps it).
//
// One BlobFetcher is one request on its own connection (`Connection: close`):
//   - the calling thread of Run() connects, sends the request, parses the response head and
//     receives the body (Content-Length, chunked, or until the connection closes) into a small
//     ring of large buffers;
//   - a helper thread first hashes the bytes already in the file (a resume from `offset`), then
//     hashes each filled buffer and writes it with pwrite at its place, so that hashing and
//     writing overlap receiving.
// Memory is the ring (buffers x bufferBytes, default 4 x 1 MiB) plus one buffer for the prefix.
//
// Run() never follows redirects and never retries: it reports what happened (status, headers,
// first KiB of an error body, bytes written, digest, or a transport error) and the caller decides.
// Every byte that arrived before a failure is written to the file, so a retry can resume after it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace mlos {

struct BlobFetchOptions {
  // Host name or IP literal (IPv6 without brackets) and port of a plain-HTTP server.
  std::string host;
  uint16_t port = 80;
  // Request target, starting with "/".
  std::string path;
  // Extra request headers (User-Agent, Authorization, Accept ...). Host, Connection,
  // Accept-Encoding and Range are set by the fetcher.
  std::vector<std::pair<std::string, std::string>> headers;
  // The destination file. With offset > 0 it must exist and hold at least `offset` bytes: those
  // are kept, hashed first, and the request asks for `Range: bytes=<offset>-`. A 200 answer to a
  // range request restarts the file from 0.
  std::string file;
  uint64_t offset = 0;
  // The blob's total size when known (-1 when not): a body that would make the file longer fails
  // with kTooLong and nothing past the size is written.
  int64_t expected_size = -1;
  // Give up when no byte arrives for this long (connect has its own limit).
  int stall_timeout_ms = 60000;
  int connect_timeout_ms = 30000;
  size_t buffer_bytes = 1 << 20;
  int buffers = 4;
};

enum class FetchErrc {
  kOk = 0,
  kBadArgument,  // options make no sense (empty host, path without "/", CR/LF in a header)
  kResolve,      // the host name does not resolve
  kConnect,      // connect failed (refused, unreachable)
  kTimeout,      // connect, send or receive stalled past its limit
  kReset,        // the connection failed or closed before the body's end
  kProtocol,     // a malformed response (head, chunk framing, Content-Range)
  kTooLong,      // the body is longer than expected_size allows
  kDiskFull,     // ENOSPC / EDQUOT writing the file
  kFile,         // another error opening, reading or writing the file
  kCanceled,     // Abort() was called
};

// A stable errno-like name for an error: "ECONNREFUSED", "ENOTFOUND", "ETIMEDOUT", "ECONNRESET",
// "EPROTO", "ETOOLONG", "ENOSPC", "EIO", "ECANCELED", "EINVAL"; "" for kOk.
const char* FetchErrcCode(FetchErrc e, int sys_errno);

struct BlobFetchResult {
  // The HTTP status; 0 when no response head arrived.
  int status = 0;
  // Response headers, names lower-cased, in arrival order (repeated names repeat).
  std::vector<std::pair<std::string, std::string>> headers;
  // Up to 1 KiB of the body of a 4xx/5xx answer (not read for 3xx and 416).
  std::string error_body;
  // For 200/206: where the body was written in the file (offset, or 0 when a 200 answered a
  // range request) and how many body bytes were written by this call.
  uint64_t body_offset = 0;
  uint64_t received = 0;
  // Length of the file's meaningful content now: body_offset + received for 200/206, offset for
  // 416 and any other answer.
  uint64_t file_bytes = 0;
  // True when the whole body (200/206) was received and written, or on 416; then sha256_hex is
  // the SHA-256 of the file's first file_bytes bytes.
  bool complete = false;
  std::string sha256_hex;
  FetchErrc error = FetchErrc::kOk;
  int sys_errno = 0;
  std::string message;

  // The first value of a response header (name lower-case), or nullptr.
  const std::string* Header(const std::string& name) const;
};

class BlobFetcher {
 public:
  explicit BlobFetcher(BlobFetchOptions options);
  ~BlobFetcher();
  BlobFetcher(const BlobFetcher&) = delete;
  BlobFetcher& operator=(const BlobFetcher&) = delete;

  // Performs the transfer (blocking; once per object). `progress`, when set, is called from the
  // helper thread with the file's length after each write; it must not block for long.
  BlobFetchResult Run(const std::function<void(uint64_t)>& progress = {});

  // Thread-safe, idempotent: makes Run() stop soon with kCanceled (wakes any wait). Bytes already
  // received are still written.
  void Abort();
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }

  // Native memory the transfer holds while it runs (for AdjustExternalMemory).
  size_t MemoryBytes() const;

  const BlobFetchOptions& options() const { return opt_; }

 private:
  struct Failure {
    FetchErrc code = FetchErrc::kOk;
    int sys_errno = 0;
    std::string message;
  };
  class BodyReader;  // decodes the body framing (blob_fetch.cc)

  // ---- the receiving side (the thread of Run) ----
  void Receive(BlobFetchResult* r);
  int Connect(Failure* f);
  bool SendAll(const std::string& data, Failure* f);
  // Receives up to `cap` bytes: > 0 bytes, 0 end of stream, -1 failure (f set), -2 nothing
  // within idle_ms (only when idle_ms >= 0; the stall deadline still runs).
  long RecvSome(uint8_t* p, size_t cap, int idle_ms, Failure* f);
  // Waits for `events` on the socket (or the wake pipe); 1 ready, 0 timed out, -1 stop (f set).
  int WaitFor(short events, int timeout_ms, Failure* f);
  bool ReadHead(BlobFetchResult* r, std::string* rest, Failure* f);
  // Returns true when the body was received to its end.
  bool ReceiveBody(BlobFetchResult* r, std::string rest, Failure* f);
  void ReadErrorBody(BlobFetchResult* r, std::string rest);
  // The reason to stop when the transfer was aborted or the writer failed.
  void StopReason(Failure* f) const;

  // ---- the ring ----
  int AcquireFree();  // a free buffer index, or -1 when the transfer must stop
  void PushFilled(int index, size_t len);

  // ---- the hashing and writing side (the helper thread) ----
  void HashAndWrite(const std::function<void(uint64_t)>& progress);
  void FailWriter(FetchErrc code, int err, std::string message);
  void Wake();

  BlobFetchOptions opt_;
  int sock_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<bool> aborted_{false};
  std::atomic<bool> writer_failed_{false};
  int64_t stall_deadline_ms_ = 0;

  struct Slot {
    std::unique_ptr<uint8_t[]> data;
    size_t len = 0;
  };
  std::vector<Slot> slots_;
  size_t prefix_bytes_ = 0;

  std::mutex mu_;
  std::condition_variable cv_filled_;
  std::condition_variable cv_free_;
  std::deque<int> filled_;
  std::vector<int> free_;
  bool body_begun_ = false;
  uint64_t body_start_ = 0;
  bool receive_done_ = false;
  std::atomic<int64_t> body_start_hint_{-1};

  // Written by the helper thread, read by Run after joining it.
  Failure writer_failure_;
  uint64_t written_ = 0;
  bool file_opened_ = false;
  bool digest_ok_ = false;
  std::string digest_hex_;
  bool ran_ = false;
};

// Hex SHA-256 of a buffer (OpenSSL EVP); "" when the digest could not be computed.
std::string Sha256Hex(const void* data, size_t len);

}  // namespace mlos
