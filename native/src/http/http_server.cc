// The HTTP/1.1 server of MLOS Core's HTTP door; see http_server.h.
#include "http/http_server.h"

#include <dlfcn.h>
#include <llhttp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstdlib>
#include <cstring>
#include <ctime>

namespace mlos::http {

namespace {

constexpr double kSeqSpan = 2097152.0;  // 2^21: request id = connection id * kSeqSpan + seq
constexpr uint32_t kSeqMask = 0x1FFFFF;
constexpr size_t kReadBufferBytes = 64 * 1024;
// How long a connection that answered "Connection: close" waits for the client's FIN.
constexpr uint64_t kLingerMs = 2000;

char g_read_buffer[kReadBufferBytes];  // every read is consumed before the next one is made

struct Pending {
  uint32_t seq = 0;
  bool answered = false;
  bool keep_alive = true;
  bool head = false;  // a HEAD request: its response carries no body
  bool streaming = false;  // a chunked response was started (RespondStart) and is not ended yet
  std::string out;    // the response, or what of a streamed one is not written yet, before its turn
};

std::string ErrorText(int uv_error) {
  return std::string(uv_err_name(uv_error)) + " (" + uv_strerror(uv_error) + ")";
}

std::string OpenSslError(const char* what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return std::string(what) + ": " + buf;
}

void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      static const char* hex = "0123456789abcdef";
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += ch;
    }
  }
  out += '"';
}

