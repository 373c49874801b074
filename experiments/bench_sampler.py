"""Tokens per second of the KV-cache sampler, against recomputing the prefix at every step and against
Hugging Face transformers GPT-2 ``generate`` at the same configuration, measured in one run.

    python -m experiments.bench_sampler --hf-python .peer-hf/bin/python

All three decode greedily ``--new-tokens`` tokens after a ``--prompt-len``-token prompt for a batch
of ``--batch`` sequences with a randomly initialised model of ``--layers`` layers, width
``--d-model``, ``--heads`` heads and the character vocabulary (rl.lm.tokenizer); tokens/s = batch x
new tokens / seconds (every sequence decodes all its tokens; none stops early).

- **KV cache** (``rl.lm.sampler.make_sampler``): one-pass prefill, then one token per step attending
  over the cache; on one device, and with the batch split over all local devices (``shard_batch``).
- **Recompute** (``make_recompute_sampler``): the whole prefix through the model at every step.
- **transformers GPT-2** (``experiments/peers/hf_gpt2_generate.py``, run with ``--hf-python``, a venv
  with torch and transformers): ``GPT2LMHeadModel`` of the same layers, width, heads, vocabulary and
  context, ``generate`` with its KV cache, ``--threads`` torch threads (default: the cores).

Ours compile apart (reported) and make one untimed warm-up call; every command is timed
``--repeats`` times, alternating (ours, recompute, peer, ...); medians are reported with ratios.
Writes ``bench.json`` to ``--out`` and prints a table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from experiments.common import cli, format_table
from models.transformer import Transformer, TransformerConfig
from rl import records
from rl.errors import ConfigError
from rl.lm.sampler import make_recompute_sampler, make_sampler, shard_batch
from rl.lm.tokenizer import CharTokenizer

PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "hf_gpt2_generate.py"


@dataclasses.dataclass(frozen=True)
class Args:
    layers: int = 4
    d_model: int = 128
    heads: int = 4
    batch: int = 256
    prompt_len: int = 8
    new_tokens: int = 56
    repeats: int = 5
    recompute_repeats: int = 1
    """timed calls of the (slow) recompute sampler"""
    hf_python: str | None = None
    """Python of a venv with torch and transformers (README: Benchmark); omit to skip the peer"""
    threads: int = 0
    """torch threads of the peer (0: the cores this process may use)"""
    out: str = "runs/bench_sampler"

    def validate(self) -> None:
        for name in ("layers", "d_model", "heads", "batch", "prompt_len", "new_tokens", "repeats", "recompute_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.hf_python is not None and not Path(self.hf_python).exists():
            raise ConfigError("hf_python", f"{self.hf_python} does not exist")


def timed(fn: Any) -> float:
    began = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - began


def run_peer(args: Args, vocab: int) -> dict[str, Any]:
    settings = {"layers": args.layers, "d_model": args.d_model, "heads": args.heads, "vocab": vocab,
                "context": args.prompt_len + args.new_tokens, "batch": args.batch, "prompt_len": args.prompt_len,
                "new_tokens": args.new_tokens, "repeats": 1, "threads": args.threads or len(os.sched_getaffinity(0))}
    done = subprocess.run([args.hf_python, str(PEER_SCRIPT), json.dumps(settings)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the transformers peer failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(args: Args) -> dict[str, Any]:
    args.validate()
    tokenizer = CharTokenizer()
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, num_layers=args.layers, d_model=args.d_model,
                               num_heads=args.heads, max_len=args.prompt_len + args.new_tokens)
    model = Transformer(config)
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, tokenizer.vocab_size, (args.batch, args.prompt_len)).astype(np.int32)
    mask = np.ones_like(prompts, bool)
    params = model.init(jax.random.PRNGKey(0), prompts[:1], np.zeros((1, args.prompt_len), np.int32))
    key = jax.random.PRNGKey(1)
    kv = make_sampler(model, args.new_tokens, temperature=0.0)
    recompute = make_recompute_sampler(model, args.new_tokens)
    mesh = Mesh(np.array(jax.local_devices()), ("batch",))
    sharded_inputs = shard_batch((prompts, mask), mesh, "batch") if args.batch % len(jax.local_devices()) == 0 else None
    # the KV sampler never stops early here: its completions are masked after EOS but still decoded
    commands = {"kv_cache": lambda: kv(params, prompts, mask, key).tokens,
                "recompute": lambda: recompute(params, prompts, mask)}
    if sharded_inputs is not None and len(jax.local_devices()) > 1:
        commands["kv_cache_sharded"] = lambda: kv(params, *sharded_inputs, key).tokens
    compile_seconds = {name: timed(fn) for name, fn in commands.items()}  # first call: compile + run
    for fn in commands.values():
        timed(fn)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    peer: list[dict[str, Any]] = []
    for i in range(args.repeats):
        for name, fn in commands.items():
            if name != "recompute" or i < args.recompute_repeats:
                seconds[name].append(timed(fn))
        if args.hf_python:
            peer.append(run_peer(args, tokenizer.vocab_size))
    tokens = args.batch * args.new_tokens
    result: dict[str, Any] = {"settings": dataclasses.asdict(args), "devices": len(jax.local_devices()),
                              "compile_and_first_call_seconds": compile_seconds}
    for name, values in seconds.items():
        result[name] = {"tokens_per_second": tokens / statistics.median(values), "seconds": values}
    if peer:
        result["transformers_gpt2"] = {"tokens_per_second": statistics.median(p["tokens_per_second"] for p in peer),
                                       "runs": peer}
    best = max(result[n]["tokens_per_second"] for n in seconds if n.startswith("kv_cache"))
    result["kv_over_recompute"] = result["kv_cache"]["tokens_per_second"] / result["recompute"]["tokens_per_second"]
    if peer:
        result["kv_over_transformers"] = best / result["transformers_gpt2"]["tokens_per_second"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records.write_json(out / "bench.json", result)
    rows = [{"sampler": name, "tokens/s": f"{result[name]['tokens_per_second']:,.0f}"}
            for name in [*seconds, *(["transformers_gpt2"] if peer else [])]]
    print(format_table(rows, ["sampler", "tokens/s"]))
    print(f"KV cache / recompute: {result['kv_over_recompute']:.1f}x", end="")
    print(f"; best KV cache / transformers GPT-2: {result['kv_over_transformers']:.2f}x" if peer else "")
    return result


if __name__ == "__main__":
    cli(main, Args, __doc__)
