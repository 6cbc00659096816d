"""The compact quantized cache (audit/cache.py): codes packed, unchanged tensors not stored,
rebuilt bit for bit, invalidated by a new checkpoint, and an audit resumed from it is identical."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest
import torch
from conftest import tiny_llama

from llm_unlearn import filehash
from llm_unlearn.audit import cache
from llm_unlearn.audit.cache import CachedCodes, exact_dtype, quantized
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.audit.run import AuditModel, audit
from llm_unlearn.data.corpora import DEMO, load_muse
from llm_unlearn.filehash import HashMemo
from llm_unlearn.metrics import EvalContext, required_splits
from llm_unlearn.models import load_model, save_checkpoint
from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.registry import pack_codes, unpack_codes

#: quantizers with codes that need no optional backend (bnb's CPU ops come with [test])
QUANTIZERS = ["rtn-w4-g32", "rtn-w8", "rtn-w4-g32-min", "bnb-nf4", "bnb-int8", "fp8-e4m3"]
if importlib.util.find_spec("hqq") is not None:
    QUANTIZERS.append("hqq-w4-g64")


def test_four_bit_codes_pack_two_a_byte_low_nibble_first():
    codes = torch.tensor([[1, 15], [0, 7], [9, 0]], dtype=torch.uint8)
    packed = pack_codes(codes, 16)
    assert packed.tolist() == [1 | 15 << 4, 0 | 7 << 4, 9]  # the odd last code gets a zero partner
    assert unpack_codes(packed, 6, 16).tolist() == [1, 15, 0, 7, 9, 0]
    wide = torch.tensor([200, 3], dtype=torch.uint8)
    assert pack_codes(wide, 256).tolist() == [200, 3] and unpack_codes(wide, 2, 256).tolist() == [200, 3]
    assert pack_codes(torch.tensor([300]), 257).dtype == torch.int32


def test_floats_are_stored_in_the_narrowest_exact_dtype():
    assert exact_dtype(torch.tensor([0.5, 3.0, 7.0])).dtype == torch.float16
    assert exact_dtype(torch.tensor([2.0**100])).dtype == torch.bfloat16  # beyond float16, a power of 2
    third = torch.tensor([1 / 3])
    assert exact_dtype(third).dtype == torch.float32 and torch.equal(exact_dtype(third), third)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok):
    # tied embeddings: the head is restored through the embedding it shares
    return save_checkpoint(
        tiny_llama(tok, hidden_size=64, tie_word_embeddings=True), tok, tmp_path_factory.mktemp("c")
    )


@pytest.mark.parametrize("name", QUANTIZERS)
def test_a_cell_is_rebuilt_bit_for_bit_from_its_codes(name, checkpoint, tmp_path):
    fresh = get_quantizer(name).quantize_model(load_model(checkpoint))
    folder = tmp_path / name
    first = quantized(checkpoint, get_quantizer(name), folder)
    rebuilt = cache.load_cell(folder, checkpoint, get_quantizer(name))
    for key, value in fresh.state_dict().items():
        assert torch.equal(first.state_dict()[key], value) and torch.equal(rebuilt.state_dict()[key], value)
    expected = get_quantizer(name).quantize_with_codes(load_model(checkpoint))
    stored = CachedCodes(folder)
    assert sorted(stored) == sorted(expected)
    for module, c in expected.items():
        got = stored[module]
        assert torch.equal(got.codes, c.codes) and torch.equal(got.dequantize(), c.dequantize())
    assert not (folder / "model.safetensors").exists()


def test_a_four_bit_cell_is_a_fraction_of_the_checkpoint(tmp_path, tok):
    # big enough that a 4-bit group-32 weight dominates: 5 bits (codes + float16 scale and zero) of 32
    folder = save_checkpoint(tiny_llama(tok, hidden_size=256, intermediate_size=512), tok, tmp_path / "m")
    cell = tmp_path / "cell"
    quantized(folder, get_quantizer("rtn-w4-g32"), cell)
    cell_bytes = sum(p.stat().st_size for p in cell.iterdir())
    assert cell_bytes < 0.2 * (folder / "model.safetensors").stat().st_size


def test_changed_tensors_without_codes_are_kept(checkpoint, tmp_path):
    network = load_model(checkpoint)
    codes = get_quantizer("rtn-w4-g32").quantize_with_codes(network)
    with torch.no_grad():  # as AWQ does: a norm rescaled, a coded weight moved off its codes
        network.model.norm.weight.mul_(2)
        network.model.layers[0].mlp.up_proj.weight.add_(1e-3)
    folder = tmp_path / "cell"
    cache.save_cell(folder, get_quantizer("rtn-w4-g32"), network, codes, checkpoint)
    from safetensors import safe_open

    with safe_open(str(folder / cache.CHANGED), framework="pt") as f:
        assert sorted(f.keys()) == ["model.layers.0.mlp.up_proj.weight", "model.norm.weight"]
    rebuilt = cache.load_cell(folder, checkpoint, get_quantizer("rtn-w4-g32"))
    for key, value in network.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)


def test_a_checkpoint_trained_again_makes_its_cells_stale(tmp_path, tok):
    folder = save_checkpoint(tiny_llama(tok), tok, tmp_path / "m")
    quantizer, cell = get_quantizer("rtn-w8"), tmp_path / "cell"
    quantized(folder, quantizer, cell)
    assert cache.is_valid(cell, quantizer, folder)
    save_checkpoint(tiny_llama(tok, seed=1), tok, folder)
    assert not cache.is_valid(cell, quantizer, folder)
    quantized(folder, quantizer, cell)
    assert json.loads((cell / cache.SOURCE).read_text()) == cache.source_stamp(folder)


def test_a_resumed_audit_from_the_cache_gives_identical_cells(tmp_path, tok, monkeypatch):
    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "target")
    corpus = load_muse(DEMO, required_splits(["verbmem", "knowmem_forget"]))
    ctx = EvalContext(tokenizer=tok, corpus=corpus, batch_size=4, limit=3)
    models = [AuditModel("target", "natural", target)]
    quantizers = ["rtn-w4-g32", "bnb-nf4"]
    first = tmp_path / "first"
    first.mkdir()
    audit(models, quantizers, ["verbmem", "knowmem_forget"], ctx, ResultsFile(first / "results.jsonl"))

    def fail(*args: object) -> None:
        raise AssertionError("quantized again")

    for family in {type(get_quantizer(name)) for name in quantizers}:
        monkeypatch.setattr(family, "quantize_with_codes", fail)
    again = tmp_path / "again"
    again.mkdir()
    audit(
        models,
        quantizers,
        ["verbmem", "knowmem_forget"],
        ctx,
        ResultsFile(again / "results.jsonl"),
        cache=first / "quantized",
    )
    for a, b in zip(ResultsFile(first / "results.jsonl"), ResultsFile(again / "results.jsonl"), strict=True):
        assert a["value_by_index"] == b["value_by_index"] and a["agg_value"] == b["agg_value"]


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_a_damaged_cell_is_told_rebuilt_and_audits_as_before(tmp_path, tok, capsys, damage):
    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "target")
    ctx = EvalContext(
        tokenizer=tok, corpus=load_muse(DEMO, required_splits(["verbmem"])), batch_size=4, limit=2
    )
    models = [AuditModel("target", "natural", target)]
    runs = {}
    for run in ("first", "again"):
        (tmp_path / run).mkdir()
        runs[run] = ResultsFile(tmp_path / run / "results.jsonl")
    audit(models, ["rtn-w4-g32"], ["verbmem"], ctx, runs["first"])
    cell = next((tmp_path / "first" / "quantized").rglob(cache.CODES)).parent
    written = (cell / cache.CODES).read_bytes()
    stored = json.loads((cell / cache.CONFIG).read_text())[cache.HASHES]
    assert stored[cache.CODES] == hashlib.sha256(written).hexdigest()
    assert set(stored) == {cache.CODES, cache.CHANGED, cache.SOURCE}
    capsys.readouterr()
    broken = bytearray(written[: len(written) // 2] if damage == "truncated" else written)
    if damage == "bit-flipped":
        broken[-1] ^= 0x01  # a byte of tensor data: the file still loads, with a wrong value
    (cell / cache.CODES).write_bytes(bytes(broken))
    audit(models, ["rtn-w4-g32"], ["verbmem"], ctx, runs["again"], cache=tmp_path / "first" / "quantized")
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("llm-unlearn: warning: "), err
    assert f"{cell / cache.CODES} does not match the sha256 stored with its cell" in err
    assert (cell / cache.CODES).read_bytes() == written  # rebuilt as it was
    assert cache.is_valid(cell, get_quantizer("rtn-w4-g32"), target)
    assert capsys.readouterr().err == ""  # told once
    first, again = ([r for r in runs[k] if r["quantizer"] != "fp"] for k in ("first", "again"))
    for a, b in zip(first, again, strict=True):
        assert a["value_by_index"] == b["value_by_index"] and a["agg_value"] == b["agg_value"]


def test_a_lookup_through_the_memo_reads_an_unchanged_cell_once_and_a_truncated_one_again(
    checkpoint, tmp_path, monkeypatch, capsys
) -> None:
    seen: list[str] = []
    real = filehash.sha256_file
    monkeypatch.setattr(filehash, "sha256_file", lambda path: seen.append(path.name) or real(path))
    monkeypatch.setattr(filehash, "RACY_NS", 0)  # trust files however recently written
    quantizer, cell, memo = get_quantizer("rtn-w8"), tmp_path / "cell", HashMemo(tmp_path / "hashes.json")
    quantized(checkpoint, quantizer, cell, memo=memo)
    seen.clear()
    assert cache.is_valid(cell, quantizer, checkpoint, memo)
    assert sorted(seen) == [cache.CHANGED, cache.CODES, cache.SOURCE]
    seen.clear()
    assert cache.is_valid(cell, quantizer, checkpoint, memo) and seen == []  # read from the memo
    written = (cell / cache.CODES).read_bytes()
    (cell / cache.CODES).write_bytes(written[: len(written) // 2])
    capsys.readouterr()
    assert not cache.is_valid(cell, quantizer, checkpoint, memo)
    assert "does not match the sha256 stored with its cell" in capsys.readouterr().err
    quantized(checkpoint, quantizer, cell, memo=memo)
    assert (cell / cache.CODES).read_bytes() == written and cache.is_valid(cell, quantizer, checkpoint, memo)