// The value of header `name` (lower case) in a "name: value\n" block, or empty.
std::string_view HeaderValue(std::string_view headers, std::string_view name) {
  size_t pos = 0;
  while (pos < headers.size()) {
    size_t end = headers.find('\n', pos);
    if (end == std::string_view::npos) end = headers.size();
    std::string_view line = headers.substr(pos, end - pos);
    if (line.size() > name.size() + 1 && line.substr(0, name.size()) == name && line[name.size()] == ':') {
      std::string_view v = line.substr(name.size() + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      return v;
    }
    pos = end + 1;
  }
  return {};
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string DateLine() {
  char buf[64];
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(buf, sizeof buf, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  return buf;
}

}  // namespace

// One accepted connection.
struct Conn {
  Server* server = nullptr;
  uint32_t id = 0;
  uv_tcp_t tcp{};
  llhttp_t parser{};
  SSL* ssl = nullptr;
  BIO* rbio = nullptr;  // bytes from the socket, for OpenSSL to decrypt
  BIO* wbio = nullptr;  // bytes OpenSSL wrote, for the socket

  // The request being parsed.
  std::string target;
  std::string headers;
  char* body = nullptr;
  size_t body_size = 0;
  size_t body_capacity = 0;

  uint32_t next_seq = 0;
  std::deque<Pending> pending;  // received, in order; front() is the next response on the wire
  std::string unparsed;         // bytes received while parsing was paused
  bool parse_paused = false;    // max_pipelined requests in flight: neither parse nor read
  bool stop_parsing = false;    // a request ended the connection (Connection: close, an error)
  bool close_when_flushed = false;
  bool shut = false;            // our FIN is sent; waiting for the client's
  bool reading = false;
  bool closing = false;
  bool resume_queued = false;
  uint64_t idle_since = 0;  // when the connection last had nothing in flight (or body bytes came)
  uint64_t shut_at = 0;

  double IdOf(uint32_t seq) const { return static_cast<double>(id) * kSeqSpan + seq; }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
  size_t queued_bytes() { return uv_stream_get_write_queue_size(stream()); }
};

namespace {

struct WriteReq {
  uv_write_t req;
  std::string data;
  Conn* conn;
};

}  // namespace

// The connection's operations, as a friend of Server (they reach its handler, options and maps).
struct ConnOps {
  static llhttp_settings_t settings;

  static Conn* Of(llhttp_t* p) { return static_cast<Conn*>(p->data); }

  // ---- parser callbacks ----
  static int OnMessageBegin(llhttp_t* p) {
    Conn* c = Of(p);
    c->target.clear();
    c->headers.clear();
    std::free(c->body);
    c->body = nullptr;
    c->body_size = c->body_capacity = 0;
    return 0;
  }
  static int OnUrl(llhttp_t* p, const char* at, size_t n) {
    Of(p)->target.append(at, n);
    return 0;
  }
  static int OnHeaderField(llhttp_t* p, const char* at, size_t n) {
    std::string& h = Of(p)->headers;
    for (size_t i = 0; i < n; ++i) {
      char ch = at[i];
      h += (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
    }
    return 0;
  }
  static int OnHeaderFieldComplete(llhttp_t* p) {
    Of(p)->headers += ": ";
    return 0;
  }
  static int OnHeaderValue(llhttp_t* p, const char* at, size_t n) {
    Of(p)->headers.append(at, n);
    return 0;
  }
  static int OnHeaderValueComplete(llhttp_t* p) {
    Of(p)->headers += '\n';
    return 0;
  }
  static int OnHeadersComplete(llhttp_t* p) {
    Conn* c = Of(p);
    Server* s = c->server;
    if (c->closing) return -1;
    const size_t max = s->options_.max_body_bytes;
    if ((p->flags & F_CONTENT_LENGTH) != 0) {
      if (p->content_length > max) {
        Reject(c, "413 Payload Too Large", "BODY_TOO_LARGE",
               "the body is " + std::to_string(p->content_length) + " bytes; the limit is " + std::to_string(max));
        return -1;
      }
      if (p->content_length > 0) {
        c->body = static_cast<char*>(std::malloc(p->content_length));
        if (c->body == nullptr) {
          Reject(c, "503 Service Unavailable", "OUT_OF_MEMORY", "no memory for a body of " + std::to_string(p->content_length) + " bytes");
          return -1;
        }
        c->body_capacity = p->content_length;
      }
    }
    if (c->pending.empty() && EqualsIgnoreCase(HeaderValue(c->headers, "expect"), "100-continue")) {
      static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
      uv_buf_t b = uv_buf_init(const_cast<char*>(kContinue), sizeof kContinue - 1);
      Write(c, &b, 1);
    }
    return 0;
  }
  static int OnBody(llhttp_t* p, const char* at, size_t n) {
    Conn* c = Of(p);
    Server* s = c->server;
    const size_t max = s->options_.max_body_bytes;
    if (c->body_size + n > max) {
      Reject(c, "413 Payload Too Large", "BODY_TOO_LARGE", "the body is larger than the limit of " + std::to_string(max) + " bytes");
      return -1;
    }
    if (c->body_size + n > c->body_capacity) {
      size_t cap = c->body_capacity == 0 ? 4096 : c->body_capacity * 2;
      while (cap < c->body_size + n) cap *= 2;
      if (cap > max) cap = max;
      char* grown = static_cast<char*>(std::realloc(c->body, cap));
      if (grown == nullptr) {
        Reject(c, "503 Service Unavailable", "OUT_OF_MEMORY", "no memory for the request body");
        return -1;
      }
      c->body = grown;
      c->body_capacity = cap;
    }
    std::memcpy(c->body + c->body_size, at, n);
    c->body_size += n;
    c->idle_since = uv_now(s->loop_);  // a body that keeps coming is not idle
    return 0;
  }
  static int OnMessageComplete(llhttp_t* p) {
    Conn* c = Of(p);
    Server* s = c->server;
    if (c->closing) return -1;
    Pending entry;
    entry.seq = c->next_seq;
    c->next_seq = (c->next_seq + 1) & kSeqMask;
    entry.keep_alive = llhttp_should_keep_alive(p) != 0;
    entry.head = llhttp_get_method(p) == HTTP_HEAD;
    const bool keep_alive = entry.keep_alive;
    c->pending.push_back(std::move(entry));

    Request req;
    req.id = c->IdOf(c->pending.back().seq);
    req.method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(p)));
    req.target = c->target;
    req.headers = c->headers;
    req.body = c->body;
    req.body_size = c->body_size;
    c->body = nullptr;
    c->body_size = c->body_capacity = 0;
    s->handler_->OnRequest(req);
    std::free(req.body);  // unless the handler took it

    if (c->closing) return -1;
    if (!keep_alive) {
      c->stop_parsing = true;
      return -1;
    }
    if (!RoomForMore(c)) return HPE_PAUSED;
    return 0;
  }

  // Whether another request may be taken off the connection: fewer than max_pipelined in flight,
  // and the client reads its answers (so that a packet of small requests with large answers
  // cannot make the server hold them all).
  static bool RoomForMore(Conn* c) {
    const ServerOptions& o = c->server->options_;
    return c->pending.size() < o.max_pipelined && c->queued_bytes() <= o.max_write_queue_bytes;
  }

  static void ScheduleResume(Conn* c) {
    if (c->closing || !c->parse_paused || c->resume_queued || !RoomForMore(c)) return;
    Server* s = c->server;
    c->resume_queued = true;
    s->resume_.push_back(c->id);
    uv_idle_start(&s->idle_, Server::OnIdle);
  }

  // ---- input ----
  static void Feed(Conn* c, const char* data, size_t n) {
    if (c->closing || c->stop_parsing || n == 0) return;
    if (c->parse_paused) {
      c->unparsed.append(data, n);
      return;
    }
    llhttp_errno_t err = llhttp_execute(&c->parser, data, n);
    if (err == HPE_OK || c->closing || c->stop_parsing) return;
    if (err == HPE_PAUSED) {
      const char* pos = llhttp_get_error_pos(&c->parser);
      if (pos == nullptr || pos < data || pos > data + n) pos = data + n;
      c->unparsed.assign(pos, static_cast<size_t>(data + n - pos));
      c->parse_paused = true;
      UpdateReading(c);
      return;
    }
    if (err == HPE_PAUSED_UPGRADE) {
      Reject(c, "501 Not Implemented", "UPGRADE_UNSUPPORTED", "this server does not upgrade connections");
      return;
    }
    const char* reason = llhttp_get_error_reason(&c->parser);
    Reject(c, "400 Bad Request", "BAD_HTTP",
           std::string("malformed HTTP request: ") + llhttp_errno_name(err) + (reason != nullptr ? std::string(" (") + reason + ")" : ""));
  }

  // Parses what was held back while paused, once there is room in flight again.
  static void Resume(Conn* c) {
    c->resume_queued = false;
    if (c->closing || !c->parse_paused || !RoomForMore(c)) return;
    c->parse_paused = false;
    llhttp_resume(&c->parser);
    std::string held;
    held.swap(c->unparsed);
    Feed(c, held.data(), held.size());
    UpdateReading(c);
  }

  static void OnAlloc(uv_handle_t*, size_t, uv_buf_t* buf) { *buf = uv_buf_init(g_read_buffer, kReadBufferBytes); }

  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    Conn* c = static_cast<Conn*>(stream->data);
    Server* s = c->server;
    if (nread == 0) return;
    s->handler_->BeginDispatch();
    if (nread < 0) {
      Close(c);  // EOF or a socket error: the client is gone
    } else if (c->shut) {
      // Draining after our FIN: discard.
    } else if (c->ssl == nullptr) {
      Feed(c, buf->base, static_cast<size_t>(nread));
    } else {
      TlsInput(c, buf->base, static_cast<size_t>(nread));
    }
    s->handler_->EndDispatch();
  }

  static void TlsInput(Conn* c, const char* data, size_t n) {
    if (BIO_write(c->rbio, data, static_cast<int>(n)) != static_cast<int>(n)) {
      Close(c);
      return;
    }
    static char plain[kReadBufferBytes];
    while (!c->closing) {
      int r = SSL_read(c->ssl, plain, sizeof plain);
      if (r > 0) {
        Feed(c, plain, static_cast<size_t>(r));
        continue;
      }
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ) break;
      ERR_clear_error();
      FlushTls(c);  // an alert, if OpenSSL wrote one
      Close(c);     // a failed handshake (plain HTTP on a TLS port), close_notify, or a bad record
      return;
    }
    FlushTls(c);
  }

  // Reads while there is room: not paused, not shut for writing, and the client reads its answers.
  static void UpdateReading(Conn* c) {
    if (c->closing) return;
    const bool want = !c->parse_paused && c->queued_bytes() <= c->server->options_.max_write_queue_bytes;
    if (want && !c->reading) {
      if (uv_read_start(c->stream(), OnAlloc, OnRead) == 0) c->reading = true;
    } else if (!want && c->reading) {
      uv_read_stop(c->stream());
      c->reading = false;
    }
  }

  // ---- output ----
  static void OnWrite(uv_write_t* req, int status) {
    auto* w = reinterpret_cast<WriteReq*>(req);
    Conn* c = w->conn;
    delete w;
    if (c->closing) return;
    if (status < 0) {
      c->server->handler_->BeginDispatch();
      Close(c);
      c->server->handler_->EndDispatch();
      return;
    }
    if (c->queued_bytes() == 0 && c->close_when_flushed) {
      Shutdown(c);
      return;
    }
    UpdateReading(c);
    ScheduleResume(c);
  }

  // Writes bytes to the socket: at once when nothing is queued before them, the rest copied.
  static void RawWrite(Conn* c, const uv_buf_t* bufs, unsigned n) {
    if (c->closing) return;
    size_t total = 0;
    for (unsigned i = 0; i < n; ++i) total += bufs[i].len;
    if (total == 0) return;
    size_t written = 0;
    if (c->queued_bytes() == 0) {
      int r = uv_try_write(c->stream(), bufs, n);
      if (r >= 0) {
        written = static_cast<size_t>(r);
      } else if (r != UV_EAGAIN) {
        Close(c);
        return;
      }
    }
    if (written == total) return;
    auto* w = new WriteReq();
    w->conn = c;
    w->data.reserve(total - written);
    size_t skip = written;
    for (unsigned i = 0; i < n; ++i) {
      if (skip >= bufs[i].len) {
        skip -= bufs[i].len;
        continue;
      }
      w->data.append(bufs[i].base + skip, bufs[i].len - skip);
      skip = 0;
    }
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    if (uv_write(&w->req, c->stream(), &b, 1, OnWrite) != 0) {
      delete w;
      Close(c);
      return;
    }
    UpdateReading(c);
  }

  static void FlushTls(Conn* c) {
    while (!c->closing) {
      const size_t ready = BIO_ctrl_pending(c->wbio);
      if (ready == 0) break;
      std::string out(ready, '\0');
      const int r = BIO_read(c->wbio, out.data(), static_cast<int>(ready));
      if (r <= 0) break;
      uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(r));
      RawWrite(c, &b, 1);
    }
  }

  static void Write(Conn* c, const uv_buf_t* bufs, unsigned n) {
    if (c->ssl == nullptr) {
      RawWrite(c, bufs, n);
      return;
    }
    for (unsigned i = 0; i < n && !c->closing; ++i) {
      if (bufs[i].len == 0) continue;
      if (SSL_write(c->ssl, bufs[i].base, static_cast<int>(bufs[i].len)) <= 0) {
        ERR_clear_error();
        Close(c);
        return;
      }
    }
    FlushTls(c);
  }

  // Writes the answered responses at the front of the line, and what a streamed response at the
  // front has so far (it stays at the front, holding the ones behind it, until it ends).
  static void Flush(Conn* c) {
    Server* s = c->server;
    while (!c->closing && !c->pending.empty() && (c->pending.front().answered || c->pending.front().streaming)) {
      if (!c->pending.front().answered) {
        Pending& front = c->pending.front();
        if (!front.out.empty()) {
          std::string out = std::move(front.out);
          front.out.clear();
          uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
          Write(c, &b, 1);
        }
        break;
      }
      Pending front = std::move(c->pending.front());
      c->pending.pop_front();
      uv_buf_t b = uv_buf_init(front.out.data(), static_cast<unsigned>(front.out.size()));
      Write(c, &b, 1);
      if (!front.keep_alive) {
        EndConnection(c);
        return;
      }
    }
    AfterResponse(c);
    (void)s;
  }

  static void AfterResponse(Conn* c) {
    if (c->closing) return;
    Server* s = c->server;
    if (c->pending.empty()) c->idle_since = uv_now(s->loop_);
    ScheduleResume(c);
  }

  // The connection ends after what is queued: no more requests are read from it.
  static void EndConnection(Conn* c) {
    c->stop_parsing = true;
    c->close_when_flushed = true;
    if (c->queued_bytes() == 0) Shutdown(c);
  }

  static void OnShutdown(uv_shutdown_t* req, int) { delete req; }

  // Sends our FIN, then waits (reading and discarding) for the client's, so that what it sent
  // meanwhile does not turn the close into a reset that could destroy the response in flight.
  static void Shutdown(Conn* c) {
    if (c->closing || c->shut) return;
    c->shut = true;
    c->shut_at = uv_now(c->server->loop_);
    if (c->ssl != nullptr) {
      SSL_shutdown(c->ssl);
      ERR_clear_error();
      FlushTls(c);
    }
    auto* req = new uv_shutdown_t();
    if (uv_shutdown(req, c->stream(), OnShutdown) != 0) {
      delete req;
      Close(c);
      return;
    }
    if (!c->reading && uv_read_start(c->stream(), OnAlloc, OnRead) == 0) c->reading = true;
  }

  // Answers on the connection's behalf with an error, in its turn, and ends the connection.
  static void Reject(Conn* c, const char* status_line, const char* code, const std::string& message) {
    if (c->closing || c->stop_parsing) return;
    c->stop_parsing = true;
    std::string body = "{\"error\":";
    AppendJsonString(body, message);
    body += ",\"code\":\"";
    body += code;
    body += "\"}";
    Pending entry;
    entry.seq = c->next_seq;
    c->next_seq = (c->next_seq + 1) & kSeqMask;
    entry.keep_alive = false;
    entry.answered = true;
    entry.out = FormatHead(c, status_line, "Content-Type: application/json\r\n", body.size(), false) + body;
    c->pending.push_back(std::move(entry));
    Flush(c);
  }

  // The request `id` awaiting an answer, its connection and its place in the line; null if none.
  static Pending* FindPending(Server* s, double id, Conn** conn, size_t* index) {
    uint32_t seq = 0;
    Conn* c = s->Find(id, &seq);
    if (c == nullptr || c->closing || c->pending.empty()) return nullptr;
    const size_t i = (seq - c->pending.front().seq) & kSeqMask;
    if (i >= c->pending.size() || c->pending[i].answered) return nullptr;
    *conn = c;
    *index = i;
    return &c->pending[i];
  }

  // The status line and headers; `body_size` SIZE_MAX: a chunked (streamed) body.
  static std::string FormatHead(Conn* c, std::string_view status_line, std::string_view header_lines, size_t body_size, bool keep_alive) {
    std::string head;
    head.reserve(64 + status_line.size() + header_lines.size());
    head += "HTTP/1.1 ";
    head += status_line;
    head += "\r\n";
    head += c->server->date_line_;
    head += header_lines;
    if (body_size == SIZE_MAX) {
      head += "Transfer-Encoding: chunked\r\n";
    } else {
      head += "Content-Length: ";
      head += std::to_string(body_size);
      head += "\r\n";
    }
    if (!keep_alive) head += "Connection: close\r\n";
    head += "\r\n";
    return head;
  }

  // ---- closing ----
  static void OnClosed(uv_handle_t* handle) {
    Conn* c = static_cast<Conn*>(handle->data);
    Server* s = c->server;
    if (c->ssl != nullptr) SSL_free(c->ssl);  // frees both BIOs
    std::free(c->body);
    delete c;
    s->HandleClosed();
  }

  // Closes the connection now; its unanswered requests are reported to OnAbort.
  static void Close(Conn* c) {
    if (c->closing) return;
    c->closing = true;
    Server* s = c->server;
    s->conns_.erase(c->id);
    std::deque<Pending> pending;
    pending.swap(c->pending);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), OnClosed);
    for (const Pending& p : pending) {
      if (!p.answered) s->handler_->OnAbort(c->IdOf(p.seq));
    }
  }
};

