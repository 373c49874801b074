"""Character-level tokenizer with explicit special tokens (padding, beginning and end of sequence)."""

from __future__ import annotations

import numpy as np

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
CHARACTERS = "0123456789+-*/=(),:> "


class CharTokenizer:
    """Maps the characters of ``CHARACTERS`` to ids after the special tokens; anything else is an error."""

    def __init__(self, characters: str = CHARACTERS):
        if len(set(characters)) != len(characters):
            raise ValueError("characters must be distinct")
        self.characters = characters
        self._ids = {ch: i + len(SPECIALS) for i, ch in enumerate(characters)}

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.characters)

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` (no special tokens added)."""
        try:
            return [self._ids[ch] for ch in text]
        except KeyError as error:
            raise ValueError(f"character {error.args[0]!r} is not in the vocabulary {self.characters!r}") from None

    def decode(self, ids) -> str:
        """The text of ``ids`` up to the first end-of-sequence token; padding and BOS are dropped."""
        out = []
        for i in np.asarray(ids).tolist():
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.characters[i - len(SPECIALS)])
        return "".join(out)

    def encode_prompts(self, prompts: list[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded ``(B, length)`` int32 ids (BOS first) and their ``(B, length)`` bool mask of real tokens."""
        encoded = [[BOS, *self.encode(p)] for p in prompts]
        length = length or max(len(e) for e in encoded)
        if max(len(e) for e in encoded) > length:
            raise ValueError(f"a prompt needs {max(len(e) for e in encoded)} tokens, more than length={length}")
        tokens = np.full((len(prompts), length), PAD, np.int32)
        mask = np.zeros((len(prompts), length), bool)
        for row, ids in enumerate(encoded):
            tokens[row, length - len(ids):] = ids
            mask[row, length - len(ids):] = True
        return tokens, mask
