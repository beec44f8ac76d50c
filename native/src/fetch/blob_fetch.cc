// The native blob fetcher; see blob_fetch.h.
#include "fetch/blob_fetch.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <thread>

namespace mlos {

namespace {

constexpr size_t kMaxHeadBytes = 64 << 10;
constexpr size_t kMaxErrorBody = 1024;
constexpr size_t kChunkScratch = 64 << 10;
constexpr size_t kMaxChunkLine = 4096;
// A partly filled buffer is handed to the writer when the network pauses this long, so that a
// slow transfer still reaches the disk (and the progress callback) steadily.
constexpr int kIdleFlushMs = 100;
// Reading the body of an error answer never waits longer than this.
constexpr int kErrorBodyMs = 5000;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string ErrnoText(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) --b;
  return s.substr(a, b - a);
}

bool ParseDecimal(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

bool IsTokenChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool ValidHeaderName(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

bool ValidHeaderValue(const std::string& s) {
  return std::none_of(s.begin(), s.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

bool ValidTarget(const std::string& s) {
  return !s.empty() && s[0] == '/' &&
         std::none_of(s.begin(), s.end(), [](char c) {
           return static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) == 0x7f;
         });
}

// SHA-256 through OpenSSL's EVP interface (the symbols of Node's own OpenSSL in the addon, of
// libcrypto in the test binaries).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { Reset(); }
  ~Sha256() {
    if (ctx_ != nullptr) EVP_MD_CTX_free(ctx_);
  }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  bool Reset() {
    ok_ = ctx_ != nullptr && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1;
    return ok_;
  }
  void Update(const void* p, size_t n) {
    if (ok_ && n > 0) ok_ = EVP_DigestUpdate(ctx_, p, n) == 1;
  }
  bool Final(std::string* hex) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!ok_ || EVP_DigestFinal_ex(ctx_, md, &len) != 1) return false;
    ok_ = false;
    static const char kHex[] = "0123456789abcdef";
    hex->resize(len * 2);
    for (unsigned int i = 0; i < len; ++i) {
      (*hex)[2 * i] = kHex[md[i] >> 4];
      (*hex)[2 * i + 1] = kHex[md[i] & 15];
    }
    return true;
  }
  bool ok() const { return ok_; }

 private:
  EVP_MD_CTX* ctx_;
  bool ok_ = false;
};

// Parses a response head (without its blank line). Returns false when it is malformed.
bool ParseHead(const std::string& head, int* status,
               std::vector<std::pair<std::string, std::string>>* headers) {
  size_t pos = 0;
  auto next_line = [&](std::string* line) {
    if (pos >= head.size()) return false;
    size_t nl = head.find('\n', pos);
    if (nl == std::string::npos) nl = head.size();
    *line = head.substr(pos, nl - pos);
    if (!line->empty() && line->back() == '\r') line->pop_back();
    pos = nl + 1;
    return true;
  };
  std::string line;
  if (!next_line(&line) || line.compare(0, 7, "HTTP/1.") != 0 || line.size() < 12 || line[8] != ' ')
    return false;
  int st = 0;
  for (int i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return false;
    st = st * 10 + (line[i] - '0');
  }
  if (line.size() > 12 && line[12] != ' ') return false;
  *status = st;
  headers->clear();
  while (next_line(&line)) {
    if (line.empty()) continue;
    if (line[0] == ' ' || line[0] == '\t') {  // obsolete line folding
      if (headers->empty()) return false;
      headers->back().second += " " + Trim(line);
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string::npos) return false;
    std::string name = line.substr(0, colon);
    if (!ValidHeaderName(name)) return false;
    headers->emplace_back(Lower(name), Trim(line.substr(colon + 1)));
  }
  return true;
}

// "bytes START-END/TOTAL" (TOTAL may be "*"): START, or false.
bool ParseContentRangeStart(const std::string& v, uint64_t* start) {
  std::string s = Lower(Trim(v));
  if (s.compare(0, 5, "bytes") != 0) return false;
  s = Trim(s.substr(5));
  const size_t dash = s.find('-');
  if (dash == std::string::npos) return false;
  return ParseDecimal(Trim(s.substr(0, dash)), start);
}

}  // namespace