llhttp_settings_t ConnOps::settings = [] {
  llhttp_settings_t st;
  llhttp_settings_init(&st);
  st.on_message_begin = ConnOps::OnMessageBegin;
  st.on_url = ConnOps::OnUrl;
  st.on_header_field = ConnOps::OnHeaderField;
  st.on_header_field_complete = ConnOps::OnHeaderFieldComplete;
  st.on_header_value = ConnOps::OnHeaderValue;
  st.on_header_value_complete = ConnOps::OnHeaderValueComplete;
  st.on_headers_complete = ConnOps::OnHeadersComplete;
  st.on_body = ConnOps::OnBody;
  st.on_message_complete = ConnOps::OnMessageComplete;
  return st;
}();

std::string TlsUnavailableReason() {
  static const char* const kNeeded[] = {
      "TLS_server_method", "SSL_CTX_new", "SSL_CTX_free", "SSL_CTX_use_certificate_chain_file",
      "SSL_CTX_use_PrivateKey_file", "SSL_CTX_check_private_key", "SSL_CTX_set_default_passwd_cb_userdata",
      "SSL_new", "SSL_free", "SSL_set_bio", "SSL_set_accept_state", "SSL_read", "SSL_write",
      "SSL_get_error", "SSL_shutdown", "BIO_new", "BIO_s_mem", "BIO_read", "BIO_write",
      "BIO_ctrl_pending", "ERR_get_error", "ERR_error_string_n", "ERR_clear_error"};
  for (const char* name : kNeeded) {
    if (dlsym(RTLD_DEFAULT, name) == nullptr) {
      return std::string("this Node's OpenSSL does not export ") + name + "; TLS needs a Node built with its own OpenSSL (the official builds)";
    }
  }
  return {};
}

