"""Verifiable tasks: problem generators with disjoint train and held-out splits, exact verifiers, and
the supervised warm-start targets.

- ``addition`` / ``multiplication``: prompt ``"{a}+{b}="`` / ``"{a}*{b}="``, answer the decimal
  result followed by the end-of-sequence token. Operand ranges are fields (default multiplication:
  a in 100-999, b in 10-99). A pair is held out when a fixed hash of ``(a, b)`` falls in the held-out
  fraction, so the splits are disjoint and the same for every seed.
- ``countdown``: prompt ``"{n1},{n2},...>{target}:"``; the answer is an arithmetic expression
  (``+ - * /``, parentheses) that uses every given number exactly once and equals the target.
  Reward 1.0 if correct, 0.1 if it is a well-formed expression but wrong, 0 otherwise (the TinyZero
  convention). Problems are made by combining the numbers with random operations (exact division
  only), so every problem has a solution, which is also the warm-start target.

Rewards are computed in Python from decoded strings (``Task.rewards``).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np

SPLITS = ("train", "test")


def _held_out(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """A fixed pseudo-random choice of pairs (a multiplicative hash), the same for every seed."""
    h = (a.astype(np.uint64) * np.uint64(2654435761) + b.astype(np.uint64) * np.uint64(40503)) % np.uint64(1_000_003)
    return h < np.uint64(int(fraction * 1_000_003))


@dataclasses.dataclass(frozen=True)
class Problem:
    prompt: str
    target: str  # the warm-start answer (one correct answer)
    numbers: tuple[int, ...] = ()  # countdown: the numbers to use
    value: int = 0  # the exact result (countdown: the target)


@dataclasses.dataclass(frozen=True)
class Arithmetic:
    """``a <op> b`` with a in ``[a_min, a_max]`` and b in ``[b_min, b_max]``."""

    op: str = "*"
    a_min: int = 100
    a_max: int = 999
    b_min: int = 10
    b_max: int = 99
    held_out_fraction: float = 0.05
    single_answer = True
    """every problem has one correct completion (the result and EOS), so a learner can score
    completions against the answer tokens in JAX instead of calling ``rewards``"""

    def validate(self) -> None:
        if self.op not in "+*":
            raise ValueError(f"op must be '+' or '*', got {self.op!r}")
        if not (0 <= self.a_min <= self.a_max and 0 <= self.b_min <= self.b_max):
            raise ValueError("operand ranges must be non-negative and ordered (a_min <= a_max, b_min <= b_max)")
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {self.held_out_fraction}")

    def _problems(self, a: np.ndarray, b: np.ndarray) -> list[Problem]:
        """The problems ``a[i] <op> b[i]`` with their results as targets."""
        values = a * b if self.op == "*" else a + b
        return [Problem(f"{x}{self.op}{y}=", str(v), value=v) for x, y, v in zip(a.tolist(), b.tolist(), values.tolist(), strict=True)]

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> list[Problem]:
        """``n`` problems of ``split`` (uniform over its pairs)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        out: list[Problem] = []
        while len(out) < n:
            a = rng.integers(self.a_min, self.a_max + 1, 4 * n)
            b = rng.integers(self.b_min, self.b_max + 1, 4 * n)
            keep = _held_out(a, b, self.held_out_fraction) == (split == "test")
            out += self._problems(a[keep], b[keep])
        return out[:n]

    def sample_shorter(self, rng: np.random.Generator, n: int) -> list[Problem]:
        """``n`` training problems whose operands have a uniformly drawn number of digits, from one up
        to the task's (a warm-start curriculum: the shorter products a longer one is built from).
        Held-out pairs of the task's ranges are never drawn."""
        def draw(low: int, high: int, size: int) -> np.ndarray:
            digits = rng.integers(1, len(str(high)) + 1, size)
            lo = np.maximum(10 ** (digits - 1), np.where(digits == len(str(high)), low, 0))
            hi = np.minimum(10**digits - 1, high)
            return lo + (rng.random(size) * (hi - lo + 1)).astype(np.int64)

        out: list[Problem] = []
        while len(out) < n:
            a, b = draw(self.a_min, self.a_max, 4 * n), draw(self.b_min, self.b_max, 4 * n)
            keep = ~_held_out(a, b, self.held_out_fraction)
            out += self._problems(a[keep], b[keep])
        return out[:n]

    def rewards(self, problems: list[Problem], completions: list[str]) -> np.ndarray:
        """1.0 where the completion is exactly the decimal result, else 0."""
        return np.array([float(c.strip() == str(p.value)) for p, c in zip(problems, completions, strict=True)], np.float32)


