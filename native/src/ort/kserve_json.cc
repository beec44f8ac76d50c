// The KServe v2 JSON codec of the fast path (kserve_json.h). The reader is a strict JSON reader
// (RFC 8259, as JSON.parse accepts it) that only ever says "yes, and here are the tensors" or "no":
// whatever it does not fully understand is declined, never guessed.
#include "ort/kserve_json.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

namespace mlos::kserve {

namespace {

// Deeper documents are declined (JSON.parse would take them; the general path then does).
constexpr int kMaxDepth = 64;

class Reader {
 public:
  explicit Reader(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}

  void SkipWs() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  // Consumes `c` (after whitespace) when it is next.
  bool Eat(char c) {
    SkipWs();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  bool Peek(char c) {
    SkipWs();
    return p_ < end_ && *p_ == c;
  }
  bool AtEnd() {
    SkipWs();
    return p_ == end_;
  }

  // A string of printable ASCII without escapes (what names, datatypes and ids are here); false
  // for anything else, including a valid string with escapes or other characters.
  bool PlainString(std::string_view* out) {
    if (!Eat('"')) return false;
    const char* start = p_;
    while (p_ < end_) {
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        *out = std::string_view(start, static_cast<size_t>(p_ - start));
        ++p_;
        return true;
      }
      if (c == '\\' || c < 0x20 || c >= 0x80) return false;
      ++p_;
    }
    return false;
  }

  // Any valid string (escapes checked, control characters refused).
  bool SkipString() {
    if (!Eat('"')) return false;
    while (p_ < end_) {
      const unsigned char c = static_cast<unsigned char>(*p_++);
      if (c == '"') return true;
      if (c < 0x20) return false;
      if (c != '\\') continue;
      if (p_ >= end_) return false;
      const char e = *p_++;
      if (e == 'u') {
        for (int i = 0; i < 4; ++i, ++p_) {
          if (p_ >= end_ || !IsHex(*p_)) return false;
        }
      } else if (std::strchr("\"\\/bfnrt", e) == nullptr || e == '\0') {
        return false;
      }
    }
    return false;
  }

  // A JSON number, checked against the grammar, converted correctly rounded (as JSON.parse does);
  // false for a malformed one or one that overflows or underflows a double.
  bool Number(double* out) {
    SkipWs();
    const char* start = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    if (p_ >= end_) return false;
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      while (p_ < end_ && IsDigit(*p_)) ++p_;
    } else {
      return false;
    }
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      if (p_ >= end_ || !IsDigit(*p_)) return false;
      while (p_ < end_ && IsDigit(*p_)) ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || !IsDigit(*p_)) return false;
      while (p_ < end_ && IsDigit(*p_)) ++p_;
    }
    const std::from_chars_result r = std::from_chars(start, p_, *out);
    return r.ec == std::errc() && r.ptr == p_;
  }

  bool Literal(const char* word) {
    SkipWs();
    const size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
    p_ += n;
    return true;
  }

  // Any valid JSON value.
  bool SkipValue(int depth) {
    if (depth > kMaxDepth) return false;
    SkipWs();
    if (p_ >= end_) return false;
    switch (*p_) {
      case '{':
        ++p_;
        if (Eat('}')) return true;
        do {
          if (!SkipString() || !Eat(':') || !SkipValue(depth + 1)) return false;
        } while (Eat(','));
        return Eat('}');
      case '[':
        ++p_;
        if (Eat(']')) return true;
        do {
          if (!SkipValue(depth + 1)) return false;
        } while (Eat(','));
        return Eat(']');
      case '"': return SkipString();
      case 't': return Literal("true");
      case 'f': return Literal("false");
      case 'n': return Literal("null");
      default: {
        double ignored;
        return Number(&ignored);
      }
    }
  }

  // A tensor's `data`: a number or boolean, or nested arrays of them, flattened row-major into
  // `values` (booleans as 0 and 1, noted in `sawBool`).
  bool Data(int depth, std::vector<double>& values, bool* sawBool) {
    if (depth > kMaxDepth) return false;
    SkipWs();
    if (p_ >= end_) return false;
    if (*p_ == '[') {
      ++p_;
      if (Eat(']')) return true;
      do {
        if (!Data(depth + 1, values, sawBool)) return false;
      } while (Eat(','));
      return Eat(']');
    }
    if (*p_ == 't' || *p_ == 'f') {
      const bool v = *p_ == 't';
      if (!Literal(v ? "true" : "false")) return false;
      *sawBool = true;
      values.push_back(v ? 1.0 : 0.0);
      return true;
    }
    double d;
    if (!Number(&d)) return false;
    values.push_back(d);
    return true;
  }

 private:
  static bool IsDigit(char c) { return c >= '0' && c <= '9'; }
  static bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

  const char* p_;
  const char* end_;
};

