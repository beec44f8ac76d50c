/**
 * KServe v2's model repository extension: the index of registered models with their states, and
 * unload (the registration stays) and load again.
 */
import type { ModelEntry } from "../../core/model-table.js";
import type { KserveRepositoryEntry } from "../../protocol/kserve.js";
import type { HttpRouter } from "./router.js";
import type { Serving } from "./serving.js";

const repositoryState = (e: ModelEntry): KserveRepositoryEntry["state"] => (e.state === "ready" ? "READY" : e.state === "failed" ? "UNAVAILABLE" : (e.state.toUpperCase() as KserveRepositoryEntry["state"]));

export function registerRepositoryRoutes(router: HttpRouter, { table }: Serving): void {
  router.route("post", "/v2/repository/index", "api", true, () => ({
    body: table.list().map((e): KserveRepositoryEntry => ({ name: e.name, version: e.version, state: repositoryState(e), reason: e.error ?? "" })),
  }));
  router.route("post", "/v2/repository/models/:name/load", "admin", true, async (ctx) => {
    const e = await table.load(ctx.params[0]!);
    return { body: { name: e.name, version: e.version, state: e.state } };
  });
  router.route("post", "/v2/repository/models/:name/unload", "admin", true, async (ctx) => {
    const e = await table.unload(ctx.params[0]!);
    return { body: { name: e.name, version: e.version, state: e.state } };
  });
}