Server::Server(uv_loop_t* loop, RequestHandler* handler, ServerOptions options)
    : loop_(loop), handler_(handler), options_(std::move(options)) {
  if (options_.max_pipelined == 0) options_.max_pipelined = 1;
  date_line_ = DateLine();
}

Server::~Server() {
  if (ssl_ctx_ != nullptr) SSL_CTX_free(static_cast<SSL_CTX*>(ssl_ctx_));
}

std::string Server::Listen(const std::string& host, int port) {
  if (listening_ || closing_) return "the server is already started";
  if (options_.tls) {
    std::string why = TlsUnavailableReason();
    if (!why.empty()) return why;
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr) return OpenSslError("cannot create a TLS context");
    ssl_ctx_ = ctx;
    if (!options_.tls_config.passphrase.empty()) {
      SSL_CTX_set_default_passwd_cb_userdata(ctx, const_cast<char*>(options_.tls_config.passphrase.c_str()));
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, options_.tls_config.cert_file.c_str()) != 1) {
      return OpenSslError(("cannot load the TLS certificate " + options_.tls_config.cert_file).c_str());
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, options_.tls_config.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return OpenSslError(("cannot load the TLS key " + options_.tls_config.key_file).c_str());
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return OpenSslError("the TLS key does not match the certificate");
    }
  }

  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    uv_getaddrinfo_t req;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int r = uv_getaddrinfo(loop_, &req, nullptr, host.c_str(), nullptr, &hints);  // synchronous
    if (r != 0 || req.addrinfo == nullptr) return "cannot resolve " + host + ": " + ErrorText(r);
    std::memcpy(&addr, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
    uv_freeaddrinfo(req.addrinfo);
    if (addr.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(static_cast<uint16_t>(port));
    else reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(static_cast<uint16_t>(port));
  }

  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
  ++open_handles_;
  int r = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 4096, OnConnection);
  if (r != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), [](uv_handle_t* h) { static_cast<Server*>(h->data)->HandleClosed(); });
    return "cannot listen on " + host + ":" + std::to_string(port) + ": " + ErrorText(r);
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                      : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  listening_ = true;

  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  ++open_handles_;
  uv_timer_start(&timer_, OnTimer, 1000, 1000);
  uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));
  uv_idle_init(loop_, &idle_);
  idle_.data = this;
  ++open_handles_;
  return {};
}

