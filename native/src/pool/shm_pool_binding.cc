// The ShmPool JS class; see shm_pool_binding.h.
#include "pool/shm_pool_binding.h"

#include <cmath>
#include <limits>

#include "common/errors.h"

namespace mlos {

namespace {

// Marks objects constructed by ShmPoolWrap (napi_type_tag_object), so that a method called on a
// forged receiver (another wrapped class, a plain object) is a TypeError and never a bad cast.
constexpr napi_type_tag kShmPoolTag = {0x6d6c6f73'73686d70ULL, 0x9f1c2b7a'5e3d4c21ULL};

// What an ArrayBuffer from alloc() holds: the pool (kept mapped while the buffer lives) and the
// slice it returns when collected.
struct SliceRef {
  std::shared_ptr<ShmPool> pool;
  ShmSlice slice;
};

// What an ArrayBuffer from view() holds: only the pool.
struct ViewRef {
  std::shared_ptr<ShmPool> pool;
};

void FinalizeSlice(Napi::Env env, void* /*data*/, SliceRef* ref) {
  // Free() fails when the slice was already freed explicitly (the id no longer matches); that
  // free gave back its share of V8's external memory count already.
  if (ref->pool->Free(ref->slice).ok()) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(ref->slice.size));
  }
  delete ref;
}

void FinalizeView(Napi::Env /*env*/, void* /*data*/, ViewRef* ref) { delete ref; }

// A JS number that is a non-negative integer no larger than `max`.
uint64_t ToIndex(Napi::Env env, Napi::Value v, const char* what, uint64_t max) {
  MLOS_REQUIRE_TYPE(v.IsNumber(), env, std::string(what) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  MLOS_REQUIRE_RANGE(std::isfinite(d) && d >= 0 && std::floor(d) == d &&
                         d <= static_cast<double>(max),
                     env,
                     std::string(what) + " must be an integer from 0 to " + std::to_string(max) +
                         ", got " + v.ToString().Utf8Value());
  return static_cast<uint64_t>(d);
}

constexpr uint64_t kMaxSafeInteger = (uint64_t{1} << 53) - 1;

// The ArrayBuffer behind an ArrayBuffer or view, and the view's start within it.
Napi::ArrayBuffer BackingBuffer(Napi::Env env, Napi::Value value, size_t* viewOffset,
                                size_t* viewLength) {
  if (value.IsArrayBuffer()) {
    auto ab = value.As<Napi::ArrayBuffer>();
    *viewOffset = 0;
    *viewLength = ab.ByteLength();
    return ab;
  }
  if (value.IsTypedArray()) {
    auto ta = value.As<Napi::TypedArray>();
    *viewOffset = ta.ByteOffset();
    *viewLength = ta.ByteLength();
    return ta.ArrayBuffer();
  }
  if (value.IsDataView()) {
    auto dv = value.As<Napi::DataView>();
    *viewOffset = dv.ByteOffset();
    *viewLength = dv.ByteLength();
    return dv.ArrayBuffer();
  }
  MLOS_THROW_TYPE(env, "expected an ArrayBuffer, a typed array or a DataView");
}

}  // namespace

void BufferSpan(Napi::Env env, Napi::Value value, uint8_t** data, size_t* length) {
  size_t off = 0, len = 0;
  Napi::ArrayBuffer ab = BackingBuffer(env, value, &off, &len);
  MLOS_REQUIRE_TYPE(!ab.IsDetached(), env, "the ArrayBuffer is detached (freed)");
  *data = static_cast<uint8_t*>(ab.Data()) + off;
  *length = len;
}

Napi::Value AddressOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* data = nullptr;
  size_t len = 0;
  BufferSpan(env, info[0], &data, &len);
  return Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data)));
}

// ---- class ------------------------------------------------------------------------------------

void ShmPoolWrap::Init(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor =
      DefineClass(env, "ShmPool",
                  {
                      StaticMethod("attach", &ShmPoolWrap::Attach),
                      StaticMethod("cleanupStale", &ShmPoolWrap::CleanupStale),
                  },
                  data);
  // Methods go on the prototype as plain functions (a template cannot hold them) that check the
  // receiver's type tag before unwrapping: ObjectWrap's own InstanceMethod would unwrap first.
  constexpr auto kMethod = static_cast<napi_property_attributes>(napi_writable | napi_configurable);
  auto method = [&](const char* name, Napi::Function::Callback cb) {
    return Napi::PropertyDescriptor::Value(name, Napi::Function::New(env, cb, name), kMethod);
  };
  ctor.Get("prototype").As<Napi::Object>().DefineProperties({
      method("alloc", Checked<&ShmPoolWrap::Alloc>),
      method("free", Checked<&ShmPoolWrap::Free>),
      method("offsetOf", Checked<&ShmPoolWrap::OffsetOf>),
      method("view", Checked<&ShmPoolWrap::View>),
      method("stats", Checked<&ShmPoolWrap::Stats>),
      method("close", Checked<&ShmPoolWrap::Close>),
      method("isClosed", Checked<&ShmPoolWrap::IsClosed>),
  });
  data->shmPoolConstructor = Napi::Persistent(ctor);
  exports.Set("ShmPool", ctor);
}

