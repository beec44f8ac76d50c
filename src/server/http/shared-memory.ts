/**
 * KServe v2's system shared-memory extension over HTTP, as Triton serves it: register a window of
 * a client's POSIX shared-memory object under a name, unregister one or all, and status. Off
 * unless the server allows client shared memory (see shm/system-shared-memory.ts for how regions
 * are accessed).
 */
import type { Serving } from "../serving.js";
import { parseJson, type HttpRouter } from "./router.js";

export function registerSharedMemoryRoutes(router: HttpRouter, { shm }: Serving): void {
  router.route("post", "/v2/systemsharedmemory/region/:name/register", "api", true, (ctx, body) => {
    const req = parseJson(body, "register");
    shm.register(ctx.params[0], req.key, req.offset, req.byte_size);
    return { body: {} };
  });
  router.route("post", "/v2/systemsharedmemory/region/:name/unregister", "api", true, (ctx) => {
    shm.unregister(ctx.params[0]);
    return { body: {} };
  });
  router.route("post", "/v2/systemsharedmemory/unregister", "api", true, () => {
    shm.unregister();
    return { body: {} };
  });
  router.route("get", "/v2/systemsharedmemory/status", "api", false, () => ({ body: shm.status() }));
  router.route("get", "/v2/systemsharedmemory/region/:name/status", "api", false, (ctx) => ({ body: shm.status(ctx.params[0]) }));
}