const char* FetchErrcCode(FetchErrc e, int err) {
  switch (e) {
    case FetchErrc::kOk:
      return "";
    case FetchErrc::kBadArgument:
      return "EINVAL";
    case FetchErrc::kResolve:
      return "ENOTFOUND";
    case FetchErrc::kConnect:
      switch (err) {
        case EHOSTUNREACH:
          return "EHOSTUNREACH";
        case ENETUNREACH:
          return "ENETUNREACH";
        case ECONNRESET:
          return "ECONNRESET";
        default:
          return "ECONNREFUSED";
      }
    case FetchErrc::kTimeout:
      return "ETIMEDOUT";
    case FetchErrc::kReset:
      return err == EPIPE ? "EPIPE" : "ECONNRESET";
    case FetchErrc::kProtocol:
      return "EPROTO";
    case FetchErrc::kTooLong:
      return "ETOOLONG";
    case FetchErrc::kDiskFull:
      return err == EDQUOT ? "EDQUOT" : "ENOSPC";
    case FetchErrc::kFile:
      switch (err) {
        case ENOENT:
          return "ENOENT";
        case EACCES:
          return "EACCES";
        case EROFS:
          return "EROFS";
        case EISDIR:
          return "EISDIR";
        default:
          return "EIO";
      }
    case FetchErrc::kCanceled:
      return "ECANCELED";
  }
  return "EIO";
}

const std::string* BlobFetchResult::Header(const std::string& name) const {
  for (const auto& h : headers) {
    if (h.first == name) return &h.second;
  }
  return nullptr;
}

std::string Sha256Hex(const void* data, size_t len) {
  Sha256 sha;
  sha.Update(data, len);
  std::string hex;
  return sha.Final(&hex) ? hex : std::string();
}

// ---- body framing ---------------------------------------------------------------------------

class BlobFetcher::BodyReader {
 public:
  enum Framing { kLength, kChunked, kClose };

  BodyReader(BlobFetcher* f, Framing framing, uint64_t length, std::string rest)
      : f_(f), framing_(framing), left_(length), pending_(std::move(rest)) {
    if (framing_ == kChunked) scratch_.reset(new uint8_t[kChunkScratch]);
  }

  // > 0: bytes of body copied into dst; 0: the body ended; -1: failure (fail set); -2: nothing
  // arrived within idle_ms (idle_ms >= 0 only).
  long Read(uint8_t* dst, size_t cap, int idle_ms, Failure* fail) {
    if (cap == 0) return -1;
    switch (framing_) {
      case kClose:
        return Raw(dst, cap, idle_ms, fail);
      case kLength: {
        if (left_ == 0) return 0;
        const long n = Raw(dst, static_cast<size_t>(std::min<uint64_t>(cap, left_)), idle_ms, fail);
        if (n == 0) {
          fail->code = FetchErrc::kReset;
          fail->message = "the connection closed " + std::to_string(left_) +
                          " bytes before the end of the body";
          return -1;
        }
        if (n > 0) left_ -= static_cast<uint64_t>(n);
        return n;
      }
      case kChunked:
        return ReadChunked(dst, cap, idle_ms, fail);
    }
    return -1;
  }

 private:
  // Bytes left over from the head first, then the socket.
  long Raw(uint8_t* dst, size_t cap, int idle_ms, Failure* fail) {
    if (pending_pos_ < pending_.size()) {
      const size_t n = std::min(cap, pending_.size() - pending_pos_);
      std::memcpy(dst, pending_.data() + pending_pos_, n);
      pending_pos_ += n;
      if (pending_pos_ == pending_.size()) {
        pending_.clear();
        pending_pos_ = 0;
      }
      return static_cast<long>(n);
    }
    return f_->RecvSome(dst, cap, idle_ms, fail);
  }

  // One byte of chunk framing: 1 got it, else Raw's result.
  long FramingByte(char* c, int idle_ms, Failure* fail) {
    if (sc_pos_ == sc_len_) {
      const long n = Raw(scratch_.get(), kChunkScratch, idle_ms, fail);
      if (n <= 0) return n;
      sc_pos_ = 0;
      sc_len_ = static_cast<size_t>(n);
    }
    *c = static_cast<char>(scratch_[sc_pos_++]);
    return 1;
  }

  // A framing line (without CR LF): 1 complete, else a Read result.
  long Line(int idle_ms, Failure* fail) {
    for (;;) {
      char c;
      const long n = FramingByte(&c, idle_ms, fail);
      if (n == 0) {
        fail->code = FetchErrc::kReset;
        fail->message = "the connection closed inside the chunked body";
        return -1;
      }
      if (n < 0) return n;
      if (c == '\n') {
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        return 1;
      }
      line_ += c;
      if (line_.size() > kMaxChunkLine) {
        fail->code = FetchErrc::kProtocol;
        fail->message = "a chunk-size or trailer line longer than 4 KiB";
        return -1;
      }
    }
  }