class _Parser:
    """Recursive-descent parser of ``+ - * /`` and parentheses over non-negative integers (exact)."""

    def __init__(self, text: str):
        self.text, self.pos, self.numbers = text.replace(" ", ""), 0, []

    def parse(self) -> Fraction:
        value = self._sum()
        if self.pos != len(self.text):
            raise ValueError("trailing characters")
        return value

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _sum(self) -> Fraction:
        value = self._product()
        while self._peek() in ("+", "-") and self._peek():
            op = self.text[self.pos]
            self.pos += 1
            value = value + self._product() if op == "+" else value - self._product()
        return value

    def _product(self) -> Fraction:
        value = self._atom()
        while self._peek() in ("*", "/") and self._peek():
            op = self.text[self.pos]
            self.pos += 1
            right = self._atom()
            if op == "/" and right == 0:
                raise ValueError("division by zero")
            value = value * right if op == "*" else value / right
        return value

    def _atom(self) -> Fraction:
        if self._peek() == "(":
            self.pos += 1
            value = self._sum()
            if self._peek() != ")":
                raise ValueError("missing )")
            self.pos += 1
            return value
        start = self.pos
        while self._peek().isdigit():
            self.pos += 1
        if start == self.pos:
            raise ValueError("expected a number")
        number = int(self.text[start:self.pos])
        self.numbers.append(number)
        return Fraction(number)


def evaluate_expression(text: str) -> tuple[Fraction, list[int]] | None:
    """The exact value of ``text`` and the numbers it uses, or None if it is not a well-formed expression."""
    parser = _Parser(text)
    try:
        return parser.parse(), parser.numbers
    except (ValueError, IndexError):
        return None


@dataclasses.dataclass(frozen=True)
class Countdown:
    """Combine ``num_numbers`` numbers in ``[1, max_number]`` into the target with + - * /."""

    num_numbers: int = 3
    max_number: int = 20
    max_target: int = 200
    held_out_fraction: float = 0.1
    single_answer = False
    """many expressions reach the target: completions are scored by ``rewards`` in Python"""

    def validate(self) -> None:
        if self.num_numbers < 2:
            raise ValueError(f"num_numbers must be >= 2, got {self.num_numbers}")
        if self.max_number < 1 or self.max_target < 1:
            raise ValueError("max_number and max_target must be >= 1")

    def _one(self, rng: np.random.Generator) -> Problem | None:
        numbers = rng.integers(1, self.max_number + 1, self.num_numbers).tolist()
        terms = [(str(x), Fraction(x)) for x in numbers]
        while len(terms) > 1:
            i, j = rng.choice(len(terms), 2, replace=False)
            (left, lv), (right, rv) = terms[i], terms[j]
            op = "+-*/"[rng.integers(4)]
            if op == "/" and (rv == 0 or (lv / rv).denominator != 1):
                op = "+"
            if op == "-" and lv < rv:
                op = "+"
            value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else lv}[op]
            terms = [t for k, t in enumerate(terms) if k not in (i, j)] + [(f"({left}{op}{right})", value)]
        expression, value = terms[0]
        if value.denominator != 1 or not 0 < value <= self.max_target:
            return None
        expression = expression[1:-1] if expression.startswith("(") else expression
        target = int(value)
        return Problem(f"{','.join(map(str, numbers))}>{target}:", expression, tuple(numbers), target)

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> list[Problem]:
        """``n`` solvable problems of ``split`` (held out by a hash of the sorted numbers and the target)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        out: list[Problem] = []
        while len(out) < n:
            problem = self._one(rng)
            if problem is None:
                continue
            key = sum(x * 31 ** k for k, x in enumerate(sorted(problem.numbers)))
            if bool(_held_out(np.array([key]), np.array([problem.value]), self.held_out_fraction)[0]) == (split == "test"):
                out.append(problem)
        return out

    def reward(self, problem: Problem, completion: str) -> float:
        """1.0 correct; 0.1 a well-formed expression that is wrong; 0 otherwise."""
        parsed = evaluate_expression(completion.strip())
        if parsed is None:
            return 0.0
        value, used = parsed
        return 1.0 if sorted(used) == sorted(problem.numbers) and value == problem.value else 0.1

    def rewards(self, problems: list[Problem], completions: list[str]) -> np.ndarray:
        return np.array([self.reward(p, c) for p, c in zip(problems, completions, strict=True)], np.float32)


TASKS = {"addition": Arithmetic(op="+", a_min=0, a_max=9999, b_min=0, b_max=9999),
         "multiplication": Arithmetic(), "countdown": Countdown()}


def make_task(name: str) -> Arithmetic | Countdown:
    """The task ``name`` with its default ranges."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
