/**
 * A small client for the Hugging Face Hub, speaking the same routes the official clients use:
 *
 * - `GET /api/models/{repo_id}/revision/{revision}?blobs=true`: the commit a revision points at
 *   and every file with its size (and, for LFS files, the sha256 of the content);
 * - `GET /{repo_id}/resolve/{commit}/{path}`: the bytes of one file. Small files come straight
 *   from the hub; LFS files are 302-redirected to a CDN host with a pre-signed URL. The hub's
 *   answer carries `X-Repo-Commit`, `X-Linked-Etag` (sha256 of an LFS file), `X-Linked-Size` and
 *   `ETag` (git blob id of a small file).
 *
 * `HF_ENDPOINT` names the hub (mirrors, self-hosted), `HF_TOKEN` is sent as a bearer token, and
 * only ever to the hub's own origin: a redirect to another host (the CDN) goes without it. The
 * token never appears in an error message.
 */
import { request, type Dispatcher } from "undici";
import { AxonError } from "../errors.js";
import { backoffDelay, describeNetworkError, header, isTransientNetworkError, parseRetryAfter, readBody, sleep, type Headers } from "../registry/http.js";

export interface HubClientOptions {
  /** The hub's base URL; defaults to `$HF_ENDPOINT`, else `https://huggingface.co`. */
  endpoint?: string;
  /** A user access token; defaults to `$HF_TOKEN`. */
  token?: string;
  /** Retries after 429, 5xx or a transient network error (default 5). */
  retries?: number;
  /** Base of the exponential backoff in ms (default 500). */
  retryBaseMs?: number;
  /** Upper bound on one wait asked for by `Retry-After` (default 60 s). */
  maxRetryAfterMs?: number;
  /** Redirects followed per request (default 5). */
  maxRedirects?: number;
  /** An undici dispatcher (proxy agent, mock); defaults to undici's global one. */
  dispatcher?: Dispatcher;
  userAgent?: string;
}

export interface HubFile {
  /** Path in the repository, forward slashes. */
  path: string;
  /** Size of the content in bytes (for LFS files, of the real content, not of the pointer). */
  size: number;
  /** sha256 (hex) of the content, when the file is stored in LFS. */
  lfsSha256?: string;
  /** Git blob id (of the pointer file, for LFS files). */
  blobId?: string;
}

export interface HubModelInfo {
  /** `org/name` as the hub spells it. */
  id: string;
  /** The commit (40 hex) the requested revision resolved to. */
  sha: string;
  files: HubFile[];
  private?: boolean;
  gated?: boolean | string;
  /** From the model card's metadata, when it names one. */
  license?: string;
  pipelineTag?: string;
  libraryName?: string;
}

export interface HubFileResponse {
  body: AsyncIterable<Uint8Array>;
  /** Where the body starts in the file: the requested offset after a 206, 0 after a 200. */
  offset: number;
  status: number;
  /** Total size of the file, when the response says (Content-Range, Content-Length or X-Linked-Size). */
  size?: number;
  /** `X-Repo-Commit` of the hub's answer. */
  commit?: string;
  /** `ETag` of the hub's answer, unquoted (git blob id of a small file). */
  etag?: string;
  /** `X-Linked-Etag`, unquoted: the sha256 of an LFS file. */
  linkedEtag?: string;
  /** `X-Linked-Size`: the size of an LFS file. */
  linkedSize?: number;
  /** Whether the bytes came from another host than the hub (an LFS redirect). */
  redirected: boolean;
}

/** What a request was about, for error messages. */
interface Subject {
  repoId: string;
  revision: string;
  path?: string;
}

const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

export class HubClient {
  readonly endpoint: string;
  readonly #token: string | undefined;
  readonly #origin: string;
  readonly #retries: number;
  readonly #retryBaseMs: number;
  readonly #maxRetryAfterMs: number;
  readonly #maxRedirects: number;
  readonly #dispatcher: Dispatcher | undefined;
  readonly #userAgent: string;