void Server::OnConnection(uv_stream_t* listener, int status) {
  Server* s = static_cast<Server*>(listener->data);
  if (status < 0 || s->closing_) return;
  auto* c = new Conn();
  c->server = s;
  uv_tcp_init(s->loop_, &c->tcp);
  c->tcp.data = c;
  ++s->open_handles_;
  if (uv_accept(listener, c->stream()) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), [](uv_handle_t* h) {
      Conn* conn = static_cast<Conn*>(h->data);
      Server* server = conn->server;
      delete conn;
      server->HandleClosed();
    });
    return;
  }
  c->id = s->next_conn_id_++;
  if (s->next_conn_id_ == 0) s->next_conn_id_ = 1;
  uv_tcp_nodelay(&c->tcp, 1);
  llhttp_init(&c->parser, HTTP_REQUEST, &ConnOps::settings);
  c->parser.data = c;
  if (s->ssl_ctx_ != nullptr) {
    c->ssl = SSL_new(static_cast<SSL_CTX*>(s->ssl_ctx_));
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == nullptr || c->rbio == nullptr || c->wbio == nullptr) {
      if (c->ssl == nullptr) {
        if (c->rbio) BIO_free(c->rbio);
        if (c->wbio) BIO_free(c->wbio);
      } else {
        SSL_set_bio(c->ssl, c->rbio != nullptr ? c->rbio : BIO_new(BIO_s_mem()), c->wbio != nullptr ? c->wbio : BIO_new(BIO_s_mem()));
      }
      ERR_clear_error();
      s->conns_[c->id] = c;
      ConnOps::Close(c);
      return;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
  }
  c->idle_since = uv_now(s->loop_);
  s->conns_[c->id] = c;
  ConnOps::UpdateReading(c);
}