ShmPoolWrap* ShmPoolWrap::FromReceiver(const Napi::CallbackInfo& info) {
  Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(&kShmPoolTag)) {
    MLOS_THROW_TYPE(info.Env(), "ShmPool method called on an object that is not a ShmPool");
  }
  return Unwrap(self.As<Napi::Object>());
}

ShmPoolWrap::ShmPoolWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ShmPoolWrap>(info) {
  Napi::Env env = info.Env();
  AddonData* data = GetAddonData(env);
  MLOS_REQUIRE_TYPE(info.IsConstructCall(), env, "ShmPool must be called with new");
  if (data->pendingAttach) {
    pool_ = std::move(data->pendingAttach);
    data->pendingAttach.reset();
  } else {
    MLOS_REQUIRE_TYPE(info[0].IsObject(), env,
                      "new ShmPool(options): options must be an object { size, name?, reserve? }");
    Napi::Object opts = info[0].As<Napi::Object>();
    ShmCreateOptions o;
    o.size = ToIndex(env, opts.Get("size"), "options.size", kMaxSafeInteger);
    MLOS_REQUIRE_RANGE(o.size > 0, env, "options.size must be > 0");
    Napi::Value name = opts.Get("name");
    if (!name.IsUndefined()) {
      MLOS_REQUIRE_TYPE(name.IsString(), env, "options.name must be a string");
      o.name = name.As<Napi::String>().Utf8Value();
    }
    Napi::Value reserve = opts.Get("reserve");
    if (!reserve.IsUndefined()) {
      MLOS_REQUIRE_TYPE(reserve.IsBoolean(), env, "options.reserve must be a boolean");
      o.reserve = reserve.As<Napi::Boolean>().Value();
    }
    try {
      pool_ = ShmPool::Create(o);
    } catch (const ShmError& e) {
      if (e.code() == ShmErrc::kBadArgument) MLOS_THROW_RANGE(env, e.what());
      MLOS_THROW_CODE(env, ShmErrcCode(e.code()), e.what());
    }
    // Forget pools that are gone, then remember this one for the environment's cleanup hook.
    auto& pools = data->pools;
    pools.erase(std::remove_if(pools.begin(), pools.end(), [](auto& w) { return w.expired(); }),
                pools.end());
    pools.push_back(pool_);
  }
  name_ = pool_->name();
  Napi::Object self = info.This().As<Napi::Object>();
  self.TypeTag(&kShmPoolTag);
  self.DefineProperties({
      Napi::PropertyDescriptor::Value("name", Napi::String::New(env, name_), napi_enumerable),
      Napi::PropertyDescriptor::Value(
          "size", Napi::Number::New(env, static_cast<double>(pool_->capacity())), napi_enumerable),
      Napi::PropertyDescriptor::Value("attached", Napi::Boolean::New(env, !pool_->owner()),
                                      napi_enumerable),
  });
}

ShmPool& ShmPoolWrap::Open(Napi::Env env) {
  MLOS_REQUIRE(pool_ != nullptr, env, "CLOSED", "pool " + name_ + " is closed");
  return *pool_;
}

Napi::Value ShmPoolWrap::Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* data = GetAddonData(env);
  MLOS_REQUIRE_TYPE(info[0].IsString(), env, "ShmPool.attach(name): name must be a string");
  std::shared_ptr<ShmPool> pool;
  try {
    pool = ShmPool::Attach(info[0].As<Napi::String>().Utf8Value());
  } catch (const ShmError& e) {
    if (e.code() == ShmErrc::kBadArgument) MLOS_THROW_RANGE(env, e.what());
    MLOS_THROW_CODE(env, ShmErrcCode(e.code()), e.what());
  }
  data->pendingAttach = pool;
  Napi::Object obj;
  try {
    obj = data->shmPoolConstructor.New({});
  } catch (...) {
    data->pendingAttach.reset();
    throw;
  }
  return obj;
}