template <typename T>
void Put(unsigned char* at, T v) {
  std::memcpy(at, &v, sizeof v);
}

// An integer element of [lo, hi] stored as T; false for a fraction or a value out of range (where
// the JS path would wrap or truncate: it then handles the request itself).
template <typename T>
bool PutInteger(unsigned char* at, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi) || std::trunc(v) != v) return false;
  Put<T>(at, static_cast<T>(v));
  return true;
}

// Converts the JSON values into `elem` storage, as the JS path would store them.
bool Convert(const std::vector<double>& values, bool sawBool, Elem elem, std::vector<unsigned char>& bytes) {
  if (sawBool && elem != Elem::kBool) return false;  // the JS path refuses booleans there
  const size_t size = ElemSize(elem);
  bytes.resize(values.size() * size);
  unsigned char* at = bytes.data();
  for (double v : values) {
    bool ok = true;
    switch (elem) {
      case Elem::kFloat32: Put<float>(at, static_cast<float>(v)); break;
      case Elem::kFloat64: Put<double>(at, v); break;
      case Elem::kInt8: ok = PutInteger<int8_t>(at, v, -128, 127); break;
      case Elem::kInt16: ok = PutInteger<int16_t>(at, v, -32768, 32767); break;
      case Elem::kInt32: ok = PutInteger<int32_t>(at, v, -2147483648.0, 2147483647.0); break;
      // 2^63 itself does not fit; every double below it that is an integer does.
      case Elem::kInt64: ok = v < 9223372036854775808.0 && PutInteger<int64_t>(at, v, -9223372036854775808.0, 9223372036854775807.0); break;
      case Elem::kUint8: ok = PutInteger<uint8_t>(at, v, 0, 255); break;
      case Elem::kUint16: ok = PutInteger<uint16_t>(at, v, 0, 65535); break;
      case Elem::kUint32: ok = PutInteger<uint32_t>(at, v, 0, 4294967295.0); break;
      case Elem::kBool:
        ok = v == 0.0 || v == 1.0;
        *at = v != 0.0 ? 1 : 0;
        break;
      default: ok = false; break;  // not a codec type: specs never hold one
    }
    if (!ok) return false;
    at += size;
  }
  return true;
}

// One element of `inputs`: {"name","datatype","shape","data"}; other keys are skipped as the JS path
// ignores them, but "parameters" (binary data, which this path does not take) declines.
bool DecodeInput(Reader& r, const std::vector<InputSpec>& specs, DecodedRequest& out,
                 std::vector<bool>& seen) {
  if (!r.Eat('{')) return false;
  std::string_view name, datatype;
  bool haveName = false, haveType = false, haveShape = false, haveData = false, sawBool = false;
  std::vector<int64_t> shape;
  std::vector<double>& values = out.values;
  values.clear();
  if (!r.Eat('}')) {
    do {
      std::string_view key;
      if (!r.PlainString(&key) || !r.Eat(':')) return false;
      if (key == "name") {
        if (haveName || !r.PlainString(&name)) return false;
        haveName = true;
      } else if (key == "datatype") {
        if (haveType || !r.PlainString(&datatype)) return false;
        haveType = true;
      } else if (key == "shape") {
        if (haveShape || !r.Eat('[')) return false;
        haveShape = true;
        if (!r.Eat(']')) {
          do {
            double d;
            if (!r.Number(&d) || !(d >= 0 && d <= 9007199254740991.0) || std::trunc(d) != d) return false;
            shape.push_back(static_cast<int64_t>(d));
          } while (r.Eat(','));
          if (!r.Eat(']')) return false;
        }
      } else if (key == "data") {
        if (haveData || !r.Data(0, values, &sawBool)) return false;
        haveData = true;
      } else if (key == "parameters") {
        return false;
      } else if (!r.SkipValue(1)) {
        return false;
      }
    } while (r.Eat(','));
    if (!r.Eat('}')) return false;
  }
  if (!haveName || !haveType || !haveShape || !haveData) return false;
  const int index = MatchInput(specs, name, datatype, seen);
  if (index < 0) return false;
  const InputSpec& spec = specs[static_cast<size_t>(index)];
  if (!ShapeFits(spec, shape, values.size())) return false;
  DecodedInput& in = out.inputs[static_cast<size_t>(index)];
  in.shape = shape;
  return Convert(values, sawBool, spec.elem, in.bytes);
}

}  // namespace

