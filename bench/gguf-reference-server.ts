/**
 * The reference of the GGUF benchmark (bench/gguf.bench.ts): node-llama-cpp served one request at
 * a time, as a Node user would write it: a plain `node:http` server, one model, one context with
 * one sequence, requests answered in arrival order. It speaks the slice of OpenAI's
 * `/v1/completions` the benchmark uses (prompt, max_tokens, temperature, stream, ignore_eos), with
 * server-sent events and a final usage chunk.
 *
 *   node dist/bench/gguf-reference-server.js MODEL.gguf PORT THREADS
 */
import http from "node:http";
import { getLlama, LlamaLogLevel, TokenBias, type Token } from "node-llama-cpp";

const [file, portArg, threadsArg] = process.argv.slice(2);
if (!file || !portArg) {
  console.error("usage: gguf-reference-server.js MODEL.gguf PORT [THREADS]");
  process.exit(2);
}
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
const context = await model.createContext({ sequences: 1, contextSize: Math.min(model.trainContextSize, 1024), threads: Number(threadsArg ?? 1) });
const sequence = context.getSequence();
const noEnd = new TokenBias(model.tokenizer);
for (const t of [model.tokens.eos, model.tokens.eot]) if (t !== null) noEnd.set(t, "never");

let queue = Promise.resolve();

async function complete(body: { prompt: string; max_tokens?: number; temperature?: number; ignore_eos?: boolean }, res: http.ServerResponse): Promise<void> {
  const tokens = model.tokenize(body.prompt, true);
  const bos = model.tokens.bos;
  const input = bos !== null && model.tokens.shouldPrependBosToken ? [bos, ...tokens] : tokens;
  const max = body.max_tokens ?? 16;
  await sequence.clearHistory();
  res.writeHead(200, { "Content-Type": "text/event-stream" });
  let n = 0;
  const out: Token[] = [];
  for await (const token of sequence.evaluate(input, { temperature: body.temperature ?? 0, ...(body.ignore_eos ? { tokenBias: noEnd } : {}) })) {
    if (!body.ignore_eos && model.isEogToken(token)) break;
    out.push(token);
    n++;
    const text = model.detokenize([token], false, out.slice(0, -1));
    res.write(`data: ${JSON.stringify({ object: "text_completion", choices: [{ index: 0, text, finish_reason: null }] })}\n\n`);
    if (n >= max) break;
  }
  res.write(`data: ${JSON.stringify({ object: "text_completion", choices: [{ index: 0, text: "", finish_reason: "length" }], usage: { prompt_tokens: input.length, completion_tokens: n, total_tokens: input.length + n } })}\n\n`);
  res.end("data: [DONE]\n\n");
}

http
  .createServer((req, res) => {
    if (req.url === "/health") return void res.end("ok");
    let raw = "";
    req.on("data", (d: Buffer) => (raw += d.toString()));
    req.on("end", () => {
      // One request at a time: each waits for the one before it.
      queue = queue.then(() => complete(JSON.parse(raw) as never, res)).catch((e: Error) => void res.end(`error: ${e.message}`));
    });
  })
  .listen(Number(portArg), "127.0.0.1", () => console.log("ready"));
