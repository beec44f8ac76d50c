/**
 * KServe v2's model repository extension: the index of registered models with their states, and
 * unload (the registration stays) and load again.
 */
import type { KserveRepositoryEntry } from "../../protocol/kserve.js";
import { repositoryState } from "../kserve-common.js";
import type { HttpRouter } from "./router.js";
import type { Serving } from "../serving.js";

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
