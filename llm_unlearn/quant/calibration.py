"""Calibration text for GPTQ and AWQ: where it comes from, how it is sampled, and its record.

Sources: `generic` (the public-domain text shipped beside this module, `calibration.txt`: the
first chapters of Jane Austen's "Pride and Prejudice", 1813, taken from Debian's
r-cran-janeaustenr package), `retain` (the run's retain split), `forget` (the forget split:
only when asked for explicitly, since calibrating on the text being unlearned can leak it back
into the quantized model) or a text file. The default never touches forget text.

Sampling: the texts are joined with blank lines and tokenized once (no special tokens); the
calibration set is `samples` windows of `seq_len` tokens starting at distinct offsets drawn with
`random.Random(seed)`, so the same record always gives the same token ids.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from llm_unlearn.errors import UserError

GENERIC_TEXT = Path(__file__).with_name("calibration.txt")
SOURCES = ("generic", "retain", "forget")


@dataclass(frozen=True)
class Calibration:
    """Token windows for calibrated quantizers, the tokenizer that made them, and their record."""

    input_ids: tuple[tuple[int, ...], ...]
    tokenizer: PreTrainedTokenizerBase
    source: str
    seed: int

    def record(self) -> dict[str, Any]:
        """What a result stores: source, samples, seq_len, seed and a hash of the token ids."""
        digest = hashlib.sha256(json.dumps(self.input_ids).encode()).hexdigest()[:16]
        return {
            "source": self.source,
            "samples": len(self.input_ids),
            "seq_len": len(self.input_ids[0]),
            "seed": self.seed,
            "sha256": digest,
        }


def sample_windows(ids: list[int], samples: int, seq_len: int, seed: int) -> list[list[int]]:
    """`samples` windows ids[o : o + seq_len] at distinct offsets o drawn from 0..len(ids) - seq_len."""
    starts = len(ids) - seq_len + 1
    if starts < samples:
        raise UserError(
            f"calibration: the text has {len(ids)} tokens, too few for {samples} distinct windows of "
            f"{seq_len}; lower calibration.samples or calibration.seq_len, or give more text"
        )
    offsets = sorted(random.Random(seed).sample(range(starts), samples))
    return [ids[o : o + seq_len] for o in offsets]


def build_calibration(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, source: str, samples: int, seq_len: int, seed: int
) -> Calibration:
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    windows = sample_windows(ids, samples, seq_len, seed)
    return Calibration(tuple(tuple(w) for w in windows), tokenizer, source, seed)


def calibration_texts(source: str, forget: list[str], retain: list[str]) -> list[str]:
    """The texts of a calibration source: generic, retain, forget, or a text file's path."""
    if source == "generic":
        return [GENERIC_TEXT.read_text()]
    if source == "retain":
        return retain
    if source == "forget":
        return forget
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"calibration.source: {source!r} is not {', '.join(SOURCES)} or a text file")
    return [path.read_text()]
