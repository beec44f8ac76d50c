/** Operations routes: `/health` for load balancers and `/metrics` for Prometheus. */
import type { HttpRouter } from "./router.js";
import type { Serving } from "../serving.js";

export function registerOpsRoutes(router: HttpRouter, { table, metrics }: Serving): void {
  router.route("get", "/health", "open", false, () => {
    const models = table.list();
    return { body: { status: "ok", models: models.length, ready: models.filter((e) => e.state === "ready").length } };
  });
  router.route("get", "/metrics", "api", false, async () => {
    const text = await metrics.text();
    return { parts: [Buffer.from(text)], headers: { "Content-Type": metrics.registry.contentType } };
  });
}
