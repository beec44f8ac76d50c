import { Flags } from "@oclif/core";
import { AxonCommand, parseSize } from "../base.js";
import { adminPolicy, DEFAULT_HOST } from "../../server/admin-policy.js";
import type { ServeFlags } from "../../server/config.js";

export default class Serve extends AxonCommand {
  static override summary = "Start MLOS Core: serve models over HTTP (MLOS v1, KServe v2, OpenAI) and gRPC (KServe v2)";
  static override description =
    "Registers the --model references or paths (installing them from the registries when missing), then serves them until interrupted (Ctrl-C or SIGTERM stop it cleanly). Routes: /api/v1/... (MLOS), /v2/... (KServe v2, JSON and binary tensors), /health, /metrics; gRPC: inference.GRPCInferenceService (KServe v2) and grpc.health.v1. Shared-memory IPC (mlos/ipc, include/mlos_ipc.h) on --ipc-name's socket.";
  static override examples = [
    "<%= config.bin %> serve --demo",
    "<%= config.bin %> serve --model demo/mlp@1",
    "<%= config.bin %> serve --http-port 9000 --model classifier=./my-model --api-key $KEY --admin-key $ADMIN",
    "curl -s localhost:8080/v2/models/mlp/infer -d '{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}]}'",
  ];
  static override flags = {
    config: Flags.string({ char: "c", description: "YAML configuration file (schemas/server-config.schema.json); flags and environment variables override it" }),
    "http-port": Flags.integer({ description: "HTTP port; 0 disables the HTTP door [default: 8080]", min: 0, max: 65535 }),
    host: Flags.string({ description: "address to listen on; another than loopback (0.0.0.0 for all) opens the server to other hosts, whose admin requests then need --admin-key [default: 127.0.0.1]" }),
    "grpc-port": Flags.integer({ description: "gRPC port (KServe v2 inference.GRPCInferenceService, grpc.health.v1); 0 disables the gRPC door [default: 8081]", min: 0, max: 65535 }),
    "allow-shared-memory": Flags.boolean({ description: "let clients register system shared-memory regions (/v2/systemsharedmemory over HTTP, SystemSharedMemory* over gRPC) and name them in inference requests instead of sending tensor bytes [default: off]", allowNo: true }),
    "ipc-name": Flags.string({ description: "the shared-memory IPC door's name (its socket: $XDG_RUNTIME_DIR/mlos/NAME.sock or /tmp/mlos-UID/NAME.sock; a name with a '/' is a socket path); off disables it [default: mlos]" }),
    plugin: Flags.string({ description: "a third-party plugin to load (module path or npm package; repeatable)", multiple: true }),
    model: Flags.string({ char: "m", description: "model to register at start: REF, PATH or NAME=REF (repeatable)", multiple: true }),
    demo: Flags.boolean({ description: "seed the local store with the bundled demo models (demo/mlp, demo/tiny-cnn, demo/embedder, demo/tiny-gpt, demo/tiny-embed) and serve them too, as `npm start` does; offline" }),
    "api-key": Flags.string({ description: "require Authorization: Bearer KEY on every route but health (default $MLOS_API_KEY)", env: "MLOS_API_KEY" }),
    "admin-key": Flags.string({ description: "require this key for register/unregister/load/unload (default $MLOS_ADMIN_KEY)", env: "MLOS_ADMIN_KEY" }),
    "tls-cert": Flags.string({ description: "PEM certificate file (with --tls-key: serve HTTPS)", dependsOn: ["tls-key"] }),
    "tls-key": Flags.string({ description: "PEM private key file", dependsOn: ["tls-cert"] }),
    "max-body": Flags.string({ description: "largest request body [default: 64M]" }),
    "max-queue": Flags.integer({ description: "requests admitted per model before 429 [default: 1024]", min: 1 }),
    "intra-op-threads": Flags.integer({ description: "threads inside one run, per model; parallelism comes from --instances and batching [default: 1]", min: 0 }),
    threads: Flags.integer({ description: "one ONNX Runtime thread pool of N threads shared by every model, instead of --intra-op-threads per model", min: 1 }),
    instances: Flags.integer({ description: "runs in flight per model (default: the manifest's spec.serving.instances, else 4)", min: 1 }),
    batching: Flags.boolean({ description: "dynamic batching; --no-batching turns it off for every model [default: on]", allowNo: true }),
    "max-batch-size": Flags.integer({ description: "batch models whose manifest sets no batching, up to this many rows; 1: do not [default: 1]", min: 1 }),
    "max-queue-delay-us": Flags.integer({ description: "with --max-batch-size: how long the oldest request may wait for others [default: 500]", min: 0 }),
    "max-memory": Flags.string({ description: "memory budget for loaded models (e.g. 2G): idle models are unloaded, least recently used first, and load again on their next request" }),
    "keep-alive": Flags.integer({ description: "unload a model unused for this many seconds (it loads again on its next request)", min: 1 }),
    "pool-size": Flags.string({ description: "shared-memory tensor pool size [default: 256M]" }),
    "max-num-seqs": Flags.integer({ description: "language models: most sequences in a model's running batch [default: 32]", min: 1 }),
    "max-batched-tokens": Flags.integer({ description: "language models: most tokens one step computes, decode and prompt chunks together [default: 256]", min: 16 }),
    gpu: Flags.string({ description: "GGUF models (llama.cpp): run on the CPU (off), a CUDA or Vulkan GPU, or the best that starts (auto); a GPU that cannot be used stops the start with the reason [default: off]", options: ["off", "cuda", "vulkan", "auto"] }),
    "kv-cache-memory": Flags.string({ description: "language models: memory for each model's KV cache (e.g. 256M) [default: 64M]" }),
  };

