// The CUDA allocators' JS surface; see cuda_alloc_binding.h.
#include "cuda/cuda_alloc_binding.h"

#include <climits>
#include <cmath>
#include <string>

#include "common/errors.h"
#include "pool/shm_pool_binding.h"  // BufferSpan

namespace mlos {

namespace {

// Type tags (napi_type_tag_object) of the objects this file makes.
constexpr napi_type_tag kDeviceAllocatorTag = {0x6d6c6f73'63756461ULL, 0x2a81d7c3'b04e6f15ULL};
constexpr napi_type_tag kPinnedAllocatorTag = {0x6d6c6f73'70696e6eULL, 0x5c39e2a4'71bd0c88ULL};
constexpr napi_type_tag kDeviceBufferTag = {0x6d6c6f73'64627566ULL, 0x93f0b61e'4d27a5c9ULL};

constexpr uint64_t kMaxSafeInteger = (uint64_t{1} << 53) - 1;

// What a CudaDeviceBuffer holds (napi_wrap): the allocator (alive while the buffer is) and its
// block, returned to the cache when the buffer is collected.
struct DeviceBufferRef {
  std::shared_ptr<CudaDeviceAllocator> alloc;
  CudaBlock block;
};

// What an ArrayBuffer from PinnedHostAllocator.alloc holds.
struct PinnedRef {
  std::shared_ptr<PinnedHostAllocator> alloc;
  CudaBlock block;
};

void FinalizeDeviceBuffer(napi_env /*env*/, void* data, void* /*hint*/) {
  auto* ref = static_cast<DeviceBufferRef*>(data);
  ref->alloc->Free(ref->block);  // a no-op when free() came first (the id no longer matches)
  delete ref;
}

void FinalizePinned(Napi::Env env, void* /*data*/, PinnedRef* ref) {
  ref->alloc->Free(ref->block);
  Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(ref->block.size));
  delete ref;
}

// Throws for a status that is not ok: BAD_ARGUMENT as a RangeError, the rest with their code.
void ThrowIfError(Napi::Env env, const char* what, const CudaStatus& st) {
  if (st.ok()) return;
  const std::string message = std::string(what) + ": " + st.message;
  if (st.code == CudaErrc::kBadArgument) MLOS_THROW_RANGE(env, message);
  MLOS_THROW_CODE(env, CudaErrcCode(st.code), message);
}

// A JS number that is a non-negative integer no larger than `max`.
uint64_t ToIndex(Napi::Env env, Napi::Value v, const std::string& what, uint64_t max) {
  MLOS_REQUIRE_TYPE(v.IsNumber(), env, what + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  MLOS_REQUIRE_RANGE(std::isfinite(d) && d >= 0 && std::floor(d) == d &&
                         d <= static_cast<double>(max),
                     env,
                     what + " must be an integer from 0 to " + std::to_string(max) + ", got " +
                         v.ToString().Utf8Value());
  return static_cast<uint64_t>(d);
}

// { limitBytes? } (undefined allowed).
CudaAllocatorOptions ToOptions(Napi::Env env, Napi::Value v, const char* ctor) {
  CudaAllocatorOptions o;
  if (v.IsUndefined()) return o;
  MLOS_REQUIRE_TYPE(v.IsObject(), env,
                    std::string(ctor) + ": options must be an object { limitBytes? }");
  Napi::Value limit = v.As<Napi::Object>().Get("limitBytes");
  if (!limit.IsUndefined()) o.limitBytes = ToIndex(env, limit, "options.limitBytes", kMaxSafeInteger);
  return o;
}

Napi::Object StatsObject(Napi::Env env, const CudaAllocatorStats& s) {
  Napi::Object o = Napi::Object::New(env);
  auto num = [&](const char* k, uint64_t v) {
    o.Set(k, Napi::Number::New(env, static_cast<double>(v)));
  };
  num("allocatedBytes", s.allocatedBytes);
  num("requestedBytes", s.requestedBytes);
  num("cachedBytes", s.cachedBytes);
  num("reservedBytes", s.reservedBytes);
  num("peakAllocatedBytes", s.peakAllocatedBytes);
  num("peakReservedBytes", s.peakReservedBytes);
  num("liveBlocks", s.liveBlocks);
  num("cachedBlocks", s.cachedBlocks);
  num("allocCount", s.allocCount);
  num("freeCount", s.freeCount);
  num("cacheHits", s.cacheHits);
  num("cacheMisses", s.cacheMisses);
  num("backendAllocs", s.backendAllocs);
  num("backendFrees", s.backendFrees);
  num("oomCount", s.oomCount);
  num("limitBytes", s.limitBytes);
  return o;
}

// The DeviceBufferRef behind a CudaDeviceBuffer; a TypeError for anything else.
DeviceBufferRef* DeviceBufferOf(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kDeviceBufferTag)) {
    MLOS_THROW_TYPE(env, std::string(what) +
                             ": expected a device buffer from CudaDeviceAllocator.alloc()");
  }
  void* data = nullptr;
  if (napi_unwrap(env, v, &data) != napi_ok || data == nullptr) {
    MLOS_THROW_TYPE(env, std::string(what) + ": the device buffer has no native block");
  }
  return static_cast<DeviceBufferRef*>(data);
}

