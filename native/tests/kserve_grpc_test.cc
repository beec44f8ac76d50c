// Unit tests for the KServe v2 gRPC codec (native/src/ort/kserve_grpc.h): the ModelInferRequests it
// decodes, everything it must decline (so that the gRPC door's general path answers it), and the
// ModelInferResponse bytes it writes, against bytes protobufjs wrote for the same message. The
// whole door, fast path against general path, is tested from node (test/grpc.test.ts).
#include "ort/kserve_grpc.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "test_harness.h"
#include "kserve_test_specs.h"

using mlos::kserve::DecodedRequest;
using mlos::kserve::DecodeModelInferRequest;
using mlos::kserve::Elem;
using mlos::kserve::InputSpec;

using kserve_test::MlpSpecs;
using kserve_test::PairSpecs;

namespace {

// A protobuf writer for the test's messages (the codec under test is the reader).
struct Message {
  std::string bytes;
  Message& Varint(uint64_t v) {
    while (v >= 0x80) {
      bytes += static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    bytes += static_cast<char>(v);
    return *this;
  }
  Message& Key(uint32_t field, uint32_t type) { return Varint((static_cast<uint64_t>(field) << 3) | type); }
  Message& Bytes(uint32_t field, const std::string& s) {
    Key(field, 2).Varint(s.size());
    bytes += s;
    return *this;
  }
  Message& Packed(uint32_t field, const std::vector<int64_t>& values) {
    Message inner;
    for (int64_t v : values) inner.Varint(static_cast<uint64_t>(v));
    return Bytes(field, inner.bytes);
  }
};

std::string Tensor(const std::string& name, const std::string& datatype, const std::vector<int64_t>& shape) {
  return Message().Bytes(1, name).Bytes(2, datatype).Packed(3, shape).bytes;
}

std::string Floats(const std::vector<float>& v) {
  std::string s(v.size() * sizeof(float), '\0');
  if (!v.empty()) std::memcpy(s.data(), v.data(), s.size());
  return s;
}

// A valid request for the MLP, as a gRPC client sends it.
std::string MlpRequest(const std::string& id = "r1") {
  return Message()
      .Bytes(1, "demo/mlp")
      .Bytes(3, id)
      .Bytes(5, Tensor("x", "FP32", {1, 4}))
      .Bytes(7, Floats({0.1f, 0.2f, 0.3f, 0.4f}))
      .bytes;
}

bool Decodes(const std::string& body, const std::vector<InputSpec>& specs) {
  DecodedRequest r;
  return DecodeModelInferRequest(body, specs, r);
}

std::string Hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

}  // namespace

TEST(decodes_raw_contents_and_the_id) {
  DecodedRequest r;
  REQUIRE(DecodeModelInferRequest(MlpRequest(), MlpSpecs(), r));
  CHECK_EQ(r.id, std::string("r1"));
  CHECK(r.hasId);
  CHECK(r.inputs[0].shape == (std::vector<int64_t>{1, 4}));
  CHECK_EQ(r.inputs[0].bytes.size(), 16u);
  float v[4];
  std::memcpy(v, r.inputs[0].bytes.data(), 16);
  CHECK_EQ(v[3], 0.4f);
  // No id: the response still carries one, empty (as the general path answers).
  const std::string noId = Message().Bytes(1, "m").Bytes(5, Tensor("x", "FP32", {2, 4})).Bytes(7, Floats(std::vector<float>(8, 1.f))).bytes;
  REQUIRE(DecodeModelInferRequest(noId, MlpSpecs(), r));
  CHECK(r.hasId);
  CHECK_EQ(r.id, std::string());
  CHECK(r.inputs[0].shape == (std::vector<int64_t>{2, 4}));
}

TEST(inputs_in_any_order_shapes_packed_or_not) {
  const auto specs = PairSpecs();
  std::string a(3 * 8, '\0'), b(3 * 2, '\1');
  // b before a; a's shape as unpacked varints; raw contents follow the inputs' order.
  const std::string bTensor = Tensor("b", "BOOL", {3, 2});
  const std::string aTensor = Message().Bytes(1, "a").Bytes(2, "INT64").Key(3, 0).Varint(3).bytes;
  const std::string body = Message().Bytes(5, bTensor).Bytes(5, aTensor).Bytes(7, b).Bytes(7, a).bytes;
  DecodedRequest r;
  REQUIRE(DecodeModelInferRequest(body, specs, r));
  CHECK(r.inputs[0].shape == (std::vector<int64_t>{3}));
  CHECK_EQ(r.inputs[0].bytes.size(), 24u);
  CHECK(r.inputs[1].shape == (std::vector<int64_t>{3, 2}));
  CHECK_EQ(r.inputs[1].bytes[0], 1);
  // Named dimensions must agree across inputs.
  const std::string disagree =
      Message().Bytes(5, Tensor("a", "INT64", {2})).Bytes(5, bTensor).Bytes(7, std::string(16, '\0')).Bytes(7, b).bytes;
  CHECK(!Decodes(disagree, specs));
}

TEST(declines_what_the_general_path_must_answer) {
  const auto specs = MlpSpecs();
  const std::string x = Tensor("x", "FP32", {1, 4});
  const std::string data = Floats({1, 2, 3, 4});
  const std::string param = Message().Bytes(1, "priority").Bytes(2, Message().Key(2, 0).Varint(1).bytes).bytes;
  auto with = [&](const std::string& extra) { return Message().Bytes(5, x).Bytes(7, data).bytes + extra; };
  CHECK(Decodes(with(""), specs));
  CHECK(!Decodes(with(Message().Bytes(4, param).bytes), specs));                          // request parameters
  CHECK(!Decodes(with(Message().Bytes(6, Message().Bytes(1, "y").bytes).bytes), specs));  // an outputs selection
  CHECK(!Decodes(with(Message().Bytes(9, "?").bytes), specs));                            // an unknown field
  CHECK(!Decodes(with(Message().Key(3, 0).Varint(5).bytes), specs));                      // id with a wrong wire type
  CHECK(!Decodes(with(Message().Bytes(3, "caf\xc3\xa9").bytes), specs));                  // a non-ASCII id
  CHECK(!Decodes(Message().Bytes(5, x).bytes, specs));                                    // typed contents (none raw)
  CHECK(!Decodes(Message().Bytes(5, x + Message().Bytes(5, Message().bytes).bytes).Bytes(7, data).bytes, specs));  // contents
  CHECK(!Decodes(Message().Bytes(5, x + Message().Bytes(4, param).bytes).Bytes(7, data).bytes, specs));  // tensor parameters
  CHECK(!Decodes(Message().Bytes(5, Tensor("x", "FP64", {1, 4})).Bytes(7, data).bytes, specs));           // wrong datatype
  CHECK(!Decodes(Message().Bytes(5, Tensor("x", "FP32", {1, 5})).Bytes(7, Floats({1, 2, 3, 4, 5})).bytes, specs));  // fixed dim
  CHECK(!Decodes(Message().Bytes(5, Tensor("x", "FP32", {2, 4})).Bytes(7, data).bytes, specs));           // too few bytes
  CHECK(!Decodes(Message().Bytes(5, x).Bytes(7, data + std::string(1, '\0')).bytes, specs));                              // not whole elements
  CHECK(!Decodes(Message().Bytes(5, Tensor("z", "FP32", {1, 4})).Bytes(7, data).bytes, specs));           // unknown input
  CHECK(!Decodes(Message().Bytes(5, x).Bytes(5, x).Bytes(7, data).Bytes(7, data).bytes, specs));          // given twice
  CHECK(!Decodes(Message().Bytes(5, Tensor("x", "FP32", {-1, 4})).Bytes(7, data).bytes, specs));          // negative dim
  CHECK(!Decodes(Message().Bytes(5, Tensor("x", "FP32", {1LL << 53, 4})).Bytes(7, data).bytes, specs));   // beyond 2^53 - 1
  CHECK(!Decodes(Message().Bytes(5, Tensor("x", "FP32", {1})).Bytes(7, Floats({1})).bytes, specs));       // wrong rank
  CHECK(!Decodes(Message().bytes, specs));                                                                 // no inputs
  CHECK(!Decodes(Message().Bytes(1, "m").Bytes(5, x).Bytes(7, data).Bytes(7, data).bytes, specs));        // raw count != inputs
}

TEST(random_bytes_and_truncations_never_crash) {
  const std::string good = MlpRequest();
  const auto specs = MlpSpecs();
  REQUIRE(Decodes(good, specs));
  for (size_t n = 0; n < good.size(); ++n) CHECK(!Decodes(good.substr(0, n), specs));
  // Lengths and varints that run past the end, or never end.
  CHECK(!Decodes(Message().Key(5, 2).Varint(1ull << 40).bytes, specs));
  CHECK(!Decodes(std::string(12, '\xff'), specs));
  std::mt19937 rng(11);
  DecodedRequest reused;  // one request object reused across calls, as the session does
  for (int i = 0; i < 20000; ++i) {
    std::string s = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) s[rng() % s.size()] = static_cast<char>(rng() % 256);
    (void)DecodeModelInferRequest(s, specs, reused);
  }
  CHECK(DecodeModelInferRequest(good, specs, reused));
  CHECK_EQ(reused.inputs[0].bytes.size(), 16u);
}

