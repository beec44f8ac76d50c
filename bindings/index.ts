// The typed bindings to the native addon(s). See native.ts.
export {
  loadNative,
  tryLoadNative,
  nativeLoadError,
  nativeCandidates,
  NativeError,
  NativeLoadError,
} from "./native.js";
export type {
  NativeAddon,
  NativeErrorCode,
  NativeShmPool,
  NativeShmPoolConstructor,
  NativeShmPoolOptions,
  NativeShmPoolStats,
} from "./native.js";
