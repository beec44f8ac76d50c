/**
 * Registry credentials: a provider interface, a file-backed store (`$AXON_HOME/credentials.json`,
 * mode 0600, written atomically) and the default lookup chain: environment, then the store, then
 * Docker's `config.json`.
 */
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { AxonError } from "../errors.js";

export interface Credentials {
  username?: string;
  password?: string;
  /** A registry access token used directly as `Authorization: Bearer <token>`. */
  token?: string;
}

export interface CredentialProvider {
  get(host: string): Promise<Credentials | undefined>;
}

/** `host[:port]` from a registry URL or host string, lower-cased, no scheme or path. */
export function normalizeHost(hostOrUrl: string): string {
  let s = hostOrUrl.trim();
  s = s.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
  const slash = s.indexOf("/");
  if (slash >= 0) s = s.slice(0, slash);
  return s.toLowerCase();
}

const DOCKER_HUB_ALIASES = ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

/** Host names that mean the same registry as `host` (Docker Hub has several). */
export function hostAliases(host: string): string[] {
  const h = normalizeHost(host);
  if (DOCKER_HUB_ALIASES.includes(h)) return [h, ...DOCKER_HUB_ALIASES.filter((a) => a !== h)];
  return [h];
}

/** Environment variable suffix for a host: upper-cased, non-alphanumerics as `_`. */
export function envHostSuffix(host: string): string {
  return normalizeHost(host).toUpperCase().replace(/[^A-Z0-9]/g, "_");
}

