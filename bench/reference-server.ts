/**
 * The serving benchmark's baseline: an inference server written the way a Node user would write
 * one, with node:http, JSON bodies and onnxruntime-node, one `session.run` per request. It speaks
 * the KServe v2 JSON infer route for one model, so the same load hits both servers.
 *
 *   node dist/bench/reference-server.js MODEL.onnx NAME PORT [THREADS]
 */
import http from "node:http";
import * as ort from "onnxruntime-node";

const [file, name, portText, threads = "1"] = process.argv.slice(2);
const session = await ort.InferenceSession.create(file!, { intraOpNumThreads: Number(threads), interOpNumThreads: 1 });

const server = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== `/v2/models/${name}/infer`) {
    res.writeHead(404).end();
    return;
  }
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", async () => {
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { inputs: Array<{ name: string; shape: number[]; data: number[] }> };
      const feeds: Record<string, ort.Tensor> = {};
      for (const t of body.inputs) feeds[t.name] = new ort.Tensor("float32", Float32Array.from(t.data.flat(Infinity) as number[]), t.shape);
      const out = await session.run(feeds);
      const outputs = Object.entries(out).map(([n, t]) => ({ name: n, datatype: "FP32", shape: t.dims, data: Array.from(t.data as Float32Array) }));
      res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ model_name: name, outputs }));
    } catch (e) {
      res.writeHead(400, { "Content-Type": "application/json" }).end(JSON.stringify({ error: (e as Error).message }));
    }
  });
});
server.listen(Number(portText), "127.0.0.1", () => process.send?.("ready"));