  long ReadChunked(uint8_t* dst, size_t cap, int idle_ms, Failure* fail) {
    for (;;) {
      switch (state_) {
        case kDone:
          return 0;
        case kData: {
          if (chunk_left_ == 0) {
            state_ = kDataEnd;
            continue;
          }
          const size_t want = static_cast<size_t>(std::min<uint64_t>(cap, chunk_left_));
          long n;
          if (sc_pos_ < sc_len_) {
            n = static_cast<long>(std::min(want, sc_len_ - sc_pos_));
            std::memcpy(dst, scratch_.get() + sc_pos_, static_cast<size_t>(n));
            sc_pos_ += static_cast<size_t>(n);
          } else {
            n = Raw(dst, want, idle_ms, fail);  // straight into the caller's buffer
            if (n == 0) {
              fail->code = FetchErrc::kReset;
              fail->message = "the connection closed inside a chunk";
              return -1;
            }
            if (n < 0) return n;
          }
          chunk_left_ -= static_cast<uint64_t>(n);
          return n;
        }
        case kDataEnd:
        case kSize:
        case kTrailer: {
          const long n = Line(idle_ms, fail);
          if (n != 1) return n;
          std::string line;
          line.swap(line_);
          if (state_ == kDataEnd) {
            if (!line.empty()) {
              fail->code = FetchErrc::kProtocol;
              fail->message = "a chunk is not followed by CR LF";
              return -1;
            }
            state_ = kSize;
          } else if (state_ == kSize) {
            const std::string hex = Trim(line.substr(0, line.find(';')));
            uint64_t size = 0;
            if (hex.empty() || hex.size() > 15) {
              fail->code = FetchErrc::kProtocol;
              fail->message = "an invalid chunk size";
              return -1;
            }
            for (char c : hex) {
              const int d = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                            : (c >= 'a' && c <= 'f')                   ? c - 'a' + 10
                            : (c >= 'A' && c <= 'F')                   ? c - 'A' + 10
                                                                       : -1;
              if (d < 0) {
                fail->code = FetchErrc::kProtocol;
                fail->message = "an invalid chunk size";
                return -1;
              }
              size = size * 16 + static_cast<uint64_t>(d);
            }
            chunk_left_ = size;
            state_ = size == 0 ? kTrailer : kData;
          } else if (line.empty()) {
            state_ = kDone;
          }
          continue;
        }
      }
    }
  }

  enum State { kSize, kData, kDataEnd, kTrailer, kDone };

  BlobFetcher* f_;
  Framing framing_;
  uint64_t left_;
  std::string pending_;
  size_t pending_pos_ = 0;
  State state_ = kSize;
  uint64_t chunk_left_ = 0;
  std::string line_;
  std::unique_ptr<uint8_t[]> scratch_;
  size_t sc_pos_ = 0;
  size_t sc_len_ = 0;
};

// ---- the fetcher ------------------------------------------------------------------------------

