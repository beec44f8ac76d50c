// Unit tests for the KServe v2 JSON codec (native/src/ort/kserve_json.h): what it decodes, everything it
// must decline (so that the general path reports it), and the response bytes it writes. Number
// formatting against JavaScript itself is tested from node (test/kserve-fast-path.test.js).
#include "ort/kserve_json.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "test_harness.h"
#include "kserve_test_specs.h"

using mlos::kserve::DecodedRequest;
using mlos::kserve::DecodeInferRequest;
using mlos::kserve::Dim;
using mlos::kserve::Elem;
using mlos::kserve::InputSpec;

using kserve_test::MlpSpecs;
using kserve_test::PairSpecs;

namespace {

template <typename T>
std::vector<T> Values(const mlos::kserve::DecodedInput& in) {
  std::vector<T> v(in.bytes.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), in.bytes.data(), in.bytes.size());
  return v;
}

bool Decodes(const std::string& body, const std::vector<InputSpec>& specs) {
  DecodedRequest r;
  return DecodeInferRequest(body, specs, r);
}

std::string Number(double v) {
  std::string s;
  mlos::kserve::AppendJsNumber(s, v);
  return s;
}

}  // namespace

TEST(decodes_a_flat_request) {
  DecodedRequest r;
  REQUIRE(DecodeInferRequest(R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.5,-1,2e3,3.25]}]})",
                             MlpSpecs(), r));
  CHECK_EQ(r.inputs.size(), 1u);
  CHECK_EQ(r.inputs[0].shape.size(), 2u);
  CHECK_EQ(r.inputs[0].shape[0], 1);
  CHECK_EQ(r.inputs[0].shape[1], 4);
  const std::vector<float> v = Values<float>(r.inputs[0]);
  REQUIRE(v.size() == 4);
  CHECK_EQ(v[0], 0.5f);
  CHECK_EQ(v[1], -1.0f);
  CHECK_EQ(v[2], 2000.0f);
  CHECK_EQ(v[3], 3.25f);
  CHECK(!r.hasId);
}

TEST(decodes_nested_data_any_key_order_whitespace_and_an_id) {
  DecodedRequest r;
  REQUIRE(DecodeInferRequest(
      " \n{ \"id\" : \"req-7\", \"extra\": {\"k\": [1, \"s\\u00e9\", null, true]},\r\n"
      "  \"inputs\" : [ { \"data\" : [[1, 2, 3, 4], [5, 6, 7, 8]], \"datatype\":\"FP32\", \"shape\": [2, 4], \"name\":\"x\" } ] }\t",
      MlpSpecs(), r));
  CHECK(r.hasId);
  CHECK_EQ(r.id, std::string("req-7"));
  CHECK_EQ(r.inputs[0].shape[0], 2);
  const std::vector<float> v = Values<float>(r.inputs[0]);
  REQUIRE(v.size() == 8);
  CHECK_EQ(v[7], 8.0f);
}

TEST(numbers_are_rounded_like_json_parse_then_float32) {
  DecodedRequest r;
  REQUIRE(DecodeInferRequest(R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.1,1e-50,3.4028235677973366e38,-0]}]})",
                             MlpSpecs(), r));
  const std::vector<float> v = Values<float>(r.inputs[0]);
  CHECK_EQ(v[0], static_cast<float>(0.1));
  CHECK_EQ(v[1], 0.0f);
  CHECK_EQ(v[2], static_cast<float>(3.4028235677973366e38));
  CHECK(std::signbit(v[3]));
}

TEST(ints_bools_and_named_dimensions) {
  DecodedRequest r;
  REQUIRE(DecodeInferRequest(
      R"({"inputs":[{"name":"b","datatype":"BOOL","shape":[2,1],"data":[true,0]},{"name":"a","datatype":"INT64","shape":[2],"data":[-9007199254740991,42]}]})",
      PairSpecs(), r));
  const std::vector<int64_t> a = Values<int64_t>(r.inputs[0]);
  REQUIRE(a.size() == 2);
  CHECK_EQ(a[0], -9007199254740991LL);
  CHECK_EQ(a[1], 42);
  REQUIRE(r.inputs[1].bytes.size() == 2);
  CHECK_EQ(static_cast<int>(r.inputs[1].bytes[0]), 1);
  CHECK_EQ(static_cast<int>(r.inputs[1].bytes[1]), 0);
}