// The ArrayBuffer behind an ArrayBuffer or view.
Napi::ArrayBuffer BackingArrayBuffer(Napi::Env env, Napi::Value v, const char* what) {
  if (v.IsArrayBuffer()) return v.As<Napi::ArrayBuffer>();
  if (v.IsTypedArray()) return v.As<Napi::TypedArray>().ArrayBuffer();
  if (v.IsDataView()) return v.As<Napi::DataView>().ArrayBuffer();
  MLOS_THROW_TYPE(env, std::string(what) + ": expected an ArrayBuffer, a typed array or a DataView");
}

constexpr auto kMethod = static_cast<napi_property_attributes>(napi_writable | napi_configurable);

Napi::PropertyDescriptor Method(Napi::Env env, const char* name, Napi::Function::Callback cb) {
  return Napi::PropertyDescriptor::Value(name, Napi::Function::New(env, cb, name), kMethod);
}

Napi::Value CudaInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const mlos::CudaInfo ci = CudaRuntime::Query(/*withFreeMemory=*/true);
  Napi::Object o = Napi::Object::New(env);
  o.Set("compiled", Napi::Boolean::New(env, ci.compiled));
  o.Set("available", Napi::Boolean::New(env, ci.available));
  if (!ci.available) o.Set("reason", Napi::String::New(env, ci.reason));
  o.Set("deviceCount", Napi::Number::New(env, ci.deviceCount));
  Napi::Array devices = Napi::Array::New(env, ci.devices.size());
  for (size_t i = 0; i < ci.devices.size(); ++i) {
    const CudaDeviceInfo& d = ci.devices[i];
    Napi::Object dev = Napi::Object::New(env);
    dev.Set("index", Napi::Number::New(env, d.index));
    dev.Set("name", Napi::String::New(env, d.name));
    dev.Set("totalMemory", Napi::Number::New(env, static_cast<double>(d.totalMemory)));
    dev.Set("freeMemory", d.freeMemory >= 0
                              ? Napi::Value(Napi::Number::New(env, static_cast<double>(d.freeMemory)))
                              : env.Null());
    dev.Set("computeCapability", Napi::String::New(env, d.ComputeCapability()));
    devices.Set(static_cast<uint32_t>(i), dev);
  }
  o.Set("devices", devices);
  o.Set("runtimeVersion", Napi::Number::New(env, ci.runtimeVersion));
  o.Set("driverVersion", Napi::Number::New(env, ci.driverVersion));
  if (ci.errorNumber != 0) {
    o.Set("errorName", Napi::String::New(env, ci.errorName));
    o.Set("errorNumber", Napi::Number::New(env, ci.errorNumber));
  }
  return o;
}

}  // namespace

void InitCudaAlloc(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfoJs, "cudaInfo"));
  CudaDeviceAllocatorWrap::Init(env, exports);
  PinnedHostAllocatorWrap::Init(env, exports);
}

// ---- CudaDeviceAllocator ------------------------------------------------------------------------

void CudaDeviceAllocatorWrap::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "CudaDeviceAllocator",
                                    {StaticMethod("roundSize", &CudaDeviceAllocatorWrap::RoundSize)});
  // As ShmPoolWrap: prototype methods are plain functions that check the receiver's tag first.
  ctor.Get("prototype").As<Napi::Object>().DefineProperties({
      Method(env, "alloc", Checked<&CudaDeviceAllocatorWrap::Alloc>),
      Method(env, "free", Checked<&CudaDeviceAllocatorWrap::Free>),
      Method(env, "copyToDevice", Checked<&CudaDeviceAllocatorWrap::CopyToDevice>),
      Method(env, "copyFromDevice", Checked<&CudaDeviceAllocatorWrap::CopyFromDevice>),
      Method(env, "emptyCache", Checked<&CudaDeviceAllocatorWrap::EmptyCache>),
      Method(env, "stats", Checked<&CudaDeviceAllocatorWrap::Stats>),
  });
  exports.Set("CudaDeviceAllocator", ctor);
}

