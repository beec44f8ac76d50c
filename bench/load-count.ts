/**
 * infer.bench's `load-instructions` child: N loads of one model, one way, run under valgrind's
 * callgrind, whose instruction count (user space) does not move with the machine's noise.
 *
 *   node dist/bench/load-count.js ort|ref N AXON_HOME REFERENCE FILE
 *
 * ort: onnxruntime-node's InferenceSession.create(FILE) and release; ref: runtime.load(REFERENCE)
 * (Axon resolve, manifest, session) and dispose; 1 intra-op thread either way. The difference
 * between N = 4 and N = 1 is three steady-state loads (imports, JIT and first-use costs cancel).
 */
import * as ort from "onnxruntime-node";
import { Axon, Runtime } from "../src/index.js";

const [kind, n, home, reference, file] = process.argv.slice(2);
const axon = new Axon({ home: home! });
const once = kind === "ort"
  ? async () => (await ort.InferenceSession.create(file!, { intraOpNumThreads: 1, interOpNumThreads: 1 })).release()
  : async () => (await new Runtime({ axon }).load(reference!, { intraOpThreads: 1, interOpThreads: 1 })).dispose();
for (let i = 0; i < Number(n); i++) await once();
await axon.close();
