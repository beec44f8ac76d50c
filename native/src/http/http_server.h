// The HTTP/1.1 server of MLOS Core's HTTP door: libuv sockets on the JS thread's own loop, requests
// parsed by llhttp, optional TLS through the process's OpenSSL (Node's), and responses written in
// request order however late each is answered.
//
// Why our own: a server may be handed several requests in one packet (HTTP/1.1 pipelining), and
// the answer to the first may come from another thread, later. This server queues the requests
// behind it and writes every response in order; uWebSockets.js, which the door used before,
// closes such a connection and answers none of them.
//
// The server knows no route and no JS: it hands each complete request (method, target, headers,
// whole body) to its RequestHandler and takes the response back by request id, at any time. What
// it does on its own:
//   - pipelining: up to max_pipelined requests in flight per connection; beyond that it stops
//     reading the connection until responses go out (so a client cannot make it buffer without end)
//   - backpressure: a client that does not read its responses stops being read once
//     max_write_queue_bytes wait to be written
//   - limits: bodies over max_body_bytes get 413, malformed requests 400 (then the connection
//     closes); a request whose head is not complete within idle_timeout_ms of the connection
//     going idle, and a connection idle that long, are closed (slow clients cannot hold it)
//   - Expect: 100-continue is answered when the request is next in line
//   - a client that closes its side (EOF) or whose socket fails is gone: its unanswered requests
//     are reported to OnAbort, so that their work can stop
// Everything runs on the loop's thread; no call here is thread-safe.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mlos::http {

struct TlsConfig {
  std::string cert_file;  // PEM certificate chain
  std::string key_file;   // PEM private key
  std::string passphrase;
};

struct ServerOptions {
  size_t max_body_bytes = 64u << 20;
  uint32_t idle_timeout_ms = 10000;
  uint32_t max_pipelined = 64;
  size_t max_write_queue_bytes = 4u << 20;
  bool tls = false;
  TlsConfig tls_config;
};

// A complete request, valid during OnRequest only (copy what is kept), except the body, which the
// handler may take (TakeBody).
struct Request {
  double id = 0;  // the id Respond takes: connection id * 2^21 + sequence number (< 2^53)
  std::string_view method;   // "GET", "POST", ...
  std::string_view target;   // the request target as sent: path and query
  std::string_view headers;  // "name: value\n" per header, names lower-cased
  char* body = nullptr;      // malloc'd; null when the request has no body
  size_t body_size = 0;
  // Hands the body's ownership to the caller (free it with std::free).
  char* TakeBody() {
    char* b = body;
    body = nullptr;
    return b;
  }
};

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // Around every batch of calls the server makes from the loop (one socket read, a timer tick):
  // the binding opens and closes one JS callback scope there.
  virtual void BeginDispatch() = 0;
  virtual void EndDispatch() = 0;
  virtual void OnRequest(Request& request) = 0;
  // The request's connection is gone before it was answered.
  virtual void OnAbort(double id) = 0;
};

struct Conn;

class Server {
 public:
  Server(uv_loop_t* loop, RequestHandler* handler, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the TLS certificate and key (when options.tls) and listens. Returns an empty string, or
  // what went wrong in one line.
  std::string Listen(const std::string& host, int port);
  int port() const { return port_; }

  // Writes the response to request `id`: "HTTP/1.1 <status_line>\r\n", `header_lines` (each
  // "Name: value\r\n"), Content-Length and, when the connection ends with it, Connection: close;
  // then `body`. The bytes are written now when it is the connection's turn, else copied and kept
  // until it is. False when the connection is gone or the id is not awaiting an answer.
  bool Respond(double id, std::string_view status_line, std::string_view header_lines,
               const char* body, size_t body_size);

  // A streamed response (Server-Sent Events, ...): RespondStart writes the status line and
  // headers with Transfer-Encoding: chunked, each RespondChunk one chunk, RespondEnd the last
  // (empty) chunk. Written at once when it is the connection's turn, else kept until it is; the
  // responses behind a streamed one wait until it ends. False when the connection is gone or the
  // id is not awaiting an answer (or not streaming, for Chunk and End).
  bool RespondStart(double id, std::string_view status_line, std::string_view header_lines);
  bool RespondChunk(double id, const char* data, size_t size);
  bool RespondEnd(double id);

  // The peer's address ("127.0.0.1", "::1") of request `id`'s connection; empty when gone.
  std::string PeerAddress(double id);

  // Stops listening and closes every connection (their unanswered requests go to OnAbort).
  // `on_closed` runs once every handle is closed; the Server may then be deleted.
  void Close(void (*on_closed)(void*), void* arg);

  // Counters for tests and metrics.
  size_t open_connections() const { return conns_.size(); }

 private:
  friend struct Conn;
  friend struct ConnOps;
  static void OnConnection(uv_stream_t* listener, int status);
  static void OnTimer(uv_timer_t* timer);
  static void OnIdle(uv_idle_t* idle);
  void HandleClosed();
  Conn* Find(double id, uint32_t* seq);

  uv_loop_t* loop_;
  RequestHandler* handler_;
  ServerOptions options_;
  uv_tcp_t listener_{};
  uv_timer_t timer_{};
  uv_idle_t idle_{};
  bool listening_ = false;
  bool closing_ = false;
  int open_handles_ = 0;
  int port_ = 0;
  uint32_t next_conn_id_ = 1;
  std::unordered_map<uint32_t, Conn*> conns_;
  // Connections whose parsing was paused and may go on (run from the idle handle, never from
  // inside Respond, so that parsing never re-enters a handler).
  std::vector<uint32_t> resume_;
  void (*on_closed_)(void*) = nullptr;
  void* on_closed_arg_ = nullptr;
  void* ssl_ctx_ = nullptr;  // SSL_CTX*
  std::string date_line_;    // "Date: ...\r\n", refreshed every second
};

// Whether the process's OpenSSL (Node's) offers what TLS needs; empty, or what is missing.
std::string TlsUnavailableReason();

}  // namespace mlos::http