BlobFetcher::BlobFetcher(BlobFetchOptions options) : opt_(std::move(options)) {
  if (pipe(wake_) == 0) {
    for (int fd : wake_) {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
  } else {
    wake_[0] = wake_[1] = -1;
  }
}

BlobFetcher::~BlobFetcher() {
  if (sock_ >= 0) close(sock_);
  for (int fd : wake_) {
    if (fd >= 0) close(fd);
  }
}

size_t BlobFetcher::MemoryBytes() const {
  const size_t buffers = static_cast<size_t>(std::max(1, opt_.buffers));
  return (buffers + (opt_.offset > 0 ? 1 : 0)) * opt_.buffer_bytes + kChunkScratch + kMaxHeadBytes;
}

void BlobFetcher::Wake() {
  if (wake_[1] >= 0) {
    const char c = 1;
    ssize_t ignored = write(wake_[1], &c, 1);
    (void)ignored;
  }
}

void BlobFetcher::Abort() {
  aborted_.store(true, std::memory_order_release);
  Wake();
  {
    std::lock_guard<std::mutex> lk(mu_);
  }
  cv_free_.notify_all();
  cv_filled_.notify_all();
}

void BlobFetcher::StopReason(Failure* f) const {
  if (aborted()) {
    f->code = FetchErrc::kCanceled;
    f->message = "the transfer was aborted";
  } else {
    // Run() replaces this with the writer's own failure.
    f->code = FetchErrc::kFile;
    f->message = "writing the file failed";
  }
}

int BlobFetcher::WaitFor(short events, int timeout_ms, Failure* f) {
  for (;;) {
    if (aborted() || writer_failed_.load(std::memory_order_acquire)) {
      StopReason(f);
      return -1;
    }
    pollfd fds[2] = {{sock_, events, 0}, {wake_[0], POLLIN, 0}};
    const int n = poll(fds, wake_[0] >= 0 ? 2 : 1, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      f->code = FetchErrc::kReset;
      f->sys_errno = errno;
      f->message = ErrnoText("poll", errno);
      return -1;
    }
    if (n == 0) return 0;
    if (fds[0].revents != 0) return 1;
    // Only the wake pipe: drain it; the loop head says why.
    char buf[16];
    while (read(wake_[0], buf, sizeof buf) > 0) {
    }
    if (!aborted() && !writer_failed_.load(std::memory_order_acquire)) continue;
  }
}

int BlobFetcher::Connect(Failure* f) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* list = nullptr;
  const std::string port = std::to_string(opt_.port);
  const int gai = getaddrinfo(opt_.host.c_str(), port.c_str(), &hints, &list);
  if (gai != 0) {
    f->code = FetchErrc::kResolve;
    f->message = "cannot resolve " + opt_.host + ": " + gai_strerror(gai);
    return -1;
  }
  int last_err = ECONNREFUSED;
  bool timed_out = false;
  int result = -1;
  for (addrinfo* ai = list; ai != nullptr && result < 0; ai = ai->ai_next) {
    const int s = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (s < 0) {
      last_err = errno;
      continue;
    }
    sock_ = s;
    int rc = connect(s, ai->ai_addr, ai->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
      const int w = WaitFor(POLLOUT, opt_.connect_timeout_ms, f);
      if (w < 0) {
        freeaddrinfo(list);
        close(s);
        sock_ = -1;
        return -1;
      }
      if (w == 0) {
        timed_out = true;
        last_err = ETIMEDOUT;
      } else {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err == 0) rc = 0;
        else last_err = err;
      }
    } else if (rc < 0) {
      last_err = errno;
    }
    if (rc == 0) {
      result = s;
    } else {
      close(s);
      sock_ = -1;
    }
  }
  freeaddrinfo(list);
  if (result < 0) {
    f->code = timed_out && last_err == ETIMEDOUT ? FetchErrc::kTimeout : FetchErrc::kConnect;
    f->sys_errno = last_err;
    f->message = ErrnoText("connect to " + opt_.host + ":" + port, last_err);
    return -1;
  }
  const int one = 1;
  setsockopt(result, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return result;
}

bool BlobFetcher::SendAll(const std::string& data, Failure* f) {
  size_t off = 0;
  const int64_t deadline = NowMs() + opt_.stall_timeout_ms;
  while (off < data.size()) {
    const ssize_t n = send(sock_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const int64_t left = deadline - NowMs();
      const int w = left > 0 ? WaitFor(POLLOUT, static_cast<int>(left), f) : 0;
      if (w < 0) return false;
      if (w == 0) {
        f->code = FetchErrc::kTimeout;
        f->message = "sending the request timed out";
        return false;
      }
      continue;
    }
    f->code = FetchErrc::kReset;
    f->sys_errno = n < 0 ? errno : EPIPE;
    f->message = ErrnoText("sending the request", f->sys_errno);
    return false;
  }
  return true;
}

long BlobFetcher::RecvSome(uint8_t* p, size_t cap, int idle_ms, Failure* f) {
  for (;;) {
    const ssize_t n = recv(sock_, p, cap, 0);
    if (n > 0) {
      stall_deadline_ms_ = NowMs() + opt_.stall_timeout_ms;
      return static_cast<long>(n);
    }
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      f->code = FetchErrc::kReset;
      f->sys_errno = errno;
      f->message = ErrnoText("receiving", errno);
      return -1;
    }
    const int64_t now = NowMs();
    if (now >= stall_deadline_ms_) {
      f->code = FetchErrc::kTimeout;
      f->message = "no data from " + opt_.host + ":" + std::to_string(opt_.port) + " for " +
                   std::to_string(opt_.stall_timeout_ms) + " ms";
      return -1;
    }
    int64_t wait = stall_deadline_ms_ - now;
    const bool idle = idle_ms >= 0 && idle_ms < wait;
    if (idle) wait = idle_ms;
    const int w = WaitFor(POLLIN, static_cast<int>(wait), f);
    if (w < 0) return -1;
    if (w == 0 && idle) return -2;
  }
}