CudaDeviceAllocatorWrap* CudaDeviceAllocatorWrap::FromReceiver(const Napi::CallbackInfo& info) {
  Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(&kDeviceAllocatorTag)) {
    MLOS_THROW_TYPE(info.Env(),
                    "CudaDeviceAllocator method called on an object that is not a CudaDeviceAllocator");
  }
  return Unwrap(self.As<Napi::Object>());
}

CudaDeviceAllocatorWrap::CudaDeviceAllocatorWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<CudaDeviceAllocatorWrap>(info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info.IsConstructCall(), env, "CudaDeviceAllocator must be called with new");
  int device = 0;
  if (!info[0].IsUndefined()) device = static_cast<int>(ToIndex(env, info[0], "device", INT_MAX));
  const CudaAllocatorOptions options = ToOptions(env, info[1], "new CudaDeviceAllocator(device, options)");
  ThrowIfError(env, "CudaDeviceAllocator", CudaDeviceAllocator::Create(device, options, &alloc_));
  Napi::Object self = info.This().As<Napi::Object>();
  self.TypeTag(&kDeviceAllocatorTag);
  self.DefineProperties({
      Napi::PropertyDescriptor::Value("device", Napi::Number::New(env, device), napi_enumerable),
      Napi::PropertyDescriptor::Value(
          "limitBytes", Napi::Number::New(env, static_cast<double>(alloc_->limitBytes())),
          napi_enumerable),
  });
}

Napi::Value CudaDeviceAllocatorWrap::RoundSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint64_t bytes = ToIndex(env, info[0], "bytes", kMaxSafeInteger);
  return Napi::Number::New(env, static_cast<double>(CachingAllocator::RoundSize(bytes)));
}

Napi::Value CudaDeviceAllocatorWrap::Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint64_t bytes = ToIndex(env, info[0], "bytes", kMaxSafeInteger);
  MLOS_REQUIRE_RANGE(bytes > 0, env, "bytes must be > 0");
  CudaBlock block;
  ThrowIfError(env, "CudaDeviceAllocator.alloc", alloc_->Alloc(bytes, &block));
  auto* ref = new DeviceBufferRef{alloc_, block};
  Napi::Object obj;
  try {
    obj = Napi::Object::New(env);
    obj.TypeTag(&kDeviceBufferTag);
    obj.DefineProperties({
        Napi::PropertyDescriptor::Value(
            "address",
            Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(block.ptr))),
            napi_enumerable),
        Napi::PropertyDescriptor::Value(
            "byteLength", Napi::Number::New(env, static_cast<double>(block.requested)), napi_enumerable),
        Napi::PropertyDescriptor::Value(
            "size", Napi::Number::New(env, static_cast<double>(block.size)), napi_enumerable),
        Napi::PropertyDescriptor::Value("device", Napi::Number::New(env, alloc_->device()),
                                        napi_enumerable),
    });
    NAPI_THROW_IF_FAILED(env, napi_wrap(env, obj, ref, FinalizeDeviceBuffer, nullptr, nullptr),
                         Napi::Value());
  } catch (...) {
    alloc_->Free(block);
    delete ref;
    throw;
  }
  obj.Freeze();
  return obj;
}

Napi::Value CudaDeviceAllocatorWrap::Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceBufferRef* ref = DeviceBufferOf(env, info[0], "CudaDeviceAllocator.free");
  MLOS_REQUIRE_RANGE(ref->alloc == alloc_, env,
                     "CudaDeviceAllocator.free: the buffer belongs to another allocator");
  ThrowIfError(env, "CudaDeviceAllocator.free", alloc_->Free(ref->block));
  return env.Undefined();
}

Napi::Value CudaDeviceAllocatorWrap::CopyToDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceBufferRef* ref = DeviceBufferOf(env, info[0], "CudaDeviceAllocator.copyToDevice");
  MLOS_REQUIRE_RANGE(ref->alloc == alloc_, env,
                     "CudaDeviceAllocator.copyToDevice: the buffer belongs to another allocator");
  uint8_t* data = nullptr;
  size_t length = 0;
  BufferSpan(env, info[1], &data, &length);
  const uint64_t offset =
      info[2].IsUndefined() ? 0 : ToIndex(env, info[2], "offset", kMaxSafeInteger);
  ThrowIfError(env, "CudaDeviceAllocator.copyToDevice",
               alloc_->CopyToDevice(ref->block, offset, data, length));
  return env.Undefined();
}

Napi::Value CudaDeviceAllocatorWrap::CopyFromDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceBufferRef* ref = DeviceBufferOf(env, info[0], "CudaDeviceAllocator.copyFromDevice");
  MLOS_REQUIRE_RANGE(ref->alloc == alloc_, env,
                     "CudaDeviceAllocator.copyFromDevice: the buffer belongs to another allocator");
  uint8_t* data = nullptr;
  size_t length = 0;
  BufferSpan(env, info[1], &data, &length);
  const uint64_t offset =
      info[2].IsUndefined() ? 0 : ToIndex(env, info[2], "offset", kMaxSafeInteger);
  ThrowIfError(env, "CudaDeviceAllocator.copyFromDevice",
               alloc_->CopyFromDevice(ref->block, offset, data, length));
  return env.Undefined();
}