TEST(declines_what_the_general_path_must_answer) {
  const auto mlp = MlpSpecs();
  const char* declined[] = {
      "",                                                                                     // empty
      "[]",                                                                                   // not an object
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]} x)",     // trailing garbage
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}])",        // truncated
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],}]})",      // trailing comma
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[01,2,3,4]}]})",      // leading zero
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1.,2,3,4]}]})",      // bad fraction
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1e999,2,3,4]}]})",   // overflows a double
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[NaN,2,3,4]}]})",     // not JSON
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]})",         // too few elements
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4,5]}]})",     // too many
      R"({"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]})",     // fixed dim
      R"({"inputs":[{"name":"x","shape":[4],"datatype":"FP32","data":[1,2,3,4]}]})",         // rank
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[1,2,3,4]}]})",       // dtype
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"fp32","data":[1,2,3,4]}]})",       // case (JS upper-cases)
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[true,2,3,4]}]})",    // bool in floats
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":["1",2,3,4]}]})",     // string element
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[null,2,3,4]}]})",    // null element
      R"({"inputs":[{"name":"x","shape":[1.5,4],"datatype":"FP32","data":[1,2,3,4]}]})",     // fractional dim
      R"({"inputs":[{"name":"x","shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]})",      // negative dim
      R"({"inputs":[{"name":"y","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})",       // unknown input
      R"({"inputs":[]})",                                                                    // missing input
      R"({"inputs":{}})",                                                                    // not an array
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})",
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"inputs":[]})",  // duplicate key
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"y"}]})",
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{}})",
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]})",
      R"({"inputs":[{"name":"\u0078","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})",  // escaped name
      R"({"id":"a\"b","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})",
      R"({"x":"bad \q escape","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})",
      "{\"x\":\"raw \x01 control\",\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}]}",
  };
  for (const char* body : declined) {
    if (Decodes(body, mlp)) ::mlos_test::Fail(__FILE__, __LINE__, std::string("decoded, should decline: ") + body);
  }
  const auto pair = PairSpecs();
  const char* pairDeclined[] = {
      R"({"inputs":[{"name":"a","datatype":"INT64","shape":[2],"data":[1,2]},{"name":"b","datatype":"BOOL","shape":[3,1],"data":[true,false,true]}]})",  // n differs
      R"({"inputs":[{"name":"a","datatype":"INT64","shape":[1],"data":[1.5]},{"name":"b","datatype":"BOOL","shape":[1,1],"data":[true]}]})",           // fraction in int64
      R"({"inputs":[{"name":"a","datatype":"INT64","shape":[1],"data":[9223372036854775808]},{"name":"b","datatype":"BOOL","shape":[1,1],"data":[true]}]})",
      R"({"inputs":[{"name":"a","datatype":"INT64","shape":[1],"data":["12"]},{"name":"b","datatype":"BOOL","shape":[1,1],"data":[true]}]})",         // int64 as string
      R"({"inputs":[{"name":"a","datatype":"INT64","shape":[1],"data":[1]},{"name":"b","datatype":"BOOL","shape":[1,1],"data":[2]}]})",               // bool 2
  };
  for (const char* body : pairDeclined) {
    if (Decodes(body, pair)) ::mlos_test::Fail(__FILE__, __LINE__, std::string("decoded, should decline: ") + body);
  }
}

TEST(huge_shapes_cannot_overflow_the_element_count) {
  // 2^32 x 2^32 wraps to 0 in 64 bits: it must still not match an empty data array.
  CHECK(!Decodes(R"({"inputs":[{"name":"x","shape":[4294967296,4294967296],"datatype":"FP32","data":[]}]})", [] {
    InputSpec s;
    s.name = "x";
    s.elem = Elem::kFloat32;
    s.dims = {Dim{-1, ""}, Dim{-1, ""}};
    return std::vector<InputSpec>{s};
  }()));
  CHECK(!Decodes(R"({"inputs":[{"name":"x","shape":[9007199254740991,4],"datatype":"FP32","data":[1,2,3,4]}]})", MlpSpecs()));
}