bool BlobFetcher::ReadHead(BlobFetchResult* r, std::string* rest, Failure* f) {
  std::string buf;
  uint8_t tmp[16 << 10];
  stall_deadline_ms_ = NowMs() + opt_.stall_timeout_ms;
  for (;;) {
    // A complete head in the buffer? (CR LF CR LF, or bare LF LF from a lenient server)
    size_t end = buf.find("\r\n\r\n");
    size_t sep = 4;
    const size_t lf = buf.find("\n\n");
    if (lf != std::string::npos && (end == std::string::npos || lf < end)) {
      end = lf;
      sep = 2;
    }
    if (end != std::string::npos) {
      int status = 0;
      if (!ParseHead(buf.substr(0, end), &status, &r->headers)) {
        f->code = FetchErrc::kProtocol;
        f->message = "a malformed HTTP response head";
        return false;
      }
      buf.erase(0, end + sep);
      if (status >= 100 && status < 200 && status != 101) continue;  // interim answer
      r->status = status;
      *rest = std::move(buf);
      return true;
    }
    if (buf.size() > kMaxHeadBytes) {
      f->code = FetchErrc::kProtocol;
      f->message = "the HTTP response head is larger than 64 KiB";
      return false;
    }
    const long n = RecvSome(tmp, sizeof tmp, -1, f);
    if (n < 0) return false;
    if (n == 0) {
      f->code = FetchErrc::kReset;
      f->message = buf.empty() ? "the server closed the connection without answering"
                               : "the connection closed inside the response head";
      return false;
    }
    buf.append(reinterpret_cast<const char*>(tmp), static_cast<size_t>(n));
  }
}

int BlobFetcher::AcquireFree() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_free_.wait(lk, [&] {
    return !free_.empty() || aborted() || writer_failed_.load(std::memory_order_acquire);
  });
  if (aborted() || writer_failed_.load(std::memory_order_acquire)) return -1;
  const int i = free_.back();
  free_.pop_back();
  return i;
}

void BlobFetcher::PushFilled(int index, size_t len) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (len == 0) {
      free_.push_back(index);
    } else {
      slots_[static_cast<size_t>(index)].len = len;
      filled_.push_back(index);
    }
  }
  if (len == 0) cv_free_.notify_one();
  else cv_filled_.notify_one();
}

bool BlobFetcher::ReceiveBody(BlobFetchResult* r, std::string rest, Failure* f) {
  uint64_t start = 0;
  if (r->status == 206) {
    const std::string* cr = r->Header("content-range");
    if (cr == nullptr || !ParseContentRangeStart(*cr, &start) || start != opt_.offset) {
      f->code = FetchErrc::kProtocol;
      f->message = "a partial response (206) " +
                   (cr ? "from byte " + std::to_string(start) + " (Content-Range: " + *cr + ")"
                       : std::string("without Content-Range")) +
                   " to a request from byte " + std::to_string(opt_.offset);
      return false;
    }
  }
  BodyReader::Framing framing = BodyReader::kClose;
  uint64_t length = 0;
  const std::string* te = r->Header("transfer-encoding");
  if (te != nullptr && Lower(*te).find("chunked") != std::string::npos) {
    framing = BodyReader::kChunked;
  } else {
    for (const auto& h : r->headers) {
      if (h.first != "content-length") continue;
      uint64_t v = 0;
      if (!ParseDecimal(h.second, &v) || (framing == BodyReader::kLength && v != length)) {
        f->code = FetchErrc::kProtocol;
        f->message = "an invalid Content-Length: " + h.second;
        return false;
      }
      framing = BodyReader::kLength;
      length = v;
    }
  }
  uint64_t limit = std::numeric_limits<uint64_t>::max();
  if (opt_.expected_size >= 0) {
    const uint64_t expected = static_cast<uint64_t>(opt_.expected_size);
    limit = expected > start ? expected - start : 0;
    if (start > expected || (framing == BodyReader::kLength && length > limit)) {
      f->code = FetchErrc::kTooLong;
      f->message = "the server sends " +
                   (framing == BodyReader::kLength ? std::to_string(length) + " bytes"
                                                   : std::string("a body")) +
                   " from byte " + std::to_string(start) + ", more than the expected " +
                   std::to_string(expected) + " bytes";
      return false;
    }
  }

  r->body_offset = start;
  {
    std::lock_guard<std::mutex> lk(mu_);
    body_begun_ = true;
    body_start_ = start;
  }
  body_start_hint_.store(static_cast<int64_t>(start), std::memory_order_release);
  cv_filled_.notify_all();

  BodyReader body(this, framing, length, std::move(rest));
  const size_t cap = opt_.buffer_bytes;
  uint64_t total = 0;
  int slot = -1;
  size_t fill = 0;
  bool done = false;
  for (;;) {
    if (aborted() || writer_failed_.load(std::memory_order_acquire)) {
      StopReason(f);
      break;
    }
    if (slot < 0) {
      // Time spent waiting for the writer is not a stall of the server.
      const int64_t t0 = NowMs();
      slot = AcquireFree();
      stall_deadline_ms_ += NowMs() - t0;
      if (slot < 0) {
        StopReason(f);
        break;
      }
      fill = 0;
    }
    uint8_t* base = slots_[static_cast<size_t>(slot)].data.get();
    const long n = body.Read(base + fill, cap - fill, fill > 0 ? kIdleFlushMs : -1, f);
    if (n == -2) {
      PushFilled(slot, fill);
      slot = -1;
      continue;
    }
    if (n < 0) break;
    if (n == 0) {
      done = true;
      break;
    }
    const uint64_t got = static_cast<uint64_t>(n);
    if (got > limit - total) {
      fill += static_cast<size_t>(limit - total);
      total = limit;
      f->code = FetchErrc::kTooLong;
      f->message = "the body is longer than the expected " +
                   std::to_string(opt_.expected_size) + " bytes";
      break;
    }
    fill += static_cast<size_t>(got);
    total += got;
    if (fill == cap) {
      PushFilled(slot, fill);
      slot = -1;
    }
  }
  if (slot >= 0) PushFilled(slot, fill);
  return done;
}

