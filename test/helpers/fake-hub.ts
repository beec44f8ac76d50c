/**
 * A stand-in for the Hugging Face Hub on 127.0.0.1, serving the routes and headers the real hub
 * serves for the models a test defines:
 *
 * - `GET /api/models/{org}/{name}[/revision/{rev}][?blobs=true]`: `{ id, sha, private, siblings:
 *   [{ rfilename, blobId, size, lfs?: { sha256, size, pointerSize } }] }` (sizes only with blobs=true);
 * - `GET|HEAD /{org}/{name}/resolve/{rev}/{path}`: small files straight away (ETag = git blob id),
 *   LFS files as a 302 to a second server, the "CDN" (another port, so another origin), with
 *   `X-Repo-Commit`, `X-Linked-Etag` and `X-Linked-Size`; Range requests answered with 206;
 * - errors as the hub gives them: 404 with `X-Error-Code: RepoNotFound | RevisionNotFound |
 *   EntryNotFound`, 401 for a private repository without the right bearer token.
 *
 * Faults, each for `times` requests (default once): `corrupt` (one byte flipped), `truncate` (the
 * body stops half-way and the connection drops), `500`, `429` (with `Retry-After: 1`). A fault
 * names a file path (it hits the server that serves the bytes: the CDN for LFS files) or `@api`.
 * Every request is logged with its Range and Authorization headers.
 */
import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeFile {
  path: string;
  content: Buffer | string;
  /** Stored in LFS: served through the CDN, listed with `lfs.sha256`. */
  lfs?: boolean;
}

export interface FakeRepo {
  /** `org/name` */
  id: string;
  /** Branch name -> files. The first branch is the default (`main` usually). */
  branches: Record<string, FakeFile[]>;
  /** Needs `Authorization: Bearer <token>`. */
  private?: boolean;
  token?: string;
  pipelineTag?: string;
  license?: string;
}

export type FaultKind = "corrupt" | "truncate" | "500" | "429";

export interface Fault {
  kind: FaultKind;
  /** A file path, or `@api` for the model API. */
  path: string;
  /** Limits the fault to one repository. */
  repo?: string;
  /** How many requests it hits (default 1; Infinity for all). */
  times?: number;
}

export interface LoggedRequest {
  server: "hub" | "cdn";
  method: string;
  url: string;
  /** The file a resolve/CDN request is for. */
  file?: string;
  repo?: string;
  range?: string;
  authorization?: string;
  status: number;
}

interface Commit {
  repo: FakeRepo;
  sha: string;
  files: Map<string, Buffer>;
  lfs: Set<string>;
}

export function sha256Hex(b: Buffer | string): string {
  return createHash("sha256").update(b).digest("hex");
}

export function gitBlobId(b: Buffer): string {
  return createHash("sha1").update(`blob ${b.byteLength}\0`).update(b).digest("hex");
}

