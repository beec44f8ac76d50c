// The KServe v2 gRPC codec of the fast path (kserve_grpc.h), on the protobuf wire format:
// every field is a varint key (field number << 3 | wire type) followed by a varint (type 0), 8
// bytes (type 1), a varint length and that many bytes (type 2: strings, bytes, messages, packed
// repeated scalars) or 4 bytes (type 5). The reader checks every length against what is left.
#include "ort/kserve_grpc.h"

#include <cstring>

namespace mlos::kserve {

namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

class ProtoReader {
 public:
  explicit ProtoReader(std::string_view s) : p_(reinterpret_cast<const unsigned char*>(s.data())), end_(p_ + s.size()) {}

  bool AtEnd() const { return p_ == end_; }

  bool Varint(uint64_t* v) {
    uint64_t out = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return false;
      const unsigned char b = *p_++;
      out |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        *v = out;
        return true;
      }
    }
    return false;  // more than ten bytes
  }

  // The next field's number and wire type.
  bool Key(uint32_t* field, uint32_t* type) {
    uint64_t k;
    if (!Varint(&k) || (k >> 3) == 0 || (k >> 3) > 0x1fffffff) return false;
    *field = static_cast<uint32_t>(k >> 3);
    *type = static_cast<uint32_t>(k & 7);
    return true;
  }

  // A length-delimited field's bytes.
  bool Bytes(std::string_view* out) {
    uint64_t n;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return false;
    *out = std::string_view(reinterpret_cast<const char*>(p_), static_cast<size_t>(n));
    p_ += n;
    return true;
  }

 private:
  const unsigned char* p_;
  const unsigned char* end_;
};

// Shapes and dimensions as the general path takes them: non-negative and within 2^53 - 1
// (Number.isSafeInteger of the decimal string protobufjs gives).
bool DimensionFits(uint64_t v) { return v <= 9007199254740991ull; }

// An InferInputTensor message: name (1), datatype (2), shape (3, packed or not); parameters (4) and
// contents (5) decline, as do unknown fields.
bool DecodeTensor(std::string_view message, std::string_view* name, std::string_view* datatype, std::vector<int64_t>& shape) {
  ProtoReader r(message);
  shape.clear();
  *name = {};
  *datatype = {};
  while (!r.AtEnd()) {
    uint32_t field, type;
    if (!r.Key(&field, &type)) return false;
    if (field == 1 && type == kLengthDelimited) {
      if (!r.Bytes(name)) return false;  // (the last one counts, as in any protobuf decoder)
    } else if (field == 2 && type == kLengthDelimited) {
      if (!r.Bytes(datatype)) return false;
    } else if (field == 3 && type == kLengthDelimited) {
      std::string_view packed;
      if (!r.Bytes(&packed)) return false;
      ProtoReader dims(packed);
      while (!dims.AtEnd()) {
        uint64_t d;
        if (!dims.Varint(&d) || !DimensionFits(d)) return false;
        shape.push_back(static_cast<int64_t>(d));
      }
    } else if (field == 3 && type == kVarint) {
      uint64_t d;
      if (!r.Varint(&d) || !DimensionFits(d)) return false;
      shape.push_back(static_cast<int64_t>(d));
    } else {
      return false;
    }
  }
  return true;
}

bool PlainAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void PutKey(std::string& out, uint32_t field, WireType type) { PutVarint(out, (static_cast<uint64_t>(field) << 3) | type); }

void PutBytes(std::string& out, uint32_t field, const void* data, size_t size) {
  PutKey(out, field, kLengthDelimited);
  PutVarint(out, size);
  out.append(static_cast<const char*>(data), size);
}

void PutString(std::string& out, uint32_t field, std::string_view s) { PutBytes(out, field, s.data(), s.size()); }

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

}  // namespace

bool DecodeModelInferRequest(std::string_view body, const std::vector<InputSpec>& specs, DecodedRequest& out) {
  out.inputs.resize(specs.size());
  out.hasId = true;  // the general path always answers an id, "" when none came
  out.id.clear();
  std::vector<std::string_view>& tensors = out.tensorMessages;
  std::vector<std::string_view>& raws = out.rawContents;
  tensors.clear();
  raws.clear();
  ProtoReader r(body);
  while (!r.AtEnd()) {
    uint32_t field, type;
    if (!r.Key(&field, &type)) return false;
    if (type != kLengthDelimited) return false;  // every field this codec takes is length-delimited
    std::string_view value;
    if (!r.Bytes(&value)) return false;
    switch (field) {
      case 1:  // model_name
      case 2:  // model_version: the caller routed the request by them
        break;
      case 3:  // id
        if (!PlainAscii(value)) return false;
        out.id.assign(value.data(), value.size());
        break;
      case 5:  // inputs
        tensors.push_back(value);
        break;
      case 7:  // raw_input_contents
        raws.push_back(value);
        break;
      default:  // parameters (4), outputs (6), anything unknown: the general path's
        return false;
    }
  }
  if (tensors.size() != specs.size() || raws.size() != tensors.size()) return false;
  std::vector<bool> seen(specs.size(), false);
  std::vector<int64_t> shape;
  for (size_t t = 0; t < tensors.size(); ++t) {
    std::string_view name, datatype;
    if (!DecodeTensor(tensors[t], &name, &datatype, shape)) return false;
    const int index = MatchInput(specs, name, datatype, seen);
    if (index < 0) return false;
    const InputSpec& spec = specs[static_cast<size_t>(index)];
    const size_t size = ElemSize(spec.elem);
    const std::string_view raw = raws[t];
    if (raw.size() % size != 0 || !ShapeFits(spec, shape, raw.size() / size)) return false;
    DecodedInput& in = out.inputs[static_cast<size_t>(index)];
    in.shape = shape;
    in.bytes.assign(raw.begin(), raw.end());
  }
  return SymbolsAgree(specs, out);
}

void EncodeModelInferResponse(std::string& out, std::string_view modelName, std::string_view modelVersion,
                              const DecodedRequest& request, const OutputView* outputs, size_t count) {
  PutString(out, 1, modelName);
  PutString(out, 2, modelVersion);
  PutString(out, 3, request.hasId ? std::string_view(request.id) : std::string_view());
  for (size_t i = 0; i < count; ++i) {
    const OutputView& o = outputs[i];
    const std::string_view datatype = DatatypeName(o.elem);
    size_t shapeBytes = 0;
    for (size_t d = 0; d < o.rank; ++d) shapeBytes += VarintSize(static_cast<uint64_t>(o.shape[d]));
    size_t tensorBytes = 1 + VarintSize(o.name.size()) + o.name.size() + 1 + VarintSize(datatype.size()) + datatype.size();
    if (o.rank > 0) tensorBytes += 1 + VarintSize(shapeBytes) + shapeBytes;
    PutKey(out, 5, kLengthDelimited);
    PutVarint(out, tensorBytes);
    PutString(out, 1, o.name);
    PutString(out, 2, datatype);
    if (o.rank > 0) {
      PutKey(out, 3, kLengthDelimited);
      PutVarint(out, shapeBytes);
      for (size_t d = 0; d < o.rank; ++d) PutVarint(out, static_cast<uint64_t>(o.shape[d]));
    }
  }
  for (size_t i = 0; i < count; ++i) PutBytes(out, 6, outputs[i].data, outputs[i].count * ElemSize(outputs[i].elem));
}

}  // namespace mlos::kserve