void BlobFetcher::ReadErrorBody(BlobFetchResult* r, std::string rest) {
  const int st = r->status;
  if ((st >= 300 && st < 400) || st == 204 || st == 304 || st == 416) return;
  BodyReader::Framing framing = BodyReader::kClose;
  uint64_t length = 0;
  const std::string* te = r->Header("transfer-encoding");
  const std::string* cl = r->Header("content-length");
  if (te != nullptr && Lower(*te).find("chunked") != std::string::npos) {
    framing = BodyReader::kChunked;
  } else if (cl != nullptr) {
    if (!ParseDecimal(*cl, &length)) return;
    framing = BodyReader::kLength;
  }
  BodyReader body(this, framing, length, std::move(rest));
  const int saved = opt_.stall_timeout_ms;
  opt_.stall_timeout_ms = std::min(saved, kErrorBodyMs);
  stall_deadline_ms_ = NowMs() + opt_.stall_timeout_ms;
  uint8_t buf[kMaxErrorBody];
  size_t have = 0;
  Failure ignored;
  while (have < kMaxErrorBody) {
    const long n = body.Read(buf + have, kMaxErrorBody - have, -1, &ignored);
    if (n <= 0) break;
    have += static_cast<size_t>(n);
  }
  opt_.stall_timeout_ms = saved;
  r->error_body.assign(reinterpret_cast<const char*>(buf), have);
}

void BlobFetcher::Receive(BlobFetchResult* r) {
  Failure f;
  if (Connect(&f) < 0) {
    r->error = f.code;
    r->sys_errno = f.sys_errno;
    r->message = f.message;
    return;
  }
  std::string req = "GET " + opt_.path + " HTTP/1.1\r\nHost: ";
  req += opt_.host.find(':') != std::string::npos ? "[" + opt_.host + "]" : opt_.host;
  if (opt_.port != 80) req += ":" + std::to_string(opt_.port);
  req += "\r\n";
  for (const auto& h : opt_.headers) {
    const std::string name = Lower(h.first);
    if (name == "host" || name == "connection" || name == "range" || name == "accept-encoding" ||
        name == "content-length" || name == "transfer-encoding" || name == "te") {
      continue;
    }
    req += h.first + ": " + h.second + "\r\n";
  }
  if (opt_.offset > 0) req += "Range: bytes=" + std::to_string(opt_.offset) + "-\r\n";
  req += "Accept-Encoding: identity\r\nConnection: close\r\n\r\n";

  std::string rest;
  bool body_done = false;
  if (SendAll(req, &f) && ReadHead(r, &rest, &f)) {
    if (r->status == 200 || r->status == 206) {
      body_done = ReceiveBody(r, std::move(rest), &f);
    } else {
      ReadErrorBody(r, std::move(rest));
    }
  }
  r->complete = body_done;  // provisional: Run() adds the writer's part
  r->error = f.code;
  r->sys_errno = f.sys_errno;
  r->message = f.message;
}

// ---- the helper thread: hash, then write ---------------------------------------------------------