TEST(response_bytes_are_those_protobufjs_writes) {
  // protobufjs (through @grpc/proto-loader, as the gRPC door's general path serializes) wrote this
  // for { model_name: "demo/mlp", model_version: "1", id: "", outputs: [{ name: "y", datatype:
  // "FP32", shape: [1, 2] }], raw_output_contents: [bytes 1..8] }.
  const std::string expected = "0a0864656d6f2f6d6c701201311a002a0d0a01791204465033321a02010232080102030405060708";
  DecodedRequest req;
  req.hasId = true;
  const unsigned char data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const int64_t shape[2] = {1, 2};
  mlos::kserve::OutputView y{"y", Elem::kFloat32, shape, 2, data, 2};
  std::string out;
  mlos::kserve::EncodeModelInferResponse(out, "demo/mlp", "1", req, &y, 1);
  CHECK_EQ(Hex(out), expected);
  // Large varints (a 300-element output: two-byte dimension and length) and a scalar (no shape).
  std::vector<float> big(300, 0.5f);
  const int64_t bigShape[1] = {300};
  const float scalar = 2.f;
  mlos::kserve::OutputView two[2] = {{"big", Elem::kFloat32, bigShape, 1, big.data(), 300},
                                      {"s", Elem::kFloat32, nullptr, 0, &scalar, 1}};
  req.id = "abc";
  out.clear();
  mlos::kserve::EncodeModelInferResponse(out, "m", "", req, two, 2);
  const std::string head = Hex(out.substr(0, 12));
  CHECK_EQ(head, std::string("0a016d12001a03616263") + "2a0f");  // name, empty version, id, first tensor (15 bytes)
  CHECK_EQ(Hex(out.substr(10, 17)), std::string("2a0f0a03626967120446503332") + "1a02ac02");
  CHECK_EQ(Hex(out.substr(27, 11)), std::string("2a09") + "0a0173120446503332");  // the scalar: no shape field
  CHECK_EQ(Hex(out.substr(38, 4)), std::string("32b00900"));                        // 1200 bytes follow
  CHECK_EQ(out.size(), 38u + 3u + 1200u + 2u + 4u);  // ... and the scalar's 4 bytes
}

int main() { return mlos_test::RunAll(); }