TEST(deep_nesting_is_declined_not_recursed_into) {
  std::string deep(100000, '[');
  std::string body = R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":)" + deep + "}]}";
  CHECK(!Decodes(body, MlpSpecs()));
  std::string skipped = R"({"extra":)" + deep + R"(,"inputs":[]})";
  CHECK(!Decodes(skipped, MlpSpecs()));
}

TEST(random_bytes_and_truncations_never_crash) {
  const std::string good = R"({"id":"r1","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[[0.1,0.2,0.3,0.4]]}]})";
  const auto specs = MlpSpecs();
  REQUIRE(Decodes(good, specs));
  for (size_t n = 0; n < good.size(); ++n) CHECK(!Decodes(good.substr(0, n), specs));
  std::mt19937 rng(7);
  DecodedRequest reused;  // one request object reused across calls, as the session does
  for (int i = 0; i < 20000; ++i) {
    std::string s = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) s[rng() % s.size()] = static_cast<char>(rng() % 256);
    (void)DecodeInferRequest(s, specs, reused);
  }
  CHECK(DecodeInferRequest(good, specs, reused));
  CHECK_EQ(Values<float>(reused.inputs[0]).size(), 4u);
}

TEST(numbers_are_written_as_javascript_writes_them) {
  CHECK_EQ(Number(0), std::string("0"));
  CHECK_EQ(Number(-0.0), std::string("0"));
  CHECK_EQ(Number(1), std::string("1"));
  CHECK_EQ(Number(-2.5), std::string("-2.5"));
  CHECK_EQ(Number(100), std::string("100"));
  CHECK_EQ(Number(0.1), std::string("0.1"));
  CHECK_EQ(Number(static_cast<double>(0.1f)), std::string("0.10000000149011612"));
  CHECK_EQ(Number(1e21), std::string("1e+21"));
  CHECK_EQ(Number(1e20), std::string("100000000000000000000"));
  CHECK_EQ(Number(123456789012345680000.0), std::string("123456789012345680000"));
  CHECK_EQ(Number(1e-6), std::string("0.000001"));
  CHECK_EQ(Number(1e-7), std::string("1e-7"));
  CHECK_EQ(Number(1.5e-7), std::string("1.5e-7"));
  CHECK_EQ(Number(-1.2345e-10), std::string("-1.2345e-10"));
  CHECK_EQ(Number(5e-324), std::string("5e-324"));
  CHECK_EQ(Number(1.7976931348623157e308), std::string("1.7976931348623157e+308"));
  CHECK_EQ(Number(std::nan("")), std::string("null"));
  CHECK_EQ(Number(-INFINITY), std::string("null"));
}

TEST(encodes_the_response_as_json_stringify_does) {
  DecodedRequest r;
  REQUIRE(DecodeInferRequest(R"({"id":"q1","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})",
                             MlpSpecs(), r));
  const float y[3] = {0.5f, -0.25f, 1e-8f};
  const int64_t ys[2] = {1, 3};
  const int64_t big[2] = {9007199254740993LL, -7};
  const int64_t bs[1] = {2};
  const unsigned char flags[2] = {1, 0};
  const int64_t fs[1] = {2};
  mlos::kserve::OutputView outs[3] = {
      {"y", Elem::kFloat32, ys, 2, y, 3},
      {"ids", Elem::kInt64, bs, 1, big, 2},
      {"m\"q", Elem::kBool, fs, 1, flags, 2},
  };
  std::string body;
  mlos::kserve::EncodeInferResponse(body, "mlp", "1.0.0", r, outs, 3);
  CHECK_EQ(body, std::string(R"({"model_name":"mlp","model_version":"1.0.0","id":"q1","outputs":[)"
                             R"({"name":"y","datatype":"FP32","shape":[1,3],"data":[0.5,-0.25,9.99999993922529e-9]},)"
                             R"({"name":"ids","datatype":"INT64","shape":[2],"data":["9007199254740993",-7]},)"
                             R"({"name":"m\"q","datatype":"BOOL","shape":[2],"data":[true,false]}]})"));
}

int main() { return mlos_test::RunAll(); }