void BlobFetcher::FailWriter(FetchErrc code, int err, std::string message) {
  if (writer_failed_.load(std::memory_order_acquire)) return;
  writer_failure_.code = code;
  writer_failure_.sys_errno = err;
  writer_failure_.message = std::move(message);
  writer_failed_.store(true, std::memory_order_release);
  Wake();
  {
    std::lock_guard<std::mutex> lk(mu_);
  }
  cv_free_.notify_all();
}

void BlobFetcher::HashAndWrite(const std::function<void(uint64_t)>& progress) {
  Sha256 sha;
  if (!sha.ok()) FailWriter(FetchErrc::kFile, 0, "SHA-256 (OpenSSL EVP) is not available");
  auto file_error = [&](const std::string& what, int err) {
    FailWriter(err == ENOSPC || err == EDQUOT ? FetchErrc::kDiskFull : FetchErrc::kFile, err,
               ErrnoText(what + " " + opt_.file, err));
  };
  int fd = -1;
  uint64_t hashed = 0;
  if (opt_.offset > 0 && !writer_failed_.load()) {
    fd = open(opt_.file.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      file_error("opening", errno);
    } else {
      // Resume: hash what the file already holds while the request goes out.
      std::unique_ptr<uint8_t[]> buf(new uint8_t[opt_.buffer_bytes]);
      while (hashed < opt_.offset && !aborted() && body_start_hint_.load() != 0) {
        const size_t want = static_cast<size_t>(std::min<uint64_t>(opt_.buffer_bytes, opt_.offset - hashed));
        const ssize_t n = pread(fd, buf.get(), want, static_cast<off_t>(hashed));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          file_error("reading", errno);
          break;
        }
        if (n == 0) {
          FailWriter(FetchErrc::kFile, 0,
                     opt_.file + " holds " + std::to_string(hashed) + " bytes, fewer than the offset " +
                         std::to_string(opt_.offset));
          break;
        }
        sha.Update(buf.get(), static_cast<size_t>(n));
        hashed += static_cast<uint64_t>(n);
      }
    }
  }

  bool begun;
  uint64_t start;
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_filled_.wait(lk, [&] { return body_begun_ || receive_done_; });
    begun = body_begun_;
    start = body_start_;
  }
  // The prefix loop stops early only for an abort, a failure, or a body that starts at 0.
  auto prefix_short = [&] {
    if (aborted()) {
      FailWriter(FetchErrc::kCanceled, 0, "the transfer was aborted");
    } else {
      FailWriter(FetchErrc::kFile, 0, "the body starts at byte " + std::to_string(start) + " but " +
                                          std::to_string(hashed) + " bytes were hashed");
    }
  };
  if (!begun) {
    // No body (an error answer, a 416, a failure): the digest of what the file holds.
    if (!writer_failed_.load()) {
      if (hashed == opt_.offset) digest_ok_ = sha.Final(&digest_hex_);
      else prefix_short();
    }
  } else if (!writer_failed_.load()) {
    if (start != hashed) {
      if (start == 0) {
        sha.Reset();  // a 200 answered the range request: the file starts over
        hashed = 0;
      } else {
        prefix_short();
      }
    }
    // A new file is created with the first bytes (an abort before them leaves none behind).
    // Drop anything past the start of an existing one (a stale tail, or all of it on a restart);
    // only regular files can be truncated (a test writes to /dev/full).
    struct stat st;
    if (!writer_failed_.load() && fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<uint64_t>(st.st_size) != start && ftruncate(fd, static_cast<off_t>(start)) < 0) {
      file_error("truncating", errno);
    }
  }

  uint64_t pos = start;
  for (;;) {
    int i;
    size_t len;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_filled_.wait(lk, [&] { return !filled_.empty() || receive_done_; });
      if (filled_.empty()) break;
      i = filled_.front();
      filled_.pop_front();
      len = slots_[static_cast<size_t>(i)].len;
    }
    if (!writer_failed_.load() && fd < 0) {
      fd = open(opt_.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) file_error("creating", errno);
    }
    if (!writer_failed_.load()) {
      const uint8_t* p = slots_[static_cast<size_t>(i)].data.get();
      sha.Update(p, len);
      size_t done = 0;
      while (done < len) {
        const ssize_t n = pwrite(fd, p + done, len - done, static_cast<off_t>(pos + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          file_error("writing", n < 0 ? errno : EIO);
          break;
        }
        done += static_cast<size_t>(n);
      }
      // A short write that failed leaves the file shorter than `pos`: what counts is what was
      // written in full.
      if (done == len) {
        pos += len;
        written_ += len;
      } else if (done > 0 && ftruncate(fd, static_cast<off_t>(pos)) < 0) {
        // The caller re-reads the file's length on a failure; nothing more to do.
      }
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      free_.push_back(i);
    }
    cv_free_.notify_one();
    if (!writer_failed_.load() && progress) progress(pos);
  }
  // Even when an abort came late: every byte that arrived is written and hashed.
  if (begun && !writer_failed_.load()) {
    digest_ok_ = sha.Final(&digest_hex_);
    if (!digest_ok_) FailWriter(FetchErrc::kFile, 0, "SHA-256 (OpenSSL EVP) failed");
  }
  file_opened_ = fd >= 0;
  if (fd >= 0 && close(fd) < 0 && !writer_failed_.load()) file_error("closing", errno);
}