void Server::OnTimer(uv_timer_t* timer) {
  Server* s = static_cast<Server*>(timer->data);
  s->date_line_ = DateLine();
  const uint64_t now = uv_now(s->loop_);
  std::vector<Conn*> expired;
  for (auto& [id, c] : s->conns_) {
    if (c->shut) {
      if (now - c->shut_at >= kLingerMs) expired.push_back(c);
    } else if (c->pending.empty() && c->queued_bytes() == 0 && now - c->idle_since >= s->options_.idle_timeout_ms) {
      expired.push_back(c);
    }
  }
  if (expired.empty()) return;
  s->handler_->BeginDispatch();
  for (Conn* c : expired) ConnOps::Close(c);
  s->handler_->EndDispatch();
}

void Server::OnIdle(uv_idle_t* idle) {
  Server* s = static_cast<Server*>(idle->data);
  uv_idle_stop(idle);
  std::vector<uint32_t> ids;
  ids.swap(s->resume_);
  s->handler_->BeginDispatch();
  for (uint32_t id : ids) {
    auto it = s->conns_.find(id);
    if (it != s->conns_.end()) ConnOps::Resume(it->second);
  }
  s->handler_->EndDispatch();
}

Conn* Server::Find(double id, uint32_t* seq) {
  if (!(id >= 0) || id >= 9007199254740992.0) return nullptr;
  const auto conn_id = static_cast<uint32_t>(id / kSeqSpan);
  *seq = static_cast<uint32_t>(id - static_cast<double>(conn_id) * kSeqSpan);
  auto it = conns_.find(conn_id);
  return it == conns_.end() ? nullptr : it->second;
}