int MatchInput(const std::vector<InputSpec>& specs, std::string_view name, std::string_view datatype,
               std::vector<bool>& seen) {
  size_t index = 0;
  while (index < specs.size() && specs[index].name != name) ++index;
  if (index == specs.size() || seen[index]) return -1;
  const DTypeInfo* d = DTypeByKserve(datatype);
  if (d == nullptr || d->dtype != specs[index].elem) return -1;
  seen[index] = true;
  return static_cast<int>(index);
}

bool ShapeFits(const InputSpec& spec, const std::vector<int64_t>& shape, uint64_t elements) {
  if (shape.size() != spec.dims.size()) return false;
  // The element count, saturated just past the elements given (any product beyond them is a
  // mismatch anyway), so that no shape can overflow it.
  const uint64_t cap = elements + 1;
  uint64_t product = 1;
  bool empty = false;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] < 0) return false;
    if (spec.dims[d].size >= 0 && spec.dims[d].size != shape[d]) return false;
    const uint64_t n = static_cast<uint64_t>(shape[d]);
    if (n == 0) empty = true;
    product = n >= cap ? cap : (product * n > cap ? cap : product * n);
  }
  return (empty ? 0 : product) == elements;
}

bool SymbolsAgree(const std::vector<InputSpec>& specs, const DecodedRequest& req) {
  for (size_t i = 0; i < specs.size(); ++i) {
    for (size_t d = 0; d < specs[i].dims.size(); ++d) {
      const std::string& sym = specs[i].dims[d].symbol;
      if (sym.empty() || specs[i].dims[d].size >= 0) continue;
      for (size_t j = 0; j <= i; ++j) {
        for (size_t e = 0; e < specs[j].dims.size(); ++e) {
          if (specs[j].dims[e].symbol == sym && specs[j].dims[e].size < 0 &&
              req.inputs[j].shape[e] != req.inputs[i].shape[d]) {
            return false;
          }
        }
      }
    }
  }
  return true;
}

bool DecodeInferRequest(std::string_view body, const std::vector<InputSpec>& specs, DecodedRequest& out) {
  out.inputs.resize(specs.size());
  out.hasId = false;
  out.id.clear();
  std::vector<bool> seen(specs.size(), false);
  Reader r(body);
  if (!r.Eat('{')) return false;
  bool haveInputs = false;
  if (!r.Eat('}')) {
    do {
      std::string_view key;
      if (!r.PlainString(&key) || !r.Eat(':')) return false;
      if (key == "inputs") {
        if (haveInputs || !r.Eat('[')) return false;
        haveInputs = true;
        if (!r.Eat(']')) {
          do {
            if (!DecodeInput(r, specs, out, seen)) return false;
          } while (r.Eat(','));
          if (!r.Eat(']')) return false;
        }
      } else if (key == "id") {
        if (out.hasId) return false;
        if (r.Peek('"')) {
          std::string_view id;
          if (!r.PlainString(&id)) return false;
          out.id.assign(id.data(), id.size());
          out.hasId = true;
        } else if (!r.SkipValue(1)) {  // a non-string id is ignored, as the JS path ignores it
          return false;
        }
      } else if (key == "outputs" || key == "parameters") {
        return false;  // output selection, binary outputs, priority, timeout: the general path's
      } else if (!r.SkipValue(1)) {
        return false;
      }
    } while (r.Eat(','));
    if (!r.Eat('}')) return false;
  }
  if (!r.AtEnd() || !haveInputs) return false;
  for (bool s : seen) {
    if (!s) return false;
  }
  return SymbolsAgree(specs, out);
}

void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