/** Decodes Docker's `auth` field (base64 of `user:password`). */
export function decodeBasicAuth(b64: string): { username: string; password: string } | undefined {
  let text: string;
  try {
    text = Buffer.from(b64.trim(), "base64").toString("utf8");
  } catch {
    return undefined;
  }
  const colon = text.indexOf(":");
  if (colon <= 0) return undefined;
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

function nonEmpty(v: string | undefined): string | undefined {
  return v !== undefined && v !== "" ? v : undefined;
}

/** Credentials from `AXON_REGISTRY_*` variables: host-specific ones first, then the generic ones. */
export class EnvCredentialProvider implements CredentialProvider {
  constructor(private readonly env: NodeJS.ProcessEnv = process.env) {}

  async get(host: string): Promise<Credentials | undefined> {
    const suffixes = [...hostAliases(host).map((h) => "_" + envHostSuffix(h)), ""];
    for (const sfx of suffixes) {
      const auth = nonEmpty(this.env[`AXON_REGISTRY_AUTH${sfx}`]);
      if (auth) {
        const dec = decodeBasicAuth(auth);
        if (dec) return dec;
      }
      const username = nonEmpty(this.env[`AXON_REGISTRY_USERNAME${sfx}`]);
      const password = nonEmpty(this.env[`AXON_REGISTRY_PASSWORD${sfx}`]);
      if (username !== undefined && password !== undefined) return { username, password };
      const token = nonEmpty(this.env[`AXON_REGISTRY_TOKEN${sfx}`]);
      if (token) return { token };
    }
    return undefined;
  }
}

interface StoreFile {
  version: 1;
  auths: Record<string, { username: string; password: string }>;
}

/** The credential file, `$AXON_HOME/credentials.json`: mode 0600, replaced atomically. */
export class CredentialStore implements CredentialProvider {
  constructor(readonly file: string) {}

  private async read(): Promise<StoreFile> {
    let text: string;
    try {
      text = await fs.readFile(this.file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, auths: {} };
      throw e;
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw new AxonError("CONFIG_INVALID", `credential file ${this.file} is not valid JSON`, { path: this.file });
    }
    const auths = (data as { auths?: unknown } | null)?.auths;
    if (!auths || typeof auths !== "object") return { version: 1, auths: {} };
    const out: StoreFile = { version: 1, auths: {} };
    for (const [host, v] of Object.entries(auths as Record<string, unknown>)) {
      const e = v as { username?: unknown; password?: unknown } | null;
      if (e && typeof e.username === "string" && typeof e.password === "string") {
        out.auths[normalizeHost(host)] = { username: e.username, password: e.password };
      }
    }
    return out;
  }

  private async write(data: StoreFile): Promise<void> {
    const dir = path.dirname(this.file);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(dir, `.${path.basename(this.file)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
    const fh = await fs.open(tmp, "wx", 0o600);
    try {
      await fh.chmod(0o600); // the umask may have narrowed the open mode, never widened: be exact
      await fh.writeFile(JSON.stringify(data, null, 2) + "\n", "utf8");
      await fh.sync();
    } catch (e) {
      await fh.close().catch(() => undefined);
      await fs.rm(tmp, { force: true });
      throw e;
    }
    await fh.close();
    try {
      await fs.rename(tmp, this.file);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw e;
    }
    await fs.chmod(this.file, 0o600);
  }

  async login(host: string, username: string, password: string): Promise<void> {
    const data = await this.read();
    data.auths[normalizeHost(host)] = { username, password };
    await this.write(data);
  }

  /** Removes a host's credentials; returns whether there were any. */
  async logout(host: string): Promise<boolean> {
    const data = await this.read();
    const h = normalizeHost(host);
    if (!(h in data.auths)) return false;
    delete data.auths[h];
    await this.write(data);
    return true;
  }

  /** Hosts and user names only, never passwords. */
  async list(): Promise<Array<{ host: string; username: string }>> {
    const data = await this.read();
    return Object.entries(data.auths)
      .map(([host, v]) => ({ host, username: v.username }))
      .sort((a, b) => a.host.localeCompare(b.host));
  }

  async get(host: string): Promise<Credentials | undefined> {
    const data = await this.read();
    for (const h of hostAliases(host)) {
      const e = data.auths[h];
      if (e) return { username: e.username, password: e.password };
    }
    return undefined;
  }
}

/**
 * Docker's `config.json` (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`): `auths[host]`
 * with `auth` (base64 user:password) or `username`/`password`; keys may carry `https://` and a path
 * (`https://index.docker.io/v1/`). Credential helpers are used as Docker uses them: a registry's
 * `credHelpers[host]` first, else the `credsStore` for every registry, by running
 * `docker-credential-<name> get` with the server address on stdin; a helper that has nothing for
 * the registry (or fails, or takes over 10 s) falls through to `auths`.
 */
export class DockerConfigCredentialProvider implements CredentialProvider {
  readonly file: string;

  constructor(file?: string, env: NodeJS.ProcessEnv = process.env) {
    this.file =
      file ?? (env.DOCKER_CONFIG ? path.join(env.DOCKER_CONFIG, "config.json") : path.join(os.homedir(), ".docker", "config.json"));
    this.#env = env;
  }

  async #fromHelper(data: { credHelpers?: unknown; credsStore?: unknown } | null, host: string): Promise<Credentials | undefined> {
    const helpers = data?.credHelpers && typeof data.credHelpers === "object" ? (data.credHelpers as Record<string, unknown>) : {};
    let helper: string | undefined;
    let server = host;
    for (const h of hostAliases(host)) {
      for (const [key, name] of Object.entries(helpers)) {
        if (typeof name === "string" && normalizeHost(key) === h) {
          helper = name;
          server = key;
        }
      }
      if (helper) break;
    }
    if (!helper && typeof data?.credsStore === "string" && data.credsStore !== "") {
      helper = data.credsStore;
      server = DOCKER_HUB_ALIASES.includes(normalizeHost(host)) ? "https://index.docker.io/v1/" : host;
    }
    if (!helper || !/^[A-Za-z0-9._-]+$/.test(helper)) return undefined;
    const out = await new Promise<string | undefined>((resolve) => {
      const child = execFile(`docker-credential-${helper}`, ["get"], { env: this.#env, timeout: 10_000, maxBuffer: 1 << 20 }, (err, stdout) => resolve(err ? undefined : stdout));
      child.stdin?.on("error", () => undefined);
      child.stdin?.end(server);
    });
    if (!out) return undefined;
    try {
      const r = JSON.parse(out) as { Username?: unknown; Secret?: unknown };
      if (typeof r.Secret !== "string" || r.Secret === "") return undefined;
      // "<token>" marks an identity token, which registries take as the password of the token flow.
      return { username: typeof r.Username === "string" ? r.Username : "", password: r.Secret };
    } catch {
      return undefined;
    }
  }

  readonly #env: NodeJS.ProcessEnv;

  async get(host: string): Promise<Credentials | undefined> {
    let data: unknown;
    try {
      data = JSON.parse(await fs.readFile(this.file, "utf8"));
    } catch {
      return undefined; // missing or unreadable: Docker's file is optional
    }
    const fromHelper = await this.#fromHelper(data as { credHelpers?: unknown; credsStore?: unknown } | null, host);
    if (fromHelper) return fromHelper;
    const auths = (data as { auths?: unknown } | null)?.auths;
    if (!auths || typeof auths !== "object") return undefined;
    const byHost = new Map<string, Record<string, unknown>>();
    for (const [key, v] of Object.entries(auths as Record<string, unknown>)) {
      if (v && typeof v === "object") {
        const h = normalizeHost(key);
        if (!byHost.has(h)) byHost.set(h, v as Record<string, unknown>);
      }
    }
    for (const h of hostAliases(host)) {
      const e = byHost.get(h);
      if (!e) continue;
      if (typeof e.auth === "string" && e.auth !== "") {
        const dec = decodeBasicAuth(e.auth);
        if (dec) return dec;
      }
      if (typeof e.username === "string" && typeof e.password === "string") {
        return { username: e.username, password: e.password };
      }
      if (typeof e.registrytoken === "string" && e.registrytoken !== "") return { token: e.registrytoken };
    }
    return undefined;
  }
}

export interface DefaultCredentialProviderOptions {
  env?: NodeJS.ProcessEnv;
  /** The store, or its path (`$AXON_HOME/credentials.json`). */
  store?: CredentialStore | string;
  /** Docker's config.json; defaults to `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. */
  dockerConfig?: string | false;
}

/** Environment, then the credential store, then Docker's config.json. */
export class DefaultCredentialProvider implements CredentialProvider {
  private readonly chain: CredentialProvider[];

  constructor(opts: DefaultCredentialProviderOptions = {}) {
    const env = opts.env ?? process.env;
    this.chain = [new EnvCredentialProvider(env)];
    if (opts.store) this.chain.push(typeof opts.store === "string" ? new CredentialStore(opts.store) : opts.store);
    if (opts.dockerConfig !== false) this.chain.push(new DockerConfigCredentialProvider(opts.dockerConfig, env));
  }

  async get(host: string): Promise<Credentials | undefined> {
    for (const p of this.chain) {
      const c = await p.get(host);
      if (c) return c;
    }
    return undefined;
  }
}