bool Server::Respond(double id, std::string_view status_line, std::string_view header_lines, const char* body, size_t body_size) {
  uint32_t seq = 0;
  Conn* c = Find(id, &seq);
  if (c == nullptr || c->closing || c->pending.empty()) return false;
  const size_t index = (seq - c->pending.front().seq) & kSeqMask;
  if (index >= c->pending.size() || c->pending[index].answered || c->pending[index].streaming) return false;
  Pending& entry = c->pending[index];
  const size_t sent_body = entry.head ? 0 : body_size;
  std::string head = ConnOps::FormatHead(c, status_line, header_lines, body_size, entry.keep_alive);
  if (index > 0) {
    entry.out = std::move(head);
    entry.out.append(body, sent_body);
    entry.answered = true;
    return true;
  }
  const bool keep_alive = entry.keep_alive;
  c->pending.pop_front();
  uv_buf_t bufs[2] = {uv_buf_init(head.data(), static_cast<unsigned>(head.size())),
                      uv_buf_init(const_cast<char*>(body), static_cast<unsigned>(sent_body))};
  ConnOps::Write(c, bufs, sent_body > 0 ? 2 : 1);
  if (!keep_alive) {
    ConnOps::EndConnection(c);
    return true;
  }
  ConnOps::Flush(c);
  return true;
}

