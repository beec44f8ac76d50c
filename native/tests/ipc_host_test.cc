// IpcHost and IpcConnection together, over a real Unix socket and memfd segment, with a model of
// the test's own (it doubles float32 inputs): handshake, a round trip in place, validation of
// every field a client writes, an unknown model, a model removed while clients run, a client that
// dies mid-request (its segment freed), one that never reads its responses (dropped after the
// lease, others unaffected), a corrupt request ring, a server that stops (clients see it), and
// many clients at once.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ipc/ipc_client.h"
#include "ipc/ipc_host.h"
#include "ipc/ipc_wire.h"
#include "test_harness.h"

using namespace mlos::ipc;

namespace {

// Doubles its one float32 input into an output of the same shape at the start of the window.
class Doubler : public IpcModel {
 public:
  std::atomic<int> runs{0};
  std::atomic<int> sleep_ms{0};  // the test changes it while server threads run
  void Run(const mlos_ipc_request& r, const std::shared_ptr<Segment>& seg, mlos_ipc_response* out) override {
    runs++;
    if (sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    const mlos_ipc_tensor& in = r.inputs[0];
    if (in.dtype != 1) {
      SetError(out, r.id, "IPC_BAD_TENSOR", "float32 only");
      return;
    }
    if (r.out_bytes < in.bytes) {
      SetError(out, r.id, "IPC_OUTPUT_TOO_SMALL", "window too small");
      out->needed_bytes = in.bytes;
      return;
    }
    const float* x = reinterpret_cast<const float*>(seg->arena + in.offset);
    float* y = reinterpret_cast<float*>(seg->arena + r.out_offset);
    for (uint64_t i = 0; i < in.bytes / 4; ++i) y[i] = 2 * x[i];
    out->status = 0;
    out->n_outputs = 1;
    out->outputs[0] = in;
    CopyName(out->outputs[0].name, sizeof out->outputs[0].name, "y");
    out->outputs[0].offset = r.out_offset;
    out->compute_ns = 1000;
  }
};

uint64_t Requests(const IpcHost& host, const std::string& name) {
  const auto counts = host.ModelCounts();
  auto it = counts.find(name);
  return it == counts.end() ? 0 : it->second.requests;
}

std::string TestSocket(const char* tag) { return "/tmp/mlos-ipc-test-" + std::to_string(getpid()) + "-" + tag + ".sock"; }

// A host listening on `path` and serving a Doubler as "double" (handed out in *model when asked);
// nullptr when it cannot start.
std::unique_ptr<IpcHost> ServeDoubler(const std::string& path, std::shared_ptr<Doubler>* model = nullptr, int64_t lease_ns = 5'000'000'000) {
  IpcHostOptions o;
  o.socket_path = path;
  o.lease_ns = lease_ns;
  std::string error;
  auto host = IpcHost::Start(o, &error);
  if (!host) {
    std::printf("    start failed: %s\n", error.c_str());
    return nullptr;
  }
  auto doubler = std::make_shared<Doubler>();
  host->SetModel("double", doubler);
  if (model != nullptr) *model = std::move(doubler);
  return host;
}

mlos_ipc_request Request(uint64_t id, const char* model, uint64_t in_offset, uint64_t elements, uint64_t out_offset, uint64_t out_bytes) {
  mlos_ipc_request r{};
  r.kind = MLOS_IPC_INFER;
  r.id = id;
  CopyName(r.model, sizeof r.model, model);
  r.n_inputs = 1;
  CopyName(r.inputs[0].name, sizeof r.inputs[0].name, "x");
  r.inputs[0].dtype = 1;
  r.inputs[0].rank = 2;
  r.inputs[0].shape[0] = 1;
  r.inputs[0].shape[1] = static_cast<int64_t>(elements);
  r.inputs[0].offset = in_offset;
  r.inputs[0].bytes = elements * 4;
  r.out_offset = out_offset;
  r.out_bytes = out_bytes;
  return r;
}

// Sends and waits for one response.
int RoundTrip(IpcConnection& c, const mlos_ipc_request& r, mlos_ipc_response* out, std::string* error) {
  if (!c.Send(r)) {
    *error = "send failed";
    return -1;
  }
  return c.Receive(out, 5'000'000'000, 20'000, error);
}

}  // namespace

TEST(ipc_host_round_trip_in_place) {
  const std::string path = TestSocket("rt");
  std::shared_ptr<Doubler> model;
  auto host = ServeDoubler(path, &model);
  REQUIRE(host != nullptr);
  std::string error;
  auto c = IpcConnection::Connect(path, 1 << 20, &error);
  REQUIRE(c != nullptr);
  CHECK(c->arena_bytes() >= (1u << 20));
  CHECK_EQ(c->server_instance(), host->instance());
  float* x = reinterpret_cast<float*>(c->arena());
  for (int i = 0; i < 4; ++i) x[i] = static_cast<float>(i + 1);
  mlos_ipc_response out{};
  REQUIRE(RoundTrip(*c, Request(7, "double", 0, 4, 4096, 4096), &out, &error) == 1);
  CHECK_EQ(out.id, 7u);
  CHECK_EQ(out.status, 0);
  CHECK_EQ(out.n_outputs, 1u);
  const float* y = reinterpret_cast<const float*>(c->arena() + out.outputs[0].offset);
  CHECK_EQ(y[0], 2.0f);
  CHECK_EQ(y[3], 8.0f);
  CHECK_EQ(host->Stats().clients, 1u);
  CHECK_EQ(Requests(*host, "double"), 1u);
  c.reset();
  for (int i = 0; i < 100 && host->Stats().clients != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK_EQ(host->Stats().clients, 0u);
  CHECK_EQ(host->Stats().segment_bytes, 0u);
}

TEST(ipc_host_checks_every_field_a_client_writes) {
  const std::string path = TestSocket("val");
  std::shared_ptr<Doubler> model;
  auto host = ServeDoubler(path, &model);
  REQUIRE(host != nullptr);
  std::string error;
  auto c = IpcConnection::Connect(path, 1 << 16, &error);
  REQUIRE(c != nullptr);
  const uint64_t arena = c->arena_bytes();
  struct Case {
    const char* what;
    const char* code;
    void (*edit)(mlos_ipc_request&, uint64_t arena);
  };
  const Case cases[] = {
      {"input past the arena", "IPC_OUT_OF_RANGE", [](mlos_ipc_request& r, uint64_t a) { r.inputs[0].offset = a - 8; }},
      {"offset wraps around", "IPC_OUT_OF_RANGE", [](mlos_ipc_request& r, uint64_t) { r.inputs[0].offset = UINT64_MAX - 4; }},
      {"window past the arena", "IPC_OUT_OF_RANGE", [](mlos_ipc_request& r, uint64_t a) { r.out_bytes = a; }},
      {"bytes disagree with the shape", "IPC_BAD_TENSOR", [](mlos_ipc_request& r, uint64_t) { r.inputs[0].bytes = 12; }},
      {"negative dimension", "IPC_BAD_TENSOR", [](mlos_ipc_request& r, uint64_t) { r.inputs[0].shape[1] = -4; }},
      {"overflowing shape", "IPC_BAD_TENSOR", [](mlos_ipc_request& r, uint64_t) { r.inputs[0].shape[0] = INT64_MAX; r.inputs[0].shape[1] = INT64_MAX; }},
      {"rank 9", "IPC_BAD_TENSOR", [](mlos_ipc_request& r, uint64_t) { r.inputs[0].rank = 9; }},
      {"unknown dtype", "IPC_BAD_TENSOR", [](mlos_ipc_request& r, uint64_t) { r.inputs[0].dtype = 99; }},
      {"string dtype", "IPC_BAD_TENSOR", [](mlos_ipc_request& r, uint64_t) { r.inputs[0].dtype = 8; }},
      {"unterminated name", "IPC_BAD_TENSOR", [](mlos_ipc_request& r, uint64_t) { std::memset(r.inputs[0].name, 'a', sizeof r.inputs[0].name); }},
      {"unterminated model", "IPC_BAD_REQUEST", [](mlos_ipc_request& r, uint64_t) { std::memset(r.model, 'm', sizeof r.model); }},
      {"no inputs", "IPC_BAD_REQUEST", [](mlos_ipc_request& r, uint64_t) { r.n_inputs = 0; }},
      {"nine inputs", "IPC_BAD_REQUEST", [](mlos_ipc_request& r, uint64_t) { r.n_inputs = 9; }},
      {"an input twice", "IPC_BAD_REQUEST", [](mlos_ipc_request& r, uint64_t) { r.n_inputs = 2; r.inputs[1] = r.inputs[0]; }},
      {"unknown kind", "IPC_BAD_REQUEST", [](mlos_ipc_request& r, uint64_t) { r.kind = 5; }},
      {"unknown model", "IPC_MODEL_NOT_FOUND", [](mlos_ipc_request& r, uint64_t) { CopyName(r.model, sizeof r.model, "nope"); }},
  };
  uint64_t id = 100;
  for (const Case& k : cases) {
    mlos_ipc_request r = Request(++id, "double", 0, 4, 4096, 4096);
    k.edit(r, arena);
    // Send pushes only n_inputs descriptors: push the whole message so that "nine inputs" arrives.
    mlos_ipc_response out{};
    REQUIRE(RoundTrip(*c, r, &out, &error) == 1);
    CHECK_EQ(out.id, id);
    if (out.status == 0 || std::strcmp(out.code, k.code) != 0) std::printf("    %s: status %d code %s (%s)\n", k.what, out.status, out.code, out.message);
    CHECK(out.status != 0);
    CHECK_EQ(std::string(out.code), std::string(k.code));
    CHECK(std::strlen(out.message) > 0);
  }
  CHECK_EQ(model->runs.load(), 0);
  // Still serving.
  mlos_ipc_response out{};
  REQUIRE(RoundTrip(*c, Request(1, "double", 0, 4, 4096, 4096), &out, &error) == 1);
  CHECK_EQ(out.status, 0);
}

TEST(ipc_host_model_removed_while_a_client_runs) {
  const std::string path = TestSocket("rm");
  std::shared_ptr<Doubler> model;
  auto host = ServeDoubler(path, &model);
  REQUIRE(host != nullptr);
  model->sleep_ms = 50;
  std::string error;
  auto c = IpcConnection::Connect(path, 1 << 16, &error);
  REQUIRE(c != nullptr);
  REQUIRE(c->Send(Request(1, "double", 0, 4, 4096, 4096)));
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  host->RemoveModel("double");
  std::weak_ptr<Doubler> weak = model;
  model.reset();  // the run in flight holds it
  mlos_ipc_response out{};
  REQUIRE(c->Receive(&out, 5'000'000'000, 0, &error) == 1);
  CHECK_EQ(out.status, 0);  // it started before the removal
  REQUIRE(RoundTrip(*c, Request(2, "double", 0, 4, 4096, 4096), &out, &error) == 1);
  CHECK_EQ(std::string(out.code), std::string("IPC_MODEL_NOT_FOUND"));
  CHECK(weak.expired());
}

TEST(ipc_host_frees_a_killed_client_and_drops_one_that_never_reads) {
  const std::string path = TestSocket("kill");
  std::shared_ptr<Doubler> model;
  auto host = ServeDoubler(path, &model, 300'000'000);
  REQUIRE(host != nullptr);
  model->sleep_ms = 20;
  // A child connects, sends a request and is killed mid-request.
  pid_t child = fork();
  if (child == 0) {
    std::string e;
    auto c = IpcConnection::Connect(path, 1 << 16, &e);
    if (!c) _exit(2);
    c->Send(Request(1, "double", 0, 4, 4096, 4096));
    for (;;) pause();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  // A client that fills its rings and never reads.
  std::string error;
  auto lazy = IpcConnection::Connect(path, 1 << 16, &error);
  REQUIRE(lazy != nullptr);
  model->sleep_ms = 0;
  // More requests than both rings hold: the server fills the response ring, then waits on it.
  int sent = 0;
  for (int i = 0; i < 2000 && sent < 150; ++i) {
    if (lazy->Send(Request(sent, "double", 0, 4, 4096, 4096))) {
      sent++;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  CHECK(sent > static_cast<int>(2 * kRingSlots));
  // A well-behaved client is served meanwhile.
  auto good = IpcConnection::Connect(path, 1 << 16, &error);
  REQUIRE(good != nullptr);
  for (int i = 0; i < 50; ++i) {
    mlos_ipc_response out{};
    REQUIRE(RoundTrip(*good, Request(i, "double", 0, 4, 4096, 4096), &out, &error) == 1);
    CHECK_EQ(out.status, 0);
  }
  // Past the lease the lazy one is dropped: it sees it.
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  CHECK(!lazy->Connected());
  CHECK(host->Stats().dropped >= 1);
  CHECK_EQ(host->Stats().clients, 1u);  // the good one; the killed child's segment is gone
}

TEST(ipc_host_drops_a_client_whose_ring_is_corrupt) {
  const std::string path = TestSocket("corrupt");
  auto host = ServeDoubler(path);
  REQUIRE(host != nullptr);
  std::string error;
  auto c = IpcConnection::Connect(path, 1 << 16, &error);
  REQUIRE(c != nullptr);
  // The request ring's head, one line into its header, set far past its tail.
  uint8_t* segment = c->arena() - (LayoutFor(c->arena_bytes()).arena_offset);
  auto* head = reinterpret_cast<uint64_t*>(segment + MLOS_IPC_SEGMENT_HEADER_BYTES + 64);
  __atomic_store_n(head, 1000000, __ATOMIC_RELEASE);
  c->Send(Request(1, "double", 0, 4, 4096, 4096));  // (refused: the ring looks full) wakes nobody
  for (int i = 0; i < 100 && host->Stats().dropped == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK_EQ(host->Stats().dropped, 1u);
  mlos_ipc_response out{};
  CHECK_EQ(c->Receive(&out, 1'000'000'000, 0, &error), -1);
  CHECK(error.find("IPC_DISCONNECTED") != std::string::npos);
  // Others connect and run as before.
  auto d = IpcConnection::Connect(path, 1 << 16, &error);
  REQUIRE(d != nullptr);
  REQUIRE(RoundTrip(*d, Request(2, "double", 0, 4, 4096, 4096), &out, &error) == 1);
  CHECK_EQ(out.status, 0);
}

TEST(ipc_host_stop_is_seen_by_clients_and_a_new_server_is_a_new_instance) {
  const std::string path = TestSocket("restart");
  auto host = ServeDoubler(path);
  REQUIRE(host != nullptr);
  std::string error;
  auto c = IpcConnection::Connect(path, 1 << 16, &error);
  REQUIRE(c != nullptr);
  const uint64_t first = c->server_instance();
  // A second server on the same path is refused while the first listens.
  IpcHostOptions o;
  o.socket_path = path;
  CHECK(IpcHost::Start(o, &error) == nullptr);
  CHECK(error.find("another server") != std::string::npos);
  host->Stop();
  mlos_ipc_response out{};
  CHECK_EQ(c->Receive(&out, 2'000'000'000, 0, &error), -1);
  CHECK(!c->Connected());
  host.reset();
  auto again = ServeDoubler(path);
  REQUIRE(again != nullptr);
  auto d = IpcConnection::Connect(path, 1 << 16, &error);
  REQUIRE(d != nullptr);
  CHECK(d->server_instance() != first);
  REQUIRE(RoundTrip(*d, Request(3, "double", 0, 4, 4096, 4096), &out, &error) == 1);
  CHECK_EQ(out.status, 0);
}

TEST(ipc_host_serves_32_clients_at_once) {
  const std::string path = TestSocket("many");
  auto host = ServeDoubler(path);
  REQUIRE(host != nullptr);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 32; ++t) {
    threads.emplace_back([&, t] {
      std::string e;
      auto c = IpcConnection::Connect(path, 1 << 16, &e);
      if (!c) {
        failures++;
        return;
      }
      float* x = reinterpret_cast<float*>(c->arena());
      for (int i = 0; i < 200; ++i) {
        for (int k = 0; k < 4; ++k) x[k] = static_cast<float>(t * 1000 + i + k);
        mlos_ipc_response out{};
        if (RoundTrip(*c, Request(i, "double", 0, 4, 4096, 4096), &out, &e) != 1 || out.status != 0 || out.id != static_cast<uint64_t>(i)) {
          failures++;
          return;
        }
        const float* y = reinterpret_cast<const float*>(c->arena() + 4096);
        if (y[0] != 2.0f * static_cast<float>(t * 1000 + i)) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK_EQ(failures.load(), 0);
  CHECK_EQ(Requests(*host, "double"), 32u * 200u);
}

int main() { return mlos_test::RunAll(); }