Napi::Value ShmPoolWrap::CleanupStale(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ShmPool::CleanupStale());
}

Napi::Value ShmPoolWrap::Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ShmPool& pool = Open(env);
  const uint64_t bytes = ToIndex(env, info[0], "bytes", kMaxSafeInteger);
  MLOS_REQUIRE_RANGE(bytes > 0, env, "bytes must be > 0");
  ShmSlice slice;
  MLOS_THROW_IF_SHM_ERROR(env, pool.Alloc(bytes, &slice));
  auto* ref = new SliceRef{pool_, slice};
  Napi::ArrayBuffer ab;
  try {
    ab = Napi::ArrayBuffer::New(env, pool.base() + slice.offset, static_cast<size_t>(bytes),
                                FinalizeSlice, ref);
  } catch (...) {
    pool.Free(slice);
    delete ref;
    throw;
  }
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(slice.size));
  return ab;
}

Napi::Value ShmPoolWrap::Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ShmPool& pool = Open(env);
  size_t viewOffset = 0, viewLength = 0;
  Napi::ArrayBuffer ab = BackingBuffer(env, info[0], &viewOffset, &viewLength);
  MLOS_REQUIRE_TYPE(!ab.IsDetached(), env, "free: the ArrayBuffer is detached (already freed?)");
  const uint8_t* data = static_cast<const uint8_t*>(ab.Data());
  const size_t length = ab.ByteLength();
  MLOS_REQUIRE_RANGE(pool.Contains(data, length), env,
                     "free: the buffer is not memory of pool " + name_);
  const uint64_t offset = static_cast<uint64_t>(data - pool.base());
  ShmSlice slice;
  MLOS_REQUIRE_RANGE(pool.Lookup(offset, &slice) && length <= slice.requested, env,
                     "free: the buffer is not a live allocation of pool " + name_);
  MLOS_THROW_IF_SHM_ERROR(env, pool.Free(slice));
  // Tell V8 at once: an explicitly freed slice no longer counts as external memory. Left to the
  // finaliser, a loop that allocates and frees (a generation engine's every step) looks to V8 like
  // ever-growing memory, and it runs full collections for nothing. The finaliser finds the slice
  // gone and adjusts nothing.
  Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(slice.size));
  ab.Detach();
  return env.Undefined();
}

Napi::Value ShmPoolWrap::OffsetOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ShmPool& pool = Open(env);
  uint8_t* data = nullptr;
  size_t length = 0;
  BufferSpan(env, info[0], &data, &length);
  MLOS_REQUIRE_RANGE(pool.Contains(data, length), env,
                     "offsetOf: the buffer is not memory of pool " + name_);
  return Napi::Number::New(env, static_cast<double>(data - pool.base()));
}

Napi::Value ShmPoolWrap::View(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ShmPool& pool = Open(env);
  const uint64_t offset = ToIndex(env, info[0], "offset", pool.capacity());
  const uint64_t length = ToIndex(env, info[1], "length", pool.capacity() - offset);
  MLOS_REQUIRE_RANGE(length > 0, env, "length must be > 0");
  auto* ref = new ViewRef{pool_};
  try {
    return Napi::ArrayBuffer::New(env, pool.base() + offset, static_cast<size_t>(length),
                                  FinalizeView, ref);
  } catch (...) {
    delete ref;
    throw;
  }
}

Napi::Value ShmPoolWrap::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ShmStats s = Open(env).Stats();
  Napi::Object o = Napi::Object::New(env);
  auto num = [&](const char* k, uint64_t v) { o.Set(k, Napi::Number::New(env, static_cast<double>(v))); };
  num("capacity", s.capacity);
  num("used", s.used);
  num("requested", s.requested);
  num("highWater", s.highWater);
  num("live", s.live);
  num("allocCount", s.allocCount);
  num("freeCount", s.freeCount);
  num("freeBytes", s.freeBytes);
  num("cachedBytes", s.cachedBytes);
  num("largestFree", s.largestFree);
  o.Set("fragmentation", Napi::Number::New(env, s.fragmentation));
  return o;
}

Napi::Value ShmPoolWrap::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (pool_) {
    ShmStatus st = pool_->Unlink();
    pool_.reset();  // unmapped once the last ArrayBuffer over it is collected
    MLOS_THROW_IF_SHM_ERROR(env, st);
  }
  return env.Undefined();
}

Napi::Value ShmPoolWrap::IsClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), pool_ == nullptr);
}

}  // namespace mlos
