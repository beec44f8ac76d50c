/**
 * uWebSockets.js, loaded as its native binary and never as the package's silent fallback to the
 * pure-JS `ws` server: a server that is ten times slower than it claims is a failure to report,
 * not to hide. The package on the npm registry that carries working Linux binaries is
 * `@trufflesuite/uws-js-unofficial` (a repackage of uWebSockets.js v20.30).
 */
import { createRequire } from "node:module";
import path from "node:path";
import type * as Uws from "@trufflesuite/uws-js-unofficial";
import { MlosError } from "../src/core/errors.js";

export type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from "@trufflesuite/uws-js-unofficial";

let cached: typeof Uws | undefined;

/** The native uWebSockets.js module; throws PLUGIN_UNAVAILABLE-style MlosError saying why when its binary cannot load. */
export function loadUws(): typeof Uws {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  let dir: string;
  try {
    dir = path.dirname(require.resolve("@trufflesuite/uws-js-unofficial/package.json"));
  } catch (e) {
    throw new MlosError("PLUGIN_UNAVAILABLE", "uWebSockets.js is not installed (npm install @trufflesuite/uws-js-unofficial@20.30.0-unofficial.0)", {}, { cause: e });
  }
  const binary = path.join(dir, "binaries", `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
  try {
    cached = require(binary) as typeof Uws;
  } catch (e) {
    throw new MlosError(
      "PLUGIN_UNAVAILABLE",
      `uWebSockets.js has no working native binary for ${process.platform}-${process.arch}, Node ABI ${process.versions.modules} (${binary}: ${(e as Error).message.split("\n")[0]}); mlos will not serve over its slow JS fallback`,
      {},
      { cause: e },
    );
  }
  return cached;
}
