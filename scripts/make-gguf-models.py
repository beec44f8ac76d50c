#!/usr/bin/env python3
"""Writes tiny GGUF language models with random weights and real tokenizers.

    python3 scripts/make-gguf-models.py --llama-src DIR --out DIR

DIR of --llama-src is llama.cpp's source (node-llama-cpp's npm package bundles it as a git bundle;
src/tools/make-gguf-models.ts clones it and calls this script). Its `gguf-py` writes the files and
its `models/ggml-vocab-*.gguf` give the vocabularies: real tokenizers (SentencePiece or BPE, with
their merges, scores, token types and special tokens), copied key by key into each model.

Each model is a Llama-architecture decoder, 2 blocks of width 64, with weights drawn from a
generator seeded by the model's name, so that every machine writes the same bytes. The weights are
random: the text they generate means nothing, but every code path of a real model runs (the
tokenizer, the chat template, attention with a KV cache, grouped-query heads, the sampler).

Written under --out:
    tiny-llama/tiny-llama-F32.gguf    Llama 2's 32000-token SentencePiece vocabulary, F32 weights
    tiny-llama/tiny-llama-Q8_0.gguf   the same model quantised to Q8_0 (a multi-quantisation folder)
    tiny-llama3/tiny-llama3.gguf      Llama 3's 128256-token BPE vocabulary, F16, Llama 3.1's template
With --bench, only the benchmark's model:
    bench-llama/bench-llama-Q8_0.gguf 4 blocks of width 512, Llama 2's vocabulary, Q8_0

Only Debian's python3-numpy is needed beside the llama.cpp source.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

# The test models' shape: 2 blocks of width 64, grouped-query attention (4 heads, 2 of keys and
# values) as current models have.
TINY = dict(width=64, blocks=2, heads=4, kv_heads=2, ffn=128, context=1024)
# The benchmark model's: small as language models go (about 40M parameters, most of them the
# embeddings and the output projection), large enough that reading its weights is most of a
# decode step's cost when it runs one sequence at a time, as with real models.
BENCH = dict(width=512, blocks=4, heads=8, kv_heads=4, ffn=1408, context=1024)
RMS_EPS = 1e-5
ROPE_BASE = 10000.0

# Keys of a vocabulary file that describe the tokenizer (everything under tokenizer.ggml.).
TOKENIZER_PREFIX = "tokenizer.ggml."


def seeded(name: str) -> np.random.RandomState:
    digest = hashlib.sha256(name.encode()).digest()
    return np.random.RandomState(int.from_bytes(digest[:4], "little"))


def copy_tokenizer(gguf, reader, writer) -> tuple[int, list[str]]:
    """Copies the vocabulary file's tokenizer keys; returns the vocabulary size and its tokens."""
    tokens: list[str] = []
    for key, field in reader.fields.items():
        if not key.startswith(TOKENIZER_PREFIX):
            continue
        value = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, vtype, sub_type=field.types[-1])
            if key == TOKENIZER_PREFIX + "tokens":
                tokens = value
        else:
            writer.add_key_value(key, value, vtype)
    if not tokens:
        raise SystemExit(f"{reader.path}: no tokenizer.ggml.tokens")
    return len(tokens), tokens


