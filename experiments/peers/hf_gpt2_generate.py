"""Peer: Hugging Face transformers GPT-2 ``generate`` (PyTorch, CPU) at a given size, timed alone; run
with the peer venv's Python (torch, transformers), never imported by the project.

    .peer-hf/bin/python experiments/peers/hf_gpt2_generate.py SETTINGS_JSON

``SETTINGS_JSON``: ``{"layers", "d_model", "heads", "vocab", "context", "batch", "prompt_len",
"new_tokens", "repeats", "threads"}``. The model is a randomly initialised ``GPT2LMHeadModel`` of that
size (no download). Generation is greedy with the KV cache (``use_cache=True``), exactly
``new_tokens`` tokens per sequence (``min_new_tokens = max_new_tokens``), after one untimed warm-up
call. Prints one JSON line: ``tokens_per_second`` (median over the repeats; batch x new_tokens per
call), ``seconds`` (each call) and the versions used.
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def main(settings: dict) -> dict:
    import torch
    import transformers

    torch.set_num_threads(settings["threads"])
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=settings["vocab"], n_positions=settings["context"], n_embd=settings["d_model"],
        n_layer=settings["layers"], n_head=settings["heads"], bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    prompts = torch.randint(3, settings["vocab"], (settings["batch"], settings["prompt_len"]))
    mask = torch.ones_like(prompts)
    n = settings["new_tokens"]

    def generate() -> float:
        began = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(prompts, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 use_cache=True, pad_token_id=0)
        assert out.shape == (settings["batch"], settings["prompt_len"] + n)
        return time.perf_counter() - began

    generate()
    seconds = [generate() for _ in range(settings["repeats"])]
    return {"tokens_per_second": settings["batch"] * n / statistics.median(seconds), "seconds": seconds,
            "torch": torch.__version__, "transformers": transformers.__version__}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
