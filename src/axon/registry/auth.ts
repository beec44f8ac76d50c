/**
 * Registry authentication: anonymous first; on a 401 the `WWW-Authenticate` challenge decides.
 * `Basic` uses the host's credentials; `Bearer realm=..,service=..,scope=..` runs the token flow
 * (GET realm?service=..&scope=.., with basic credentials when there are any) and caches tokens per
 * scope until they expire. Once a host's scheme is known, later requests carry the header
 * preemptively. Tokens and passwords never appear in error messages.
 */
import { request, type Dispatcher } from "undici";
import { AxonError } from "../errors.js";
import type { CredentialProvider, Credentials } from "./credentials.js";
import { backoffDelay, describeNetworkError, isTransientNetworkError, readBody, sleep } from "./http.js";

export interface Challenge {
  scheme: string; // lower-cased: "basic", "bearer"
  params: Record<string, string>; // keys lower-cased
}

const TOKEN_CHARS = /[A-Za-z0-9!#$%&'*+.^_`|~-]/;

/** Parses one or more `WWW-Authenticate` values into challenges. */
export function parseWwwAuthenticate(value: string | string[] | undefined): Challenge[] {
  if (value === undefined) return [];
  const values = Array.isArray(value) ? value : [value];
  const out: Challenge[] = [];
  for (const s of values) {
    let i = 0;
    let cur: Challenge | undefined;
    const skipWs = (): void => {
      while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
    };
    while (i < s.length) {
      while (i < s.length && (s[i] === " " || s[i] === "\t" || s[i] === ",")) i++;
      const start = i;
      while (i < s.length && TOKEN_CHARS.test(s[i]!)) i++;
      const tok = s.slice(start, i);
      if (tok === "") {
        i++; // stray character: skip it
        continue;
      }
      skipWs();
      if (s[i] === "=" && cur) {
        i++;
        skipWs();
        let val = "";
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === "\\" && i + 1 < s.length) i++;
            val += s[i];
            i++;
          }
          i++; // closing quote
        } else {
          const vs = i;
          while (i < s.length && s[i] !== "," && s[i] !== " " && s[i] !== "\t") i++;
          val = s.slice(vs, i);
        }
        cur.params[tok.toLowerCase()] = val;
      } else if (s[i] === "=" && !cur) {
        i++;
      } else {
        cur = { scheme: tok.toLowerCase(), params: {} };
        out.push(cur);
        // a token68 (e.g. `Basic abc==`) right after the scheme: skip it
        const save = i;
        while (i < s.length && /[A-Za-z0-9\-._~+/]/.test(s[i]!)) i++;
        while (i < s.length && s[i] === "=") i++;
        skipWs();
        if (i < s.length && s[i] !== ",") i = save;
      }
    }
  }
  return out;
}

/** `repository:NAME:pull` or `repository:NAME:pull,push`. */
export function repoScope(repo: string, push = false): string {
  return `repository:${repo}:${push ? "pull,push" : "pull"}`;
}

export interface RegistryAuthOptions {
  /** `host[:port]` of the registry, for credential lookup and messages. */
  host: string;
  credentials?: CredentialProvider;
  dispatcher: Dispatcher;
  userAgent: string;
  retries: number;
  retryBaseMs: number;
}

interface CachedToken {
  header: string;
  expiresAt: number;
}

function loginHint(host: string): string {
  return `run \`axon registry login ${host}\``;
}

function basicHeader(c: Credentials): string | undefined {
  if (c.username === undefined || c.password === undefined) return undefined;
  return "Basic " + Buffer.from(`${c.username}:${c.password}`, "utf8").toString("base64");
}

export class RegistryAuth {
  private scheme: "basic" | "bearer" | undefined;
  private basic: string | undefined;
  private bearer: { realm: string; service?: string } | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<string>>();
  private creds: Promise<Credentials | undefined> | undefined;

  constructor(private readonly opts: RegistryAuthOptions) {}

  get host(): string {
    return this.opts.host;
  }

  private credentials(): Promise<Credentials | undefined> {
    if (!this.creds) {
      this.creds = this.opts.credentials ? this.opts.credentials.get(this.opts.host) : Promise.resolve(undefined);
      this.creds.catch(() => {
        this.creds = undefined;
      });
    }
    return this.creds;
  }

  /** Whether any credentials exist for the host (for error messages). */
  async hasCredentials(): Promise<boolean> {
    return (await this.credentials().catch(() => undefined)) !== undefined;
  }

  private static key(scopes: string[]): string {
    return [...new Set(scopes)].sort().join(" ");
  }

  /**
   * The Authorization header to send preemptively for `scopes`, when the host's scheme is known:
   * the basic header, a cached token, or a freshly fetched one from the known realm.
   */
  async headerFor(scopes: string[]): Promise<string | undefined> {
    if (this.scheme === "basic") return this.basic;
    if (this.scheme === "bearer") {
      const cached = this.tokens.get(RegistryAuth.key(scopes));
      if (cached && cached.expiresAt > Date.now()) return cached.header;
      if (this.bearer) return this.token(this.bearer.realm, this.bearer.service, scopes);
    }
    return undefined;
  }

  /** Forgets the cached header for `scopes` (after the registry rejected it). */
  invalidate(scopes: string[]): void {
    this.tokens.delete(RegistryAuth.key(scopes));
  }

