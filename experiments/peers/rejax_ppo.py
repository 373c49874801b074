"""Peer: rejax PPO with a given config on any gymnax id; run with rejax's own Python (it needs
gymnax < 1.0). Prints one JSON line: the final policy's returns over 128 sampled episodes per
seed, and timings.

    .peer-rejax/bin/python experiments/peers/rejax_ppo.py '{"env": "Breakout-MinAtar", ...}' SEEDS
"""

import json
import sys
import time

import jax
from rejax import PPO

config, seeds = json.loads(sys.argv[1]), int(sys.argv[2])
total = config["total_timesteps"]
algo = PPO.create(**config, eval_freq=total, skip_initial_evaluation=True)
train = jax.jit(jax.vmap(algo.train))
tick = time.time()
compiled = train.lower(jax.random.split(jax.random.key(0), seeds)).compile()
compile_seconds = time.time() - tick
tick = time.time()
_, (lengths, returns) = jax.block_until_ready(compiled(jax.random.split(jax.random.key(0), seeds)))
train_seconds = time.time() - tick
final = returns[:, -1]  # [seeds, 128 episodes] of the last evaluation
print(json.dumps({"eval_return_per_seed": final.mean(axis=1).tolist(), "compile_seconds": compile_seconds,
                  "train_seconds": train_seconds, "env_steps_per_second": total * seeds / train_seconds}))
