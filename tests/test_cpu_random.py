"""The straight-line Threefry lowering gives JAX's random numbers bit for bit."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import cpu_random

# Known-answer vectors of Threefry-2x32 (20 rounds) from the Random123 distribution.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]

# Small draws take the straight-line path, large ones (> STRAIGHT_LINE_MAX_ELEMENTS) the loop.
DRAWS = """
import jax, numpy as np
key = jax.random.PRNGKey(42)
draws = [jax.random.uniform(key, (7,)), jax.random.normal(jax.random.split(key, 3)[1], (3, 5)),
         jax.random.randint(jax.random.fold_in(key, 7), (9,), 0, 1000), jax.random.permutation(key, 20),
         jax.jit(jax.vmap(lambda k: jax.random.gumbel(k, (4,))))(jax.random.split(key, 6)),
         jax.random.uniform(key, (3000,)), jax.random.split(key, 700)]
print(";".join(np.asarray(d).tobytes().hex() for d in draws))
split = jax.jit(lambda k: jax.random.split(k, 2)).lower(key).compile().as_text()
print("loop in a small draw:", " while(" in split)
"""


@pytest.mark.parametrize("key, count, expected", KNOWN_ANSWERS)
def test_known_answers(key, count, expected):
    words = [jnp.asarray(np.uint32(v)) for v in (*key, *count)]
    assert [int(w) for w in cpu_random.threefry2x32(*words)] == list(expected)
    looped = [jnp.full((cpu_random.STRAIGHT_LINE_MAX_ELEMENTS + 1,), w) for w in words]
    assert [int(w[-1]) for w in cpu_random.threefry2x32(*looped)] == list(expected)


def test_same_numbers_as_jax_own_lowering_without_its_loop():
    """Plain JAX in one child process, JAX after ``import rl`` in another."""
    assert jax.devices()[0].platform == "cpu"
    plain = subprocess.run([sys.executable, "-c", DRAWS], capture_output=True, text=True, timeout=120, check=True)
    ours = subprocess.run([sys.executable, "-c", "import rl\n" + DRAWS], capture_output=True, text=True, timeout=120,
                          check=True)
    plain_numbers, plain_loop = plain.stdout.strip().splitlines()
    our_numbers, our_loop = ours.stdout.strip().splitlines()
    assert plain_numbers and plain_numbers == our_numbers
    assert plain_loop.endswith("True") and our_loop.endswith("False")