  async run(): Promise<{ http?: number; grpc?: number; models: string[] }> {
    const { flags } = await this.parse(Serve);
    const { serve } = await import("../../server/serve.js");
    const { loadServerConfig, serveOptionsFrom } = await import("../../server/config.js");
    const config = flags.config ? loadServerConfig(flags.config) : {};
    const axon = await this.axon();
    const demo: string[] = [];
    if (flags.demo) {
      const { seedDemoModels } = await import("../../axon/demo.js");
      for (const s of await seedDemoModels(axon)) {
        this.logToStderr(`packed ${s.reference}  ${s.digest.slice(0, 19)}`);
        demo.push(s.reference);
      }
    }
    const options = serveOptionsFrom(
      {
        httpPort: flags["http-port"],
        grpcPort: flags["grpc-port"],
        allowSharedMemory: flags["allow-shared-memory"],
        ipcName: flags["ipc-name"],
        host: flags.host,
        models: demo.length > 0 || flags.model ? [...demo, ...(flags.model ?? [])] : undefined,
        plugins: flags.plugin,
        apiKey: flags["api-key"],
        adminKey: flags["admin-key"],
        tlsCert: flags["tls-cert"],
        tlsKey: flags["tls-key"],
        maxBody: flags["max-body"],
        maxQueue: flags["max-queue"],
        instances: flags.instances,
        intraOpThreads: flags["intra-op-threads"],
        threads: flags.threads,
        batching: flags.batching,
        maxBatchSize: flags["max-batch-size"],
        maxQueueDelayUs: flags["max-queue-delay-us"],
        maxMemory: flags["max-memory"],
        keepAlive: flags["keep-alive"],
        poolSize: flags["pool-size"],
        maxNumSeqs: flags["max-num-seqs"],
        maxBatchedTokens: flags["max-batched-tokens"],
        kvCacheMemory: flags["kv-cache-memory"],
        gpu: flags.gpu as ServeFlags["gpu"],
      },
      config,
      parseSize,
    );
    const server = await serve({
      ...options,
      axon,
      onModel: (e) => this.logToStderr(`registered ${e.name}@${e.version} (${e.target}): ${e.state}`),
    });
    const models = server.table.list().map((e) => `${e.name}@${e.version}`);
    const scheme = options.tls ? "https" : "http";
    const host = options.host ?? DEFAULT_HOST;
    const admin = adminPolicy(host, options.adminKey !== undefined);
    if (server.http) {
      this.logToStderr(`MLOS Core listening on ${scheme}://${host.includes(":") ? `[${host}]` : host}:${server.http.port} (MLOS v1 /api/v1, KServe v2 /v2, OpenAI /v1, /health, /metrics)`);
      this.logToStderr(admin);
    }
    if (server.grpc) this.logToStderr(`gRPC on ${host.includes(":") ? `[${host}]` : host}:${server.grpc.port}${options.tls ? " (TLS)" : ""} (KServe v2 inference.GRPCInferenceService, grpc.health.v1)`);
    if (server.ipc) this.logToStderr(`shared-memory IPC on ${server.ipc.path} (mlos/ipc, include/mlos_ipc.h)`);
    if (this.jsonEnabled()) process.stdout.write(`${JSON.stringify({ http: server.http?.port, grpc: server.grpc?.port, ipc: server.ipc?.path, host, admin, models })}\n`);
    // The handlers stay installed until the server is closed (a second signal exits at once):
    // with `once`, a library's own signal handler (node-llama-cpp's signal-exit) saw no other
    // listener left when SIGTERM came and re-raised it, killing the process mid-shutdown.
    let stopping = false;
    const signalled = new Promise<void>((resolve) => {
      const onSignal = (signal: NodeJS.Signals) => {
        if (stopping) process.exit(signal === "SIGINT" ? 130 : 143);
        stopping = true;
        resolve();
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
    });
    await signalled;
    this.logToStderr("stopping: unloading models");
    await server.close();
    // Everything the server owns is closed. A client library's leftover handle (a socket of a
    // gRPC session whose client cancelled a stream has been seen to outlive grpc-js's shutdown)
    // must not keep the process alive: exit shortly if the event loop has not ended by itself.
    setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
    return { http: server.http?.port, grpc: server.grpc?.port, models };
  }
}