BlobFetchResult BlobFetcher::Run(const std::function<void(uint64_t)>& progress) {
  BlobFetchResult r;
  r.file_bytes = opt_.offset;
  auto bad = [&](const std::string& why) {
    r.error = FetchErrc::kBadArgument;
    r.message = why;
    return r;
  };
  if (ran_) return bad("a BlobFetcher runs once");
  ran_ = true;
  if (opt_.host.empty() || !ValidHeaderValue(opt_.host) || opt_.host.find_first_of(" /") != std::string::npos)
    return bad("invalid host: " + opt_.host);
  if (!ValidTarget(opt_.path)) return bad("the request target must start with / and hold no spaces or control characters");
  for (const auto& h : opt_.headers) {
    if (!ValidHeaderName(h.first)) return bad("invalid header name: " + h.first);
    if (!ValidHeaderValue(h.second)) return bad("invalid value for header " + h.first);
  }
  if (opt_.file.empty()) return bad("no destination file");
  if (opt_.buffers < 1 || opt_.buffers > 64) return bad("buffers must be 1 to 64");
  if (opt_.buffer_bytes < 4096 || opt_.buffer_bytes > (size_t{64} << 20)) return bad("bufferBytes must be 4 KiB to 64 MiB");
  if (opt_.stall_timeout_ms <= 0 || opt_.connect_timeout_ms <= 0) return bad("timeouts must be > 0");
  if (opt_.expected_size >= 0 && opt_.offset > static_cast<uint64_t>(opt_.expected_size))
    return bad("offset is past the expected size");
  if (wake_[0] < 0) {
    r.error = FetchErrc::kFile;
    r.sys_errno = errno;
    r.message = "cannot create the wake pipe";
    return r;
  }

  slots_.resize(static_cast<size_t>(opt_.buffers));
  for (size_t i = 0; i < slots_.size(); ++i) {
    slots_[i].data.reset(new uint8_t[opt_.buffer_bytes]);
    free_.push_back(static_cast<int>(i));
  }

  std::thread helper([this, &progress] { HashAndWrite(progress); });
  try {
    Receive(&r);
  } catch (const std::exception& e) {
    r.error = FetchErrc::kFile;
    r.message = std::string("the receiving side failed: ") + e.what();
    r.complete = false;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    receive_done_ = true;
  }
  cv_filled_.notify_all();
  helper.join();
  if (sock_ >= 0) {
    close(sock_);
    sock_ = -1;
  }
  slots_.clear();

  // An empty body that completed: the (empty) file must exist all the same.
  if ((r.status == 200 || r.status == 206) && body_begun_ && r.complete && r.error == FetchErrc::kOk &&
      writer_failure_.code == FetchErrc::kOk && !file_opened_) {
    const int fd = open(opt_.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || close(fd) < 0) {
      const int err = errno;
      writer_failure_.code = err == ENOSPC || err == EDQUOT ? FetchErrc::kDiskFull : FetchErrc::kFile;
      writer_failure_.sys_errno = err;
      writer_failure_.message = ErrnoText("creating " + opt_.file, err);
    }
  }
  if (writer_failure_.code != FetchErrc::kOk) {
    r.error = writer_failure_.code;
    r.sys_errno = writer_failure_.sys_errno;
    r.message = writer_failure_.message;
  }
  const bool ok = r.error == FetchErrc::kOk;
  if ((r.status == 200 || r.status == 206) && body_begun_) {
    r.received = written_;
    r.file_bytes = r.body_offset + written_;
    r.complete = ok && r.complete && digest_ok_;
  } else {
    r.file_bytes = opt_.offset;
    r.complete = ok && r.status == 416 && digest_ok_;
  }
  if (r.complete) r.sha256_hex = digest_hex_;
  return r;
}

}  // namespace mlos