Napi::Value CudaDeviceAllocatorWrap::EmptyCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t released = 0;
  ThrowIfError(env, "CudaDeviceAllocator.emptyCache", alloc_->EmptyCache(&released));
  return Napi::Number::New(env, static_cast<double>(released));
}

Napi::Value CudaDeviceAllocatorWrap::Stats(const Napi::CallbackInfo& info) {
  return StatsObject(info.Env(), alloc_->Stats());
}

// ---- PinnedHostAllocator ------------------------------------------------------------------------

void PinnedHostAllocatorWrap::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "PinnedHostAllocator", {});
  ctor.Get("prototype").As<Napi::Object>().DefineProperties({
      Method(env, "alloc", Checked<&PinnedHostAllocatorWrap::Alloc>),
      Method(env, "free", Checked<&PinnedHostAllocatorWrap::Free>),
      Method(env, "emptyCache", Checked<&PinnedHostAllocatorWrap::EmptyCache>),
      Method(env, "stats", Checked<&PinnedHostAllocatorWrap::Stats>),
  });
  exports.Set("PinnedHostAllocator", ctor);
}

PinnedHostAllocatorWrap* PinnedHostAllocatorWrap::FromReceiver(const Napi::CallbackInfo& info) {
  Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(&kPinnedAllocatorTag)) {
    MLOS_THROW_TYPE(info.Env(),
                    "PinnedHostAllocator method called on an object that is not a PinnedHostAllocator");
  }
  return Unwrap(self.As<Napi::Object>());
}

PinnedHostAllocatorWrap::PinnedHostAllocatorWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<PinnedHostAllocatorWrap>(info) {
  Napi::Env env = info.Env();
  MLOS_REQUIRE_TYPE(info.IsConstructCall(), env, "PinnedHostAllocator must be called with new");
  const CudaAllocatorOptions options = ToOptions(env, info[0], "new PinnedHostAllocator(options)");
  ThrowIfError(env, "PinnedHostAllocator", PinnedHostAllocator::Create(options, &alloc_));
  Napi::Object self = info.This().As<Napi::Object>();
  self.TypeTag(&kPinnedAllocatorTag);
  self.DefineProperties({
      Napi::PropertyDescriptor::Value(
          "limitBytes", Napi::Number::New(env, static_cast<double>(alloc_->limitBytes())),
          napi_enumerable),
  });
}

Napi::Value PinnedHostAllocatorWrap::Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint64_t bytes = ToIndex(env, info[0], "bytes", kMaxSafeInteger);
  MLOS_REQUIRE_RANGE(bytes > 0, env, "bytes must be > 0");
  CudaBlock block;
  ThrowIfError(env, "PinnedHostAllocator.alloc", alloc_->Alloc(bytes, &block));
  auto* ref = new PinnedRef{alloc_, block};
  Napi::ArrayBuffer ab;
  try {
    ab = Napi::ArrayBuffer::New(env, block.ptr, static_cast<size_t>(bytes), FinalizePinned, ref);
  } catch (...) {
    alloc_->Free(block);
    delete ref;
    throw;
  }
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(block.size));
  return ab;
}

Napi::Value PinnedHostAllocatorWrap::Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer ab = BackingArrayBuffer(env, info[0], "PinnedHostAllocator.free");
  MLOS_REQUIRE_TYPE(!ab.IsDetached(), env,
                    "PinnedHostAllocator.free: the ArrayBuffer is detached (already freed?)");
  CudaBlock block;
  MLOS_REQUIRE_RANGE(alloc_->Lookup(ab.Data(), &block) && ab.ByteLength() <= block.requested, env,
                     "PinnedHostAllocator.free: the buffer is not a live allocation of this allocator");
  ThrowIfError(env, "PinnedHostAllocator.free", alloc_->Free(block));
  // The finaliser will find the block gone and only adjust the external memory count.
  ab.Detach();
  return env.Undefined();
}

Napi::Value PinnedHostAllocatorWrap::EmptyCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t released = 0;
  ThrowIfError(env, "PinnedHostAllocator.emptyCache", alloc_->EmptyCache(&released));
  return Napi::Number::New(env, static_cast<double>(released));
}

Napi::Value PinnedHostAllocatorWrap::Stats(const Napi::CallbackInfo& info) {
  return StatsObject(info.Env(), alloc_->Stats());
}

}  // namespace mlos