  /** Answers a 401's challenge; returns the header to retry with, or throws REGISTRY_AUTH. */
  async respond(wwwAuthenticate: string | string[] | undefined, scopes: string[]): Promise<string> {
    const challenges = parseWwwAuthenticate(wwwAuthenticate);
    const bearer = challenges.find((c) => c.scheme === "bearer" && c.params.realm);
    const basic = challenges.find((c) => c.scheme === "basic");
    const creds = await this.credentials();
    if (bearer) {
      const realm = bearer.params.realm!;
      let realmUrl: URL;
      try {
        realmUrl = new URL(realm);
      } catch {
        throw new AxonError("REGISTRY_AUTH", `registry ${this.host} sent a bearer challenge with an invalid realm`, { host: this.host });
      }
      if (realmUrl.protocol !== "https:" && realmUrl.protocol !== "http:") {
        throw new AxonError("REGISTRY_AUTH", `registry ${this.host} sent a bearer challenge with an unsupported realm`, { host: this.host });
      }
      this.scheme = "bearer";
      this.bearer = { realm, service: bearer.params.service };
      const all = [...scopes];
      if (bearer.params.scope) for (const s of bearer.params.scope.split(" ")) if (s && !all.includes(s)) all.push(s);
      this.invalidate(scopes);
      const h = await this.token(realm, bearer.params.service, all);
      if (all.length !== scopes.length) {
        const t = this.tokens.get(RegistryAuth.key(all));
        if (t) this.tokens.set(RegistryAuth.key(scopes), t);
      }
      return h;
    }
    if (basic) {
      const h = creds ? basicHeader(creds) : undefined;
      if (!h) {
        throw new AxonError(
          "REGISTRY_AUTH",
          creds
            ? `registry ${this.host} wants a user name and password, not a token; ${loginHint(this.host)}`
            : `registry ${this.host} requires authentication; ${loginHint(this.host)}`,
          { host: this.host },
        );
      }
      this.scheme = "basic";
      this.basic = h;
      return h;
    }
    if (creds?.token) return `Bearer ${creds.token}`;
    throw new AxonError("REGISTRY_AUTH", `registry ${this.host} requires authentication with an unsupported scheme; ${loginHint(this.host)}`, {
      host: this.host,
    });
  }

  private token(realm: string, service: string | undefined, scopes: string[]): Promise<string> {
    const key = RegistryAuth.key(scopes);
    const running = this.inflight.get(key);
    if (running) return running;
    const p = this.fetchToken(realm, service, scopes).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async fetchToken(realm: string, service: string | undefined, scopes: string[]): Promise<string> {
    const key = RegistryAuth.key(scopes);
    const creds = await this.credentials();
    if (creds?.token && creds.username === undefined) {
      // A pre-issued access token: use it as is.
      const h = `Bearer ${creds.token}`;
      this.tokens.set(key, { header: h, expiresAt: Number.POSITIVE_INFINITY });
      return h;
    }
    const url = new URL(realm);
    if (service) url.searchParams.set("service", service);
    for (const s of [...new Set(scopes)]) url.searchParams.append("scope", s);
    const headers: Record<string, string> = { "user-agent": this.opts.userAgent, accept: "application/json" };
    const basic = creds ? basicHeader(creds) : undefined;
    if (basic) headers.authorization = basic;

    let lastErr: unknown;
    for (let attempt = 0; ; attempt++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, { method: "GET", headers, dispatcher: this.opts.dispatcher });
      } catch (e) {
        lastErr = e;
        if (isTransientNetworkError(e) && attempt < this.opts.retries) {
          await sleep(backoffDelay(attempt, this.opts.retryBaseMs));
          continue;
        }
        throw new AxonError("NETWORK", `cannot reach the token service of ${this.host} at ${url.host}: ${describeNetworkError(lastErr)}`, {
          host: this.host,
        }, { cause: e });
      }
      const status = res.statusCode;
      let body: Buffer;
      try {
        body = await readBody(res.body, 1 << 20);
      } catch (e) {
        if (isTransientNetworkError(e) && attempt < this.opts.retries) {
          await sleep(backoffDelay(attempt, this.opts.retryBaseMs));
          continue;
        }
        throw new AxonError("NETWORK", `reading a token from ${url.host} failed: ${describeNetworkError(e)}`, { host: this.host }, { cause: e });
      }
      if ((status >= 500 || status === 429) && attempt < this.opts.retries) {
        await sleep(backoffDelay(attempt, this.opts.retryBaseMs));
        continue;
      }
      if (status === 401 || status === 403) {
        throw new AxonError(
          "REGISTRY_AUTH",
          `the token service of ${this.host} (${url.host}) refused ${basic ? "the credentials" : "anonymous access"} (HTTP ${status}); ${loginHint(this.host)}`,
          { host: this.host, status },
        );
      }
      if (status !== 200) {
        throw new AxonError("REGISTRY_AUTH", `the token service of ${this.host} (${url.host}) answered HTTP ${status}`, { host: this.host, status });
      }
      let json: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
      try {
        json = JSON.parse(body.toString("utf8"));
      } catch {
        throw new AxonError("REGISTRY_AUTH", `the token service of ${this.host} (${url.host}) sent an invalid response`, { host: this.host });
      }
      const tok = typeof json.token === "string" && json.token ? json.token : typeof json.access_token === "string" ? json.access_token : "";
      if (!tok) {
        throw new AxonError("REGISTRY_AUTH", `the token service of ${this.host} (${url.host}) sent no token`, { host: this.host });
      }
      const ttlS = typeof json.expires_in === "number" && json.expires_in > 0 ? json.expires_in : 60;
      const margin = Math.min(30, ttlS * 0.1);
      let start = Date.now();
      if (typeof json.issued_at === "string") {
        const t = Date.parse(json.issued_at);
        if (!Number.isNaN(t) && t < start && start - t < ttlS * 1000) start = t;
      }
      const h = `Bearer ${tok}`;
      this.tokens.set(key, { header: h, expiresAt: start + (ttlS - margin) * 1000 });
      return h;
    }
  }
}
