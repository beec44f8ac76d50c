# node-gyp build of the mlos CPU core (the shared-memory pool) as build/Release/mlos_native.node.
# The CUDA allocators are compiled here without CUDA (no MLOS_WITH_CUDA): cudaInfo() reports
# "compiled without CUDA" and their constructors throw CUDA_UNAVAILABLE; cmake-js builds them with it.
# The main build is cmake-js (native/CMakeLists.txt, run by `npm install`); this file keeps the
# same core building for node-gyp users. `npm run build:gyp` builds it in build/gyp/ so that it
# does not replace cmake-js's build/; a plain `npx node-gyp rebuild` here builds into build/.
{
  "variables": {
    # Where native/ lives; scripts/build-native.js --gyp sets it to the package root when it
    # builds from build/gyp/.
    "mlos_root%": "."
  },
  "targets": [
    {
      "target_name": "mlos_native",
      "sources": [
        "<(mlos_root)/native/src/common/addon.cc",
        "<(mlos_root)/native/src/pool/shm_pool_binding.cc",
        "<(mlos_root)/native/src/pool/shm_pool.cc",
        "<(mlos_root)/native/src/ort/kserve_json.cc",
        "<(mlos_root)/native/src/ort/kserve_grpc.cc",
        "<(mlos_root)/native/src/sampling/argmax.cc",
        "<(mlos_root)/native/src/ipc/ring.cc",
        "<(mlos_root)/native/src/ipc/ipc_wire.cc",
        "<(mlos_root)/native/src/ipc/ipc_host.cc",
        "<(mlos_root)/native/src/ipc/ipc_client.cc",
        "<(mlos_root)/native/src/ipc/ipc_binding.cc",
        "<(mlos_root)/native/src/cuda/cuda_alloc_binding.cc",
        "<(mlos_root)/native/src/cuda/cuda_alloc.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<(mlos_root)/native/src",
        "<(mlos_root)/native/include"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lrt", "-lpthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
      }
    }
  ]
}
