// The ShmPool JS class: a node-addon-api wrapper over mlos::ShmPool (shm_pool.h).
//
//   new ShmPool({ size, name?, reserve? })  creates a segment (stale ones of dead processes are
//                                           removed first)
//   ShmPool.attach(name)                    maps an existing segment (a view: no alloc)
//   ShmPool.cleanupStale() -> number        unlinks /dev/shm/mlos-<deadpid>-*
//   .name .size .attached                   read-only own properties
//   .alloc(bytes) -> ArrayBuffer            an external ArrayBuffer over the slice (zero copy) of
//                                           byteLength `bytes`; its finaliser returns the slice
//   .free(buffer | view)                    returns the slice now and detaches the ArrayBuffer
//   .offsetOf(buffer | view) -> number      offset of the data in the segment
//   .view(offset, length) -> ArrayBuffer    an external ArrayBuffer over any range (no ownership)
//   .stats() -> object                      see ShmStats in shm_pool.h
//   .close()                                unlinks the name (owner) and stops allocation; the
//                                           mapping stays until the last ArrayBuffer over it is
//                                           collected, so no JS view can touch unmapped memory
//
// Slices are reference-counted: each ArrayBuffer holds the pool (std::shared_ptr) until its
// finaliser runs, so a finaliser never sees an unmapped pool, whatever the order of shutdown.
#pragma once

#include <napi.h>

#include <memory>

#include "common/addon.h"
#include "pool/shm_pool.h"

namespace mlos {

class ShmPoolWrap : public Napi::ObjectWrap<ShmPoolWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, AddonData* data);
  explicit ShmPoolWrap(const Napi::CallbackInfo& info);

  // The ShmPoolWrap behind a receiver, after checking its type tag; throws a TypeError with code
  // BAD_ARGUMENT for anything else.
  static ShmPoolWrap* FromReceiver(const Napi::CallbackInfo& info);

 private:
  template <Napi::Value (ShmPoolWrap::*Method)(const Napi::CallbackInfo&)>
  static Napi::Value Checked(const Napi::CallbackInfo& info) {
    return (FromReceiver(info)->*Method)(info);
  }

  static Napi::Value Attach(const Napi::CallbackInfo& info);
  static Napi::Value CleanupStale(const Napi::CallbackInfo& info);

  Napi::Value Alloc(const Napi::CallbackInfo& info);
  Napi::Value Free(const Napi::CallbackInfo& info);
  Napi::Value OffsetOf(const Napi::CallbackInfo& info);
  Napi::Value View(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value IsClosed(const Napi::CallbackInfo& info);

  // The open pool, or throws CLOSED.
  ShmPool& Open(Napi::Env env);

  std::shared_ptr<ShmPool> pool_;
  std::string name_;
};

// Data pointer of an ArrayBuffer or ArrayBufferView (byteOffset applied), and its byte length.
// Throws BAD_ARGUMENT for anything else.
void BufferSpan(Napi::Env env, Napi::Value value, uint8_t** data, size_t* length);

// addressOf(arrayBufferOrView) -> bigint
Napi::Value AddressOf(const Napi::CallbackInfo& info);

}  // namespace mlos