  constructor(opts: HubClientOptions = {}) {
    const endpoint = (opts.endpoint ?? process.env.HF_ENDPOINT ?? "https://huggingface.co").trim().replace(/\/+$/, "");
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new AxonError("CONFIG_INVALID", `HF_ENDPOINT is not a URL: ${endpoint}`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new AxonError("CONFIG_INVALID", `HF_ENDPOINT must be an http(s) URL: ${endpoint}`);
    this.endpoint = endpoint;
    this.#origin = url.origin;
    const token = opts.token ?? process.env.HF_TOKEN;
    this.#token = token && token.trim() !== "" ? token.trim() : undefined;
    this.#retries = opts.retries ?? 5;
    this.#retryBaseMs = opts.retryBaseMs ?? 500;
    this.#maxRetryAfterMs = opts.maxRetryAfterMs ?? 60_000;
    this.#maxRedirects = opts.maxRedirects ?? 5;
    this.#dispatcher = opts.dispatcher;
    this.#userAgent = opts.userAgent ?? "mlos-axon/0.1 (hf-adapter)";
  }

  /** Whether a token will be sent. */
  get authenticated(): boolean {
    return this.#token !== undefined;
  }

  /** The page of a repository on the hub (without any credentials the endpoint URL holds). */
  repoUrl(repoId: string): string {
    const u = new URL(this.endpoint);
    u.username = "";
    u.password = "";
    return `${u.toString().replace(/\/+$/, "")}/${repoId}`;
  }

  /** The commit a revision (branch, tag or commit) points at, and every file in it with its size. */
  async modelInfo(repoId: string, revision = "main", signal?: AbortSignal): Promise<HubModelInfo> {
    checkRepoId(repoId);
    const url = `${this.endpoint}/api/models/${repoPath(repoId)}/revision/${encodeURIComponent(revision)}?blobs=true`;
    const subject: Subject = { repoId, revision };
    const res = await this.#send(url, { subject, signal, retryNetwork: true });
    let json: unknown;
    try {
      json = JSON.parse((await readBody(res.body, 256 << 20)).toString("utf8"));
    } catch (e) {
      throw new AxonError("HF_ERROR", `the hub answered ${repoId}@${revision} with a body that is not JSON`, { repo: repoId, revision }, { cause: e });
    }
    return parseModelInfo(json, subject);
  }

  /**
   * Opens one file of a commit from byte `offset` (a Range request when offset > 0), following
   * the hub's redirect to its CDN. 429 and 5xx answers are retried here; a connection that fails
   * is thrown as it is, so that the caller (the blob store) resumes from what it already has.
   */
  async openFile(repoId: string, commitSha: string, path: string, offset = 0, signal?: AbortSignal): Promise<HubFileResponse> {
    checkRepoId(repoId);
    const url = `${this.endpoint}/${repoPath(repoId)}/resolve/${encodeURIComponent(commitSha)}/${path.split("/").map(encodeURIComponent).join("/")}`;
    const subject: Subject = { repoId, revision: commitSha, path };
    const res = await this.#send(url, { subject, signal, range: offset, retryNetwork: false });
    const meta = res.hubHeaders;
    const commit = meta ? header(meta, "x-repo-commit") : undefined;
    if (commit && /^[0-9a-f]{40}$/.test(commitSha) && commit !== commitSha) {
      await res.body.dump().catch(() => {});
      throw new AxonError("HF_ERROR", `the hub served ${path} of ${repoId} from commit ${commit} instead of ${commitSha}`, { repo: repoId, path, commit });
    }
    const linkedSize = meta ? toInt(header(meta, "x-linked-size")) : undefined;
    let start = 0;
    let size: number | undefined;
    if (res.statusCode === 206) {
      const m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(header(res.headers, "content-range") ?? "");
      if (!m) {
        await res.body.dump().catch(() => {});
        throw new AxonError("HF_ERROR", `${hostOf(res.url)} answered a range request for ${path} of ${repoId} without a valid Content-Range`, { repo: repoId, path });
      }
      start = Number(m[1]);
      size = m[3] === "*" ? undefined : Number(m[3]);
    } else {
      size = toInt(header(res.headers, "content-length"));
    }
    return {
      body: res.body,
      offset: start,
      status: res.statusCode,
      size: size ?? linkedSize,
      ...(commit ? { commit } : {}),
      ...(meta && header(meta, "etag") ? { etag: unquote(header(meta, "etag")!) } : {}),
      ...(meta && header(meta, "x-linked-etag") ? { linkedEtag: unquote(header(meta, "x-linked-etag")!) } : {}),
      ...(linkedSize !== undefined ? { linkedSize } : {}),
      redirected: res.redirected,
    };
  }

  /**
   * One GET with redirects and retries. Returns a 2xx response whose body is unread; throws an
   * AxonError for everything else.
   */
  async #send(
    url: string,
    o: { subject: Subject; signal?: AbortSignal; range?: number; retryNetwork: boolean },
  ): Promise<Dispatcher.ResponseData & { url: URL; hubHeaders?: Headers; redirected: boolean }> {
    for (let attempt = 0; ; attempt++) {
      let current = new URL(url);
      let hubHeaders: Headers | undefined;
      let res: Dispatcher.ResponseData;
      let redirected = false;
      try {
        for (let hops = 0; ; hops++) {
          const headers: Record<string, string> = { "user-agent": this.#userAgent, "accept-encoding": "identity" };
          if (o.range && o.range > 0) headers.range = `bytes=${o.range}-`;
          // The token goes to the hub's own origin only, never to the CDN a redirect points at.
          const toHub = current.origin === this.#origin;
          if (this.#token && toHub) headers.authorization = `Bearer ${this.#token}`;
          res = await request(current, { method: "GET", headers, signal: o.signal, ...(this.#dispatcher ? { dispatcher: this.#dispatcher } : {}) });
          if (toHub && !hubHeaders) hubHeaders = res.headers as Headers;
          else if (toHub && header(res.headers as Headers, "x-repo-commit")) hubHeaders = res.headers as Headers;
          const location = header(res.headers as Headers, "location");
          if (res.statusCode >= 300 && res.statusCode < 400 && res.statusCode !== 304 && location) {
            await res.body.dump().catch(() => {});
            if (hops >= this.#maxRedirects) throw new AxonError("HF_ERROR", `too many redirects fetching ${describe(o.subject)}`, subjectDetails(o.subject));
            const next = new URL(location, current);
            if (next.protocol !== "http:" && next.protocol !== "https:") throw new AxonError("HF_ERROR", `the hub redirected ${describe(o.subject)} to a non-http URL`, subjectDetails(o.subject));
            if (next.origin !== this.#origin) redirected = true;
            current = next;
            continue;
          }
          break;
        }
      } catch (e) {
        if (e instanceof AxonError || o.signal?.aborted) throw e;
        if (!o.retryNetwork) throw e;
        if (isTransientNetworkError(e) && attempt < this.#retries) {
          await sleep(backoffDelay(attempt, this.#retryBaseMs), o.signal);
          continue;
        }
        throw new AxonError("NETWORK", `cannot reach ${hostOf(current)} for ${describe(o.subject)}: ${this.#redact(describeNetworkError(e))}`, { ...subjectDetails(o.subject), host: hostOf(current) }, { cause: e });
      }
      const status = res!.statusCode;
      if (status >= 200 && status < 300) return Object.assign(res!, { url: current, redirected, ...(hubHeaders ? { hubHeaders } : {}) });

      const headers = res!.headers as Headers;
      if ((status === 429 || status >= 500) && attempt < this.#retries) {
        await res!.body.dump().catch(() => {});
        const asked = status === 429 || status === 503 ? parseRetryAfter(header(headers, "retry-after")) : undefined;
        const wait = asked !== undefined ? Math.min(asked, this.#maxRetryAfterMs) : backoffDelay(attempt, this.#retryBaseMs);
        await sleep(wait, o.signal);
        continue;
      }
      throw await this.#statusError(res!, current, o.subject, attempt);
    }
  }

  async #statusError(res: Dispatcher.ResponseData, url: URL, s: Subject, attempt: number): Promise<AxonError> {
    const headers = res.headers as Headers;
    const status = res.statusCode;
    const code = header(headers, "x-error-code");
    let msg = header(headers, "x-error-message");
    try {
      const text = (await readBody(res.body, 64 << 10)).toString("utf8");
      if (!msg) {
        try {
          const j = JSON.parse(text) as { error?: unknown };
          if (typeof j.error === "string") msg = j.error;
        } catch {
          /* not JSON */
        }
      }
    } catch {
      /* body too large or cut: the status says enough */
    }
    const host = hostOf(url);
    const hint = msg ? ` (${this.#redact(oneLine(msg))})` : "";
    const details = { ...subjectDetails(s), status, host, ...(code ? { hubErrorCode: code } : {}) };
    const what = `hf/${s.repoId}${s.path ? ` file ${s.path}` : ""} at revision ${s.revision}`;
    if (status === 401 || status === 403) {
      const gated = code === "GatedRepo";
      const why = gated
        ? `${s.repoId} is a gated repository: accept its terms on ${this.endpoint}/${s.repoId} and set HF_TOKEN to a token of that account`
        : this.#token
          ? `the token in HF_TOKEN was refused or cannot read ${s.repoId} (private or gated repository)`
          : `${s.repoId} is private or gated, or does not exist: set HF_TOKEN to a token that can read it`;
      return new AxonError("REGISTRY_AUTH", `${host} refused ${what} with ${status}: ${why}${hint}`, details);
    }
    if (status === 404) {
      if (code === "RevisionNotFound") return new AxonError("NOT_FOUND", `revision '${s.revision}' of hf/${s.repoId} not found on ${host}${hint}`, details);
      if (code === "EntryNotFound" || (s.path && code !== "RepoNotFound")) {
        return new AxonError("NOT_FOUND", `file ${s.path ?? "?"} not found in hf/${s.repoId} at revision ${s.revision} on ${host}${hint}`, details);
      }
      return new AxonError("NOT_FOUND", `model hf/${s.repoId} (revision ${s.revision}) not found on ${host}${hint}`, details);
    }
    const retried = attempt > 0 ? ` after ${attempt + 1} attempts` : "";
    return new AxonError("HF_ERROR", `${host} answered ${status} for ${what}${retried}${hint}`, { ...details, attempts: attempt + 1 });
  }

  #redact(s: string): string {
    return this.#token ? s.split(this.#token).join("***") : s;
  }
}

function parseModelInfo(json: unknown, s: Subject): HubModelInfo {
  const bad = (why: string): AxonError => new AxonError("HF_ERROR", `unexpected model info for hf/${s.repoId}@${s.revision}: ${why}`, subjectDetails(s));
  if (!json || typeof json !== "object") throw bad("not an object");
  const j = json as Record<string, unknown>;
  if (typeof j.sha !== "string" || !/^[0-9a-f]{40}$/.test(j.sha)) throw bad("no commit sha");
  if (!Array.isArray(j.siblings)) throw bad("no file list (siblings)");
  const files: HubFile[] = [];
  for (const raw of j.siblings as unknown[]) {
    const f = raw as { rfilename?: unknown; size?: unknown; blobId?: unknown; lfs?: { sha256?: unknown; size?: unknown } | null };
    if (!f || typeof f.rfilename !== "string") throw bad("a file without rfilename");
    const lfs = f.lfs && typeof f.lfs === "object" ? f.lfs : undefined;
    const lfsSha = lfs && typeof lfs.sha256 === "string" && /^[0-9a-f]{64}$/.test(lfs.sha256) ? lfs.sha256 : undefined;
    const size = lfs && typeof lfs.size === "number" ? lfs.size : typeof f.size === "number" ? f.size : undefined;
    if (size === undefined || !Number.isSafeInteger(size) || size < 0) throw bad(`no size for ${f.rfilename} (does the endpoint support ?blobs=true?)`);
    files.push({ path: f.rfilename, size, ...(lfsSha ? { lfsSha256: lfsSha } : {}), ...(typeof f.blobId === "string" ? { blobId: f.blobId } : {}) });
  }
  const card = j.cardData && typeof j.cardData === "object" ? (j.cardData as Record<string, unknown>) : undefined;
  const license = typeof card?.license === "string" ? card.license : Array.isArray(card?.license) && typeof card.license[0] === "string" ? (card.license[0] as string) : undefined;
  return {
    id: typeof j.id === "string" ? j.id : s.repoId,
    sha: j.sha,
    files,
    ...(typeof j.private === "boolean" ? { private: j.private } : {}),
    ...(typeof j.gated === "boolean" || typeof j.gated === "string" ? { gated: j.gated as boolean | string } : {}),
    ...(license ? { license } : {}),
    ...(typeof j.pipeline_tag === "string" ? { pipelineTag: j.pipeline_tag } : {}),
    ...(typeof j.library_name === "string" ? { libraryName: j.library_name } : {}),
  };
}

function checkRepoId(repoId: string): void {
  if (!REPO_ID.test(repoId) || repoId.includes("..") || repoId.includes("--")) {
    throw new AxonError("BAD_REFERENCE", `not a Hugging Face repository id: '${repoId}' (expected ORG/NAME)`, { repo: repoId });
  }
}

function repoPath(repoId: string): string {
  return repoId.split("/").map(encodeURIComponent).join("/");
}

function describe(s: Subject): string {
  return `hf/${s.repoId}${s.path ? ` file ${s.path}` : ""}@${s.revision}`;
}

function subjectDetails(s: Subject): Record<string, unknown> {
  return { repo: s.repoId, revision: s.revision, ...(s.path ? { path: s.path } : {}) };
}

function hostOf(u: URL): string {
  return u.host;
}

function toInt(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d+$/.test(v.trim())) return undefined;
  return Number(v.trim());
}

function unquote(v: string): string {
  return v.replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
}

function oneLine(s: string): string {
  const t = s.replace(/\s+/g, " ").trim();
  return t.length > 200 ? `${t.slice(0, 200)}…` : t;
}
