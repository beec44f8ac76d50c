import { homedir } from "node:os";
import path from "node:path";

/**
 * Where everything Axon keeps lives. `AXON_HOME` (default `~/.axon`):
 *
 * ```
 * config.yaml            settings (registries, defaults)
 * credentials.json       registry credentials, mode 0600
 * store/                 the local store: an OCI image layout, the default registry
 *   oci-layout, index.json
 *   blobs/sha256/<hex>   the content-addressed cache, shared by every model and version
 * models/NS/NAME/VER/    installed views: folders of hard links into store/blobs
 * installs/NS/NAME/VER.json  one record per installed model (digest, files, last use)
 * tmp/                   partial downloads (<hex>.partial, resumable) and views being built
 * locks/                 cross-process locks
 * ```
 */
export class AxonPaths {
  readonly home: string;

  constructor(home?: string) {
    this.home = path.resolve(home ?? process.env.AXON_HOME ?? path.join(homedir(), ".axon"));
  }

  get config(): string {
    return path.join(this.home, "config.yaml");
  }
  get credentials(): string {
    return path.join(this.home, "credentials.json");
  }
  get store(): string {
    return path.join(this.home, "store");
  }
  get blobs(): string {
    return path.join(this.store, "blobs", "sha256");
  }
  blob(digest: string): string {
    return path.join(this.blobs, hexOf(digest));
  }
  get models(): string {
    return path.join(this.home, "models");
  }
  modelView(namespace: string, name: string, version: string): string {
    return path.join(this.models, namespace, name, version);
  }
  get installs(): string {
    return path.join(this.home, "installs");
  }
  installRecord(namespace: string, name: string, version: string): string {
    return path.join(this.installs, namespace, name, `${version}.json`);
  }
  get tmp(): string {
    return path.join(this.home, "tmp");
  }
  partial(digest: string): string {
    return path.join(this.tmp, `${hexOf(digest)}.partial`);
  }
  get locks(): string {
    return path.join(this.home, "locks");
  }
}

/** `sha256:<hex>` -> `<hex>`, rejecting anything that is not a sha256 digest. */
export function hexOf(digest: string): string {
  const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
  if (!m) throw new Error(`not a sha256 digest: ${digest}`);
  return m[1]!;
}
