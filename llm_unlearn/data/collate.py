"""Token windows, datasets and the collator that feed target training and unlearning.

Batches are right-padded (training scores every position; generation does its own left padding)
and labels are -100 exactly on padding, or, for a `LabeledWindow`, also where the window says
(a question-answer pair trains on its answer only). Padding is found by position, not by id, so a
pad token that doubles as EOS still leaves the real EOS tokens trained.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

IGNORE_INDEX = -100


class LabeledWindow(list):
    """Token ids that carry their own labels: `labels[t]` is -100 where no loss is taken (a QA pair's
    prompt) and the token id elsewhere. A list of ids, so every dataset and collator takes it where
    it takes a plain window; `pad_batch` uses its labels. Slicing gives a plain list (no labels)."""

    def __init__(self, ids: Sequence[int], labels: Sequence[int]) -> None:
        if len(ids) != len(labels):
            raise ValueError(
                f"a window of {len(ids)} ids has {len(labels)} labels; expected one label per id"
            )
        super().__init__(ids)
        self.labels = list(labels)


def chunk_texts(texts: Sequence[str], tokenizer: Any, max_length: int) -> list[list[int]]:
    """Tokenize each text (with BOS if the tokenizer adds one, and an EOS appended) and cut it into
    windows of at most `max_length` tokens, as MUSE trains on fixed windows of long documents.

    A window of one token (an empty text, or a lone trailing token) is dropped: it has no next
    token to predict, and a batch made only of such rows has no loss at all.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (a token and its successor), got {max_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token; set one before chunking")
    windows = []
    # verbose=False: texts longer than the model's limit are expected, they are cut below
    for ids in tokenizer(list(texts), verbose=False)["input_ids"]:
        if not ids or ids[-1] != eos:  # some tokenizers append EOS themselves
            ids = [*ids, eos]
        windows.extend(ids[start : start + max_length] for start in range(0, len(ids), max_length))
    return [window for window in windows if len(window) > 1]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Right-pad `seqs` -> {prefix+"input_ids", prefix+"attention_mask", prefix+"labels"}, where
    labels are the ids (a `LabeledWindow`'s own labels) with -100 on padding."""
    if not seqs:
        raise ValueError("pad_batch needs at least one sequence")
    ids = torch.full((len(seqs), max(len(s) for s in seqs)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
        labels[row, : len(seq)] = torch.as_tensor(getattr(seq, "labels", seq), dtype=torch.long)
    return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": mask, f"{prefix}labels": labels}


class LMDataset(Dataset):
    """Plain language-model windows, for training a target or retrain model."""

    def __init__(self, seqs: list[list[int]]) -> None:
        self.seqs = seqs

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {"input_ids": self.seqs[index]}


class ForgetRetainDataset(Dataset):
    """One item per forget window, paired with a retain window when a retain set is given.

    Retain windows are taken in a seeded permutation, cycling, so every retain window is used
    before any repeats. Call `set_epoch` (e.g. from a Trainer callback) to continue the cycle in
    the next epoch; otherwise, when retain outnumbers forget, the same retain windows recur every
    epoch and the rest are never seen.
    """

    def __init__(self, forget: list[list[int]], retain: list[list[int]] | None, seed: int = 0) -> None:
        if not forget:
            raise ValueError("the forget set has no windows")
        if retain is not None and not retain:
            raise ValueError("the retain set has no windows; pass None to train without a retain term")
        self.forget = forget
        self.retain = retain
        self.order = random.Random(seed).sample(range(len(retain)), len(retain)) if retain else []
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"forget_input_ids": self.forget[index], "forget_index": index}
        if self.retain is not None:
            position = (self.epoch * len(self.forget) + index) % len(self.order)
            item["retain_input_ids"] = self.retain[self.order[position]]
        return item


class UnlearningCollator:
    """Collate ForgetRetainDataset items into forget_* (+ forget_index) and retain_* tensors, or
    LMDataset items into input_ids/attention_mask/labels, so one collator serves both trainings."""

    def __init__(self, pad_id: int) -> None:
        if pad_id is None:
            raise ValueError("pad_id is None: give the tokenizer a pad_token (e.g. its eos_token) first")
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        first = features[0]
        if "forget_input_ids" in first:
            batch = pad_batch([f["forget_input_ids"] for f in features], self.pad_id, "forget_")
            batch["forget_index"] = torch.tensor([f["forget_index"] for f in features], dtype=torch.long)
            if "retain_input_ids" in first:
                batch.update(pad_batch([f["retain_input_ids"] for f in features], self.pad_id, "retain_"))
            return batch
        if "input_ids" in first:
            return pad_batch([f["input_ids"] for f in features], self.pad_id)
        # transformers.Trainer drops the forget_/retain_ columns unless remove_unused_columns=False
        raise ValueError(
            f"features have keys {sorted(first)}; expected forget_input_ids or input_ids "
            "(with transformers.Trainer, set remove_unused_columns=False)"
        )