bool Server::RespondStart(double id, std::string_view status_line, std::string_view header_lines) {
  Conn* c = nullptr;
  size_t index = 0;
  Pending* entry = ConnOps::FindPending(this, id, &c, &index);
  if (entry == nullptr || entry->streaming) return false;
  entry->streaming = true;
  entry->out = ConnOps::FormatHead(c, status_line, header_lines, SIZE_MAX, entry->keep_alive);
  if (index == 0) ConnOps::Flush(c);
  return true;
}

bool Server::RespondChunk(double id, const char* data, size_t size) {
  Conn* c = nullptr;
  size_t index = 0;
  Pending* entry = ConnOps::FindPending(this, id, &c, &index);
  if (entry == nullptr || !entry->streaming) return false;
  if (size == 0) return true;  // an empty chunk would end the body
  char hex[24];
  const int n = std::snprintf(hex, sizeof hex, "%zx\r\n", size);
  if (entry->head) return true;
  entry->out.append(hex, static_cast<size_t>(n));
  entry->out.append(data, size);
  entry->out += "\r\n";
  if (index == 0) ConnOps::Flush(c);
  return true;
}

bool Server::RespondEnd(double id) {
  Conn* c = nullptr;
  size_t index = 0;
  Pending* entry = ConnOps::FindPending(this, id, &c, &index);
  if (entry == nullptr || !entry->streaming) return false;
  if (!entry->head) entry->out += "0\r\n\r\n";
  entry->streaming = false;
  entry->answered = true;
  if (index == 0) ConnOps::Flush(c);
  return true;
}

std::string Server::PeerAddress(double id) {
  uint32_t seq = 0;
  Conn* c = Find(id, &seq);
  if (c == nullptr) return {};
  sockaddr_storage peer{};
  int len = sizeof peer;
  if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return {};
  char text[64] = "";
  if (peer.ss_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&peer), text, sizeof text);
  } else {
    uv_ip4_name(reinterpret_cast<sockaddr_in*>(&peer), text, sizeof text);
  }
  return text;
}

void Server::Close(void (*on_closed)(void*), void* arg) {
  if (closing_) return;
  closing_ = true;
  on_closed_ = on_closed;
  on_closed_arg_ = arg;
  ++open_handles_;  // held while closing, so that on_closed cannot run before the loop below ends
  if (listening_) {
    auto closed = [](uv_handle_t* h) { static_cast<Server*>(h->data)->HandleClosed(); };
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&idle_), closed);
  }
  std::vector<Conn*> all;
  for (auto& [id, c] : conns_) all.push_back(c);
  handler_->BeginDispatch();
  for (Conn* c : all) ConnOps::Close(c);
  handler_->EndDispatch();
  HandleClosed();
}

void Server::HandleClosed() {
  if (--open_handles_ == 0 && closing_ && on_closed_ != nullptr) {
    auto cb = on_closed_;
    on_closed_ = nullptr;
    cb(on_closed_arg_);
  }
}

}  // namespace mlos::http