function lfsPointer(content: Buffer): Buffer {
  return Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256Hex(content)}\nsize ${content.byteLength}\n`);
}

/** Deterministic pseudo-random bytes, for weights. */
export function bytes(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

export class FakeHub {
  readonly requests: LoggedRequest[] = [];
  readonly #repos = new Map<string, FakeRepo>();
  /** repo id -> revision (branch or sha) -> commit */
  readonly #revs = new Map<string, Map<string, Commit>>();
  readonly #faults: Array<Fault & { left: number }> = [];
  #hub!: http.Server;
  #cdn!: http.Server;
  endpoint = "";
  cdnEndpoint = "";

  static async start(repos: FakeRepo[] = []): Promise<FakeHub> {
    const h = new FakeHub();
    for (const r of repos) h.addRepo(r);
    h.#hub = http.createServer((req, res) => h.#onHub(req, res));
    h.#cdn = http.createServer((req, res) => h.#onCdn(req, res));
    const listen = (s: http.Server): Promise<number> =>
      new Promise((resolve) => s.listen(0, "127.0.0.1", () => resolve((s.address() as AddressInfo).port)));
    h.endpoint = `http://127.0.0.1:${await listen(h.#hub)}`;
    h.cdnEndpoint = `http://127.0.0.1:${await listen(h.#cdn)}`;
    return h;
  }

  addRepo(repo: FakeRepo): void {
    this.#repos.set(repo.id, repo);
    const revs = new Map<string, Commit>();
    for (const [branch, files] of Object.entries(repo.branches)) {
      const h = createHash("sha1").update(`${repo.id}\0${branch}`);
      const map = new Map<string, Buffer>();
      const lfs = new Set<string>();
      for (const f of files) {
        const c = Buffer.isBuffer(f.content) ? f.content : Buffer.from(f.content);
        map.set(f.path, c);
        if (f.lfs) lfs.add(f.path);
        h.update(`\0${f.path}\0`).update(c);
      }
      const commit: Commit = { repo, sha: h.digest("hex"), files: map, lfs };
      revs.set(branch, commit);
      revs.set(commit.sha, commit);
    }
    this.#revs.set(repo.id, revs);
  }

  /** The commit a branch points at. */
  commitOf(repoId: string, branch = "main"): string {
    const c = this.#revs.get(repoId)?.get(branch);
    if (!c) throw new Error(`no branch ${branch} in ${repoId}`);
    return c.sha;
  }

  fault(f: Fault): void {
    this.#faults.push({ ...f, left: f.times ?? 1 });
  }

  clearFaults(): void {
    this.#faults.length = 0;
  }

  clearLog(): void {
    this.requests.length = 0;
  }

  /** Requests for a file's bytes (resolve on the hub, or the CDN). */
  fileRequests(path: string, server?: "hub" | "cdn"): LoggedRequest[] {
    return this.requests.filter((r) => r.file === path && (!server || r.server === server));
  }

  async close(): Promise<void> {
    for (const s of [this.#hub, this.#cdn]) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  }

  #takeFault(repo: string, path: string): FaultKind | undefined {
    const f = this.#faults.find((x) => x.left > 0 && x.path === path && (!x.repo || x.repo === repo));
    if (!f) return undefined;
    f.left--;
    return f.kind;
  }

  #log(server: "hub" | "cdn", req: http.IncomingMessage, status: number, extra: Partial<LoggedRequest> = {}): void {
    this.requests.push({
      server,
      method: req.method ?? "GET",
      url: req.url ?? "",
      status,
      ...(typeof req.headers.range === "string" ? { range: req.headers.range } : {}),
      ...(typeof req.headers.authorization === "string" ? { authorization: req.headers.authorization } : {}),
      ...extra,
    });
  }

  #error(res: http.ServerResponse, status: number, code: string | undefined, message: string): number {
    res.writeHead(status, { "content-type": "application/json", ...(code ? { "x-error-code": code, "x-error-message": message } : {}) });
    res.end(JSON.stringify({ error: message }));
    return status;
  }

  /** Access check as the hub does it: a private repo without the right token looks like a missing one, with 401. */
  #denied(repo: FakeRepo, req: http.IncomingMessage, res: http.ServerResponse): number | undefined {
    if (!repo.private) return undefined;
    if (req.headers.authorization === `Bearer ${repo.token}`) return undefined;
    return this.#error(res, 401, "RepoNotFound", "Repository not found");
  }

  /** Fault that turns a request into an error answer (500, 429); undefined to go on. */
  #statusFault(kind: FaultKind | undefined, res: http.ServerResponse): number | undefined {
    if (kind === "500") return this.#error(res, 500, undefined, "Internal Error - We're working hard to fix this as soon as possible!");
    if (kind === "429") {
      res.writeHead(429, { "retry-after": "1", "content-type": "application/json" });
      res.end(JSON.stringify({ error: "You have exceeded our hourly quotas for action: resolve." }));
      return 429;
    }
    return undefined;
  }

  #onHub(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", this.endpoint);
    const segs = url.pathname.split("/").slice(1).map((s) => decodeURIComponent(s));
    const extra: Partial<LoggedRequest> = {};
    const status = ((): number => {
      if (segs[0] === "api" && segs[1] === "models") {
        const repoId = `${segs[2]}/${segs[3]}`;
        extra.repo = repoId;
        const fault = this.#statusFault(this.#takeFault(repoId, "@api"), res);
        if (fault) return fault;
        const repo = this.#repos.get(repoId);
        if (!repo) return this.#error(res, 404, "RepoNotFound", "Repository not found");
        const denied = this.#denied(repo, req, res);
        if (denied) return denied;
        let rev = Object.keys(repo.branches)[0]!;
        if (segs[4] === "revision" && segs.length >= 6) rev = segs.slice(5).join("/");
        else if (segs.length > 4) return this.#error(res, 404, undefined, "Not Found");
        const commit = this.#revs.get(repoId)!.get(rev);
        if (!commit) return this.#error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
        const blobs = url.searchParams.get("blobs") === "true";
        const siblings = [...commit.files].map(([path, content]) => {
          const isLfs = commit.lfs.has(path);
          const pointer = isLfs ? lfsPointer(content) : content;
          return {
            rfilename: path,
            ...(blobs
              ? {
                  blobId: gitBlobId(pointer),
                  size: content.byteLength,
                  ...(isLfs ? { lfs: { sha256: sha256Hex(content), size: content.byteLength, pointerSize: pointer.byteLength } } : {}),
                }
              : {}),
          };
        });
        const body = {
          _id: createHash("md5").update(repoId).digest("hex").slice(0, 24),
          id: repoId,
          modelId: repoId,
          author: repoId.split("/")[0],
          sha: commit.sha,
          lastModified: "2024-01-01T00:00:00.000Z",
          private: !!repo.private,
          gated: false,
          disabled: false,
          tags: [...(repo.pipelineTag ? [repo.pipelineTag] : []), ...(repo.license ? [`license:${repo.license}`] : [])],
          ...(repo.pipelineTag ? { pipeline_tag: repo.pipelineTag } : {}),
          ...(repo.license ? { cardData: { license: repo.license } } : {}),
          siblings,
          createdAt: "2024-01-01T00:00:00.000Z",
        };
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
        return 200;
      }
      if (segs[2] === "resolve" && segs.length >= 5) {
        const repoId = `${segs[0]}/${segs[1]}`;
        const rev = segs[3]!;
        const path = segs.slice(4).join("/");
        extra.repo = repoId;
        extra.file = path;
        const repo = this.#repos.get(repoId);
        if (!repo) return this.#error(res, 404, "RepoNotFound", "Repository not found");
        const denied = this.#denied(repo, req, res);
        if (denied) return denied;
        const commit = this.#revs.get(repoId)!.get(rev);
        if (!commit) return this.#error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
        const content = commit.files.get(path);
        if (!content) return this.#error(res, 404, "EntryNotFound", `${path} does not exist on "${rev}"`);
        if (commit.lfs.has(path)) {
          const sha = sha256Hex(content);
          const fault = this.#statusFault(this.#takeFault(repoId, `@resolve:${path}`), res);
          if (fault) return fault;
          const loc = `${this.cdnEndpoint}/repos/${sha}?repo=${encodeURIComponent(repoId)}&file=${encodeURIComponent(path)}&X-Amz-Signature=abc123`;
          res.writeHead(302, {
            location: loc,
            "x-repo-commit": commit.sha,
            "x-linked-etag": `"${sha}"`,
            "x-linked-size": String(content.byteLength),
            etag: `"${gitBlobId(lfsPointer(content))}"`,
            "content-length": "0",
          });
          res.end();
          return 302;
        }
        return this.#serveBytes(req, res, repoId, path, content, { "x-repo-commit": commit.sha, etag: `"${gitBlobId(content)}"` });
      }
      return this.#error(res, 404, undefined, "Not Found");
    })();
    this.#log("hub", req, status, extra);
  }

  #onCdn(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", this.cdnEndpoint);
    const sha = url.pathname.split("/")[2] ?? "";
    const repoId = url.searchParams.get("repo") ?? "";
    const path = url.searchParams.get("file") ?? "";
    const extra: Partial<LoggedRequest> = { repo: repoId, file: path };
    const status = ((): number => {
      let content: Buffer | undefined;
      for (const revs of this.#revs.values()) {
        for (const c of revs.values()) {
          const b = c.files.get(path);
          if (b && c.lfs.has(path) && sha256Hex(b) === sha) content = b;
        }
      }
      if (!content || url.searchParams.get("X-Amz-Signature") !== "abc123") return this.#error(res, 403, undefined, "AccessDenied");
      return this.#serveBytes(req, res, repoId, path, content, { etag: `"${sha}"` });
    })();
    this.#log("cdn", req, status, extra);
  }

  /** 200 or 206 (Range) with the file's bytes, after applying any fault for the file. */
  #serveBytes(req: http.IncomingMessage, res: http.ServerResponse, repoId: string, path: string, content: Buffer, headers: Record<string, string>): number {
    const kind = this.#takeFault(repoId, path);
    const fault = this.#statusFault(kind, res);
    if (fault) return fault;
    let body = content;
    if (kind === "corrupt") {
      body = Buffer.from(content);
      const i = Math.floor(body.byteLength / 2);
      body[i] = body[i]! ^ 0xff;
    }
    const total = body.byteLength;
    let start = 0;
    let status = 200;
    const range = typeof req.headers.range === "string" ? /^bytes=(\d+)-(\d*)$/.exec(req.headers.range) : null;
    const h: Record<string, string> = { ...headers, "accept-ranges": "bytes", "content-type": "application/octet-stream" };
    let end = total - 1;
    if (range) {
      start = Number(range[1]);
      if (range[2]) end = Math.min(end, Number(range[2]));
      if (start >= total || start > end) {
        res.writeHead(416, { "content-range": `bytes */${total}` });
        res.end();
        return 416;
      }
      status = 206;
      h["content-range"] = `bytes ${start}-${end}/${total}`;
    }
    const slice = body.subarray(start, end + 1);
    h["content-length"] = String(slice.byteLength);
    res.writeHead(status, h);
    if (req.method === "HEAD") {
      res.end();
      return status;
    }
    if (kind === "truncate") {
      // Half the body, then the connection drops: the client sees a short body.
      res.write(slice.subarray(0, Math.floor(slice.byteLength / 2)), () => {
        setTimeout(() => res.socket?.destroy(), 20);
      });
      return status;
    }
    res.end(slice);
    return status;
  }
}