void AppendJsNumber(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  if (v == 0) {  // and -0, which JS writes as 0
    out += '0';
    return;
  }
  // The shortest round-trip digits, then laid out by ECMAScript's Number::toString rules: with k
  // digits and the value = 0.d1...dk x 10^n.
  char buf[40];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const char* p = buf;
  if (*p == '-') {
    out += '-';
    ++p;
  }
  char digits[24];
  int k = 0;
  for (; p < r.ptr && *p != 'e'; ++p) {
    if (*p != '.') digits[k++] = *p;
  }
  ++p;  // 'e'
  bool negativeExp = false;
  if (p < r.ptr && (*p == '+' || *p == '-')) negativeExp = *p++ == '-';
  int exp = 0;
  for (; p < r.ptr; ++p) exp = exp * 10 + (*p - '0');
  const int n = (negativeExp ? -exp : exp) + 1;
  if (k <= n && n <= 21) {
    out.append(digits, static_cast<size_t>(k));
    out.append(static_cast<size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out.append(digits, static_cast<size_t>(n));
    out += '.';
    out.append(digits + n, static_cast<size_t>(k - n));
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-n), '0');
    out.append(digits, static_cast<size_t>(k));
  } else {
    out += digits[0];
    if (k > 1) {
      out += '.';
      out.append(digits + 1, static_cast<size_t>(k - 1));
    }
    out += 'e';
    out += n - 1 < 0 ? '-' : '+';
    out += std::to_string(std::abs(n - 1));
  }
}

namespace {

template <typename T>
T Get(const unsigned char* at) {
  T v;
  std::memcpy(&v, at, sizeof v);
  return v;
}

void AppendInteger(std::string& out, int64_t v) {
  char buf[24];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<size_t>(r.ptr - buf));
}

void AppendElements(std::string& out, const OutputView& o) {
  const auto* at = static_cast<const unsigned char*>(o.data);
  const size_t size = ElemSize(o.elem);
  for (size_t i = 0; i < o.count; ++i, at += size) {
    if (i > 0) out += ',';
    switch (o.elem) {
      case Elem::kFloat32: AppendJsNumber(out, static_cast<double>(Get<float>(at))); break;
      case Elem::kFloat64: AppendJsNumber(out, Get<double>(at)); break;
      case Elem::kInt8: AppendInteger(out, Get<int8_t>(at)); break;
      case Elem::kInt16: AppendInteger(out, Get<int16_t>(at)); break;
      case Elem::kInt32: AppendInteger(out, Get<int32_t>(at)); break;
      case Elem::kUint8: AppendInteger(out, Get<uint8_t>(at)); break;
      case Elem::kUint16: AppendInteger(out, Get<uint16_t>(at)); break;
      case Elem::kUint32: AppendInteger(out, Get<uint32_t>(at)); break;
      case Elem::kInt64: {
        // As the JS path: a number when it is a safe integer, else its decimal string.
        const int64_t v = Get<int64_t>(at);
        const bool safe = v <= 9007199254740991LL && v >= -9007199254740991LL;
        if (!safe) out += '"';
        AppendInteger(out, v);
        if (!safe) out += '"';
        break;
      }
      case Elem::kBool: out += *at != 0 ? "true" : "false"; break;
      default: break;  // not a codec type: outputs never hold one
    }
  }
}

}  // namespace

void EncodeInferResponse(std::string& out, std::string_view modelName, std::string_view modelVersion,
                         const DecodedRequest& request, const OutputView* outputs, size_t count) {
  out += "{\"model_name\":";
  AppendJsonString(out, modelName);
  out += ",\"model_version\":";
  AppendJsonString(out, modelVersion);
  if (request.hasId) {
    out += ",\"id\":";
    AppendJsonString(out, request.id);
  }
  out += ",\"outputs\":[";
  for (size_t i = 0; i < count; ++i) {
    const OutputView& o = outputs[i];
    if (i > 0) out += ',';
    out += "{\"name\":";
    AppendJsonString(out, o.name);
    out += ",\"datatype\":\"";
    out += DatatypeName(o.elem);
    out += "\",\"shape\":[";
    for (size_t d = 0; d < o.rank; ++d) {
      if (d > 0) out += ',';
      AppendInteger(out, o.shape[d]);
    }
    out += "],\"data\":[";
    AppendElements(out, o);
    out += "]}";
  }
  out += "]}";
}

}  // namespace mlos::kserve
