#!/usr/bin/env node
// `npm start`: the main job on embedded defaults, offline. Seeds the local store in $AXON_HOME
// (default ~/.axon) with the bundled demo models, starts MLOS Core on them (HTTP on
// $MLOS_HTTP_PORT, default 8080; gRPC on $MLOS_GRPC_PORT, default 8081; shared-memory IPC named
// $MLOS_IPC_NAME, default mlos), sends one example request and prints it as a curl command
// too, then serves until Ctrl-C. MLOS_START_ONCE=1 stops after the example (for scripts).
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
if (!existsSync(path.join(root, "dist", "src", "server", "serve.js"))) {
  console.error("mlos is not built: run 'npm install' (or 'npm run build') first");
  process.exit(1);
}
const { Axon } = await import("../dist/src/axon/axon.js");
const { seedDemoModels } = await import("../dist/src/axon/demo.js");
const { serve } = await import("../dist/src/server/serve.js");

const axon = new Axon();
const seeded = await seedDemoModels(axon);
console.log(`local store: ${axon.paths.store}`);
for (const s of seeded) console.log(`  packed ${s.reference}  ${s.digest.slice(0, 19)}`);

const port = Number(process.env.MLOS_HTTP_PORT ?? 8080);
const grpcPort = Number(process.env.MLOS_GRPC_PORT ?? 8081);
const ipcName = process.env.MLOS_IPC_NAME ?? "mlos";
let server;
try {
  server = await serve({
    axon,
    httpPort: port,
    grpcPort,
    ipc: ipcName === "off" ? undefined : { name: ipcName },
    models: seeded.map((s) => s.reference),
    onModel: (e) => console.log(`  serving ${e.name}@${e.version} (${e.model?.plugin})`),
  });
} catch (e) {
  console.error(`error[${e.code ?? "INTERNAL"}]: ${e.message}${e.code === "LISTEN_FAILED" ? " (set MLOS_HTTP_PORT or MLOS_GRPC_PORT to another port)" : e.code === "IPC_LISTEN_FAILED" ? " (set MLOS_IPC_NAME to another name, or off)" : ""}`);
  process.exit(1);
}
const base = `http://127.0.0.1:${server.http.port}`;
const body = JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [5.1, 3.5, 1.4, 0.2] }] });
console.log(`\nMLOS Core is listening on ${base} (MLOS v1 /api/v1, KServe v2 /v2, OpenAI /v1, /health, /metrics)`);
if (server.grpc) console.log(`and on gRPC at 127.0.0.1:${server.grpc.port} (KServe v2 inference.GRPCInferenceService, grpc.health.v1; proto/)`);
if (server.ipc) console.log(`and over shared memory at ${server.ipc.path} (import { connect } from "mlos/ipc"; or include/mlos_ipc.h)`);
console.log("");
console.log(`$ curl -s ${base}/v2/models/mlp/infer -d '${body}'`);
const res = await fetch(`${base}/v2/models/mlp/infer`, { method: "POST", body });
console.log(await res.text());
// The bundled language model (random weights: its text is gibberish, its path is the real one).
const chat = JSON.stringify({ model: "tiny-gpt", messages: [{ role: "user", content: "Hello!" }], max_tokens: 8, temperature: 0 });
console.log(`\n$ curl -s ${base}/v1/chat/completions -d '${chat}'`);
const answer = await fetch(`${base}/v1/chat/completions`, { method: "POST", body: chat });
console.log(await answer.text());
if (server.ipc) {
  // The same MLP over shared memory, as a co-located Node process would call it.
  const { connect } = await import("../dist/src/ipc/client.js");
  const client = await connect(server.ipc.path);
  const x = client.tensor("float32", [1, 4], [5.1, 3.5, 1.4, 0.2]);
  const { y } = await client.infer("mlp", { x });
  console.log(`\n# the same over shared memory: (await connect(${JSON.stringify(ipcName)})).infer("mlp", { x }), with connect from "mlos/ipc"`);
  console.log(`y = [${Array.from(y.data, (v) => v.toFixed(4)).join(", ")}]`);
  y.dispose();
  client.close();
}
console.log(`\nAlso: curl -s ${base}/api/v1/models · curl -s ${base}/metrics · npx axon ps`);
if (process.env.MLOS_START_ONCE === "1") {
  await server.close();
  await axon.close();
} else {
  console.log("Serving until Ctrl-C.");
  const stop = async () => {
    await server.close();
    await axon.close();
    process.exit(0);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
