"""data/collate.py: chunking into windows, padding, the seeded forget/retain pairing and the collator."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from llm_unlearn.data.collate import (
    ForgetRetainDataset,
    LMDataset,
    UnlearningCollator,
    chunk_texts,
    pad_batch,
)

_WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"]


def _tokenizer(bos: bool) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<s>", "</s>", *_WORDS])}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    if bos:
        tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.mark.parametrize("bos", [True, False])
def test_chunking_respects_max_length_and_keeps_all_tokens(bos: bool) -> None:
    tokenizer = _tokenizer(bos)
    texts = ["the cat sat on a mat and the dog ran", "dog ran", "the cat sat on the mat"]
    windows = chunk_texts(texts, tokenizer, max_length=4)
    assert all(2 <= len(w) <= 4 for w in windows)
    expected = [t for ids in tokenizer(texts)["input_ids"] for t in (*ids, tokenizer.eos_token_id)]
    assert [t for w in windows for t in w] == expected
    assert windows[0][0] == (tokenizer.bos_token_id if bos else tokenizer.convert_tokens_to_ids("the"))


def test_chunking_drops_windows_with_nothing_to_predict() -> None:
    tokenizer = _tokenizer(bos=False)
    eos = tokenizer.eos_token_id
    # "" is a lone EOS; "the cat sat" + EOS cut at 3 leaves EOS alone
    assert chunk_texts(["", "the cat sat", "dog ran"], tokenizer, 3) == [[4, 5, 6], [10, 11, eos]]


def test_pad_batch_masks_labels_exactly_on_padding() -> None:
    pad = 3  # the pad id doubles as EOS, as with many causal LMs: a real EOS must stay a label
    batch = pad_batch([[5, 6, 3], [7], [8, 9]], pad_id=pad, prefix="forget_")
    assert batch["forget_input_ids"].tolist() == [[5, 6, 3], [7, 3, 3], [8, 9, 3]]
    assert batch["forget_attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["forget_labels"].tolist() == [[5, 6, 3], [7, -100, -100], [8, 9, -100]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_retain_pairing_is_seeded_cycles_and_covers_all() -> None:
    forget = [[i, i] for i in range(7)]
    retain = [[100 + j, 0] for j in range(3)]
    dataset = ForgetRetainDataset(forget, retain, seed=4)
    picks = [dataset[i]["retain_input_ids"][0] - 100 for i in range(len(dataset))]
    assert len(dataset) == 7 and [dataset[i]["forget_index"] for i in range(7)] == list(range(7))
    assert sorted(picks[:3]) == [0, 1, 2] and picks[3:6] == picks[:3] and picks[6] == picks[0]
    assert picks == [
        ForgetRetainDataset(forget, retain, seed=4)[i]["retain_input_ids"][0] - 100 for i in range(7)
    ]
    assert "retain_input_ids" not in ForgetRetainDataset(forget, None)[0]


def test_set_epoch_continues_the_retain_cycle() -> None:
    retain = [[j, j] for j in range(10)]
    dataset = ForgetRetainDataset([[1, 2]] * 4, retain, seed=0)
    seen = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        seen += [dataset[i]["retain_input_ids"][0] for i in range(4)]
    assert sorted(seen[:10]) == list(range(10)) and seen[10:] == seen[:2]


def test_collator_pairs_forget_and_retain_and_serves_plain_lm_items() -> None:
    collator = UnlearningCollator(pad_id=0)
    dataset = ForgetRetainDataset([[1, 2, 3], [4]], [[5, 6]], seed=0)
    batch = collator([dataset[1], dataset[0]])
    assert batch["forget_index"].tolist() == [1, 0]
    assert batch["forget_labels"].tolist() == [[4, -100, -100], [1, 2, 3]]
    assert batch["retain_input_ids"].tolist() == [[5, 6], [5, 6]]
    plain = collator([LMDataset([[1, 2], [3]])[i] for i in range(2)])
    assert sorted(plain) == ["attention_mask", "input_ids", "labels"]
    assert plain["labels"].tolist() == [[1, 2], [3, -100]]
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        collator([{"labels": [1]}])
    with pytest.raises(ValueError, match="pad_token"):
        UnlearningCollator(pad_id=None)