def write_model(gguf, vocab_file: Path, out: Path, name: str, chat_template: str | None, weight_type, shape=TINY) -> None:
    WIDTH, BLOCKS, HEADS, KV_HEADS, FFN, CONTEXT = (shape[k] for k in ("width", "blocks", "heads", "kv_heads", "ffn", "context"))
    reader = gguf.GGUFReader(vocab_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name(name)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(WIDTH)
    writer.add_block_count(BLOCKS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_rope_dimension_count(WIDTH // HEADS)
    writer.add_rope_freq_base(ROPE_BASE)
    file_type = {
        gguf.GGMLQuantizationType.F32: gguf.LlamaFileType.ALL_F32,
        gguf.GGMLQuantizationType.F16: gguf.LlamaFileType.MOSTLY_F16,
        gguf.GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    }[weight_type]
    writer.add_file_type(file_type)
    vocab, _ = copy_tokenizer(gguf, reader, writer)
    writer.add_vocab_size(vocab)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    rng = seeded(name)
    head = WIDTH // HEADS

    def matrix(rows: int, cols: int, scale: float) -> np.ndarray:
        # numpy shape (rows, cols) is GGUF's [cols, rows]: ggml's first dimension is the innermost.
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def add(tname: str, data: np.ndarray, quantise: bool = True) -> None:
        if not quantise or weight_type == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(tname, data.astype(np.float32))
        elif weight_type == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(tname, data.astype(np.float16))
        else:
            q = gguf.quants.quantize(data, weight_type)
            writer.add_tensor(tname, q, raw_shape=q.shape, raw_dtype=weight_type)

    # An output projection of its own: tied to the embeddings, a random model mostly repeats its
    # last token; untied, greedy decoding wanders through the vocabulary as the prompt varies.
    add("token_embd.weight", matrix(vocab, WIDTH, 1.0))
    add("output_norm.weight", np.ones(WIDTH, dtype=np.float32), quantise=False)
    # Rows of zeros for tokens that are not text (unknown, control, byte-fallback pieces): their
    # logit is 0 while the most likely text token's is far above, so greedy decoding writes
    # valid UTF-8 text (llama-server fails a stream whose output is not) and never ends early.
    output = matrix(vocab, WIDTH, 2.0 / np.sqrt(WIDTH))
    types = reader.fields.get(TOKENIZER_PREFIX + "token_type")
    if types is not None:
        NORMAL, USER_DEFINED = 1, 4
        for t, kind in enumerate(types.contents()):
            if kind not in (NORMAL, USER_DEFINED):
                output[t, :] = 0.0
    add("output.weight", output)
    for b in range(BLOCKS):
        p = f"blk.{b}."
        add(p + "attn_norm.weight", np.ones(WIDTH, dtype=np.float32), quantise=False)
        add(p + "attn_q.weight", matrix(HEADS * head, WIDTH, 0.5 / np.sqrt(WIDTH)))
        add(p + "attn_k.weight", matrix(KV_HEADS * head, WIDTH, 0.5 / np.sqrt(WIDTH)))
        add(p + "attn_v.weight", matrix(KV_HEADS * head, WIDTH, 1.0 / np.sqrt(WIDTH)))
        add(p + "attn_output.weight", matrix(WIDTH, HEADS * head, 1.0 / np.sqrt(WIDTH)))
        add(p + "ffn_norm.weight", np.ones(WIDTH, dtype=np.float32), quantise=False)
        add(p + "ffn_gate.weight", matrix(FFN, WIDTH, 1.0 / np.sqrt(WIDTH)))
        add(p + "ffn_up.weight", matrix(FFN, WIDTH, 1.0 / np.sqrt(WIDTH)))
        add(p + "ffn_down.weight", matrix(WIDTH, FFN, 1.0 / np.sqrt(FFN)))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)  # whole or absent: a killed run leaves no half-written model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-src", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--bench", action="store_true", help="write the benchmark model instead (bench-llama/bench-llama-Q8_0.gguf)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.llama_src / "gguf-py"))
    import gguf  # noqa: E402  (from the llama.cpp source given)

    models = args.llama_src / "models"
    templates = models / "templates"
    llama31 = (templates / "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text(encoding="utf-8")
    # Llama 2's vocabulary with Mistral's [INST] template (real, from the same source tree).
    inst = (templates / "mistralai-Mistral-Nemo-Instruct-2407.jinja").read_text(encoding="utf-8")
    Q = gguf.GGMLQuantizationType
    if args.bench:
        write_model(gguf, models / "ggml-vocab-llama-spm.gguf", args.out / "bench-llama" / "bench-llama-Q8_0.gguf", "bench-llama", inst, Q.Q8_0, BENCH)
        return
    write_model(gguf, models / "ggml-vocab-llama-spm.gguf", args.out / "tiny-llama" / "tiny-llama-F32.gguf", "tiny-llama", inst, Q.F32)
    write_model(gguf, models / "ggml-vocab-llama-spm.gguf", args.out / "tiny-llama" / "tiny-llama-Q8_0.gguf", "tiny-llama", inst, Q.Q8_0)
    write_model(gguf, models / "ggml-vocab-llama-bpe.gguf", args.out / "tiny-llama3" / "tiny-llama3.gguf", "tiny-llama3", llama31, Q.F16)


if __name__ == "__main__":
    main()
