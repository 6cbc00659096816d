"""Weight diagnostics (bucket overlap, crossing, update kept, grid distance) and their audit cells."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_llama

from llm_unlearn.audit.report import render_markdown
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.audit.run import DIAGNOSTICS, AuditModel, audit
from llm_unlearn.cli import main
from llm_unlearn.models import load_model, save_checkpoint
from llm_unlearn.quant import get_quantizer, overlap
from llm_unlearn.quant.overlap import (
    bucket,
    diagnose,
    grid_distance,
    local_step,
    weight_sums,
)
from llm_unlearn.quant.rtn import RTNQuantizer, dequantize_tensor, quantize_tensor, rtn_codes


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def codes_of(w: torch.Tensor, symmetric: bool = True):
    return rtn_codes(quantize_tensor(w, 4, 32, symmetric))


def test_grid_helpers_on_a_non_uniform_grid():
    levels = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    x = torch.tensor([0.2, 0.3, -0.6, 0.75])
    assert bucket(x, levels).tolist() == [1, 2, 0, 2]  # 0.75 is a tie between 0.5 and 1: the lower
    assert local_step(x, levels).tolist() == [0.5, 0.5, 1.0, 0.5]
    torch.testing.assert_close(grid_distance(x, levels), torch.tensor([0.4, 0.4, 0.4, 0.5]))


@pytest.mark.parametrize("symmetric", [True, False])
def test_rtn_codes_dequantize_like_rtn(symmetric: bool):
    q = quantize_tensor(randn(8, 64), 4, 32, symmetric)
    torch.testing.assert_close(rtn_codes(q).dequantize(), dequantize_tensor(q))


def test_model_against_itself_overlaps_fully():
    w = randn(16, 128)
    stats = overlap.statistics(weight_sums(w, w, codes_of(w), codes_of(w)))
    assert stats["bucket_overlap"] == stats["code_overlap"] == 1.0
    assert stats["crossing"] == 0.0 and stats["update_kept"] is None and stats["delta_norm"] == 0.0


def test_one_step_shift_of_a_known_share_is_seen_exactly():
    w = randn(16, 128)
    q = quantize_tensor(w, 4, 32, True)
    step = q.scale.repeat_interleave(32, dim=1)
    # every 10th weight not within one step of its group's max-abs: the groups' scales stay put
    chosen = torch.zeros_like(w, dtype=torch.bool).flatten()
    chosen[::10] = True
    chosen = chosen.reshape(w.shape) & (q.codes.abs() <= 5)
    w_u = w + chosen * step
    stats = overlap.statistics(weight_sums(w, w_u, rtn_codes(q), codes_of(w_u)))
    share = chosen.float().mean().item()
    assert 0.05 < share < 0.1
    assert stats["bucket_overlap"] == pytest.approx(1 - share) and stats["crossing"] == pytest.approx(share)
    assert stats["update_kept"] == pytest.approx(1.0, abs=1e-4)
    assert stats["delta_over_step"] == pytest.approx(share, rel=1e-4)


def test_small_update_rounds_away_on_the_grid_and_survives_off_it():
    w = randn(64, 128)
    on_grid = dequantize_tensor(quantize_tensor(w, 4, 32, False))
    delta = randn(64, 128, seed=1) * quantize_tensor(w, 4, 32, False).scale.mean() / 20
    for target, kept in ((on_grid, 0.0), (w, 1.0)):
        w_u = target + delta
        stats = overlap.statistics(weight_sums(target, w_u, codes_of(target, False), codes_of(w_u, False)))
        assert stats["update_kept"] == pytest.approx(kept, abs=0.25), kept
    assert (
        diagnose(
            {"l": on_grid},
            {"l": on_grid + delta},
            {"l": codes_of(on_grid, False)},
            {"l": codes_of(on_grid + delta, False)},
        )["overall"]["grid_distance"]
        < 1e-3
    )
    assert (
        0.2
        < overlap.statistics(weight_sums(w, w, codes_of(w, False), codes_of(w, False)))["grid_distance"]
        < 0.3
    )


def test_overall_pools_the_layers():
    a, b = randn(8, 64), randn(8, 64, seed=2)
    a_u, b_u = a + 0.01, b.clone()
    found = diagnose(
        {"a": a, "b": b},
        {"a": a_u, "b": b_u},
        {"a": codes_of(a), "b": codes_of(b)},
        {"a": codes_of(a_u), "b": codes_of(b_u)},
    )
    layers = found["layers"]
    assert found["overall"]["bucket_overlap"] == pytest.approx(
        (layers["a"]["bucket_overlap"] + layers["b"]["bucket_overlap"]) / 2
    )
    assert found["overall"]["delta_norm"] == pytest.approx(layers["a"]["delta_norm"])
    assert found["layers"]["b"]["update_kept"] is None


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("pair")
    target = tiny_llama(tok)
    unlearned = tiny_llama(tok)
    with torch.no_grad():
        for p in unlearned.parameters():
            p.add_(randn(*p.shape, seed=3) * 1e-3)
    return save_checkpoint(target, tok, root / "target"), save_checkpoint(unlearned, tok, root / "ga")


def test_resumed_audit_reuses_cached_quantized_models(tmp_path, pair, monkeypatch):
    target, unlearned = pair
    models = [AuditModel("target", "natural", target), AuditModel("ga", "natural", unlearned)]
    audit(models, ["fp", "rtn-w4-g32"], [], None, ResultsFile(tmp_path / "results.jsonl"))
    results = ResultsFile(tmp_path / "diagnostics.jsonl")
    record = results.get("ga", "natural", "rtn-w4-g32", DIAGNOSTICS)
    assert record["agg_value"] == record["overall"]["bucket_overlap"]
    assert (
        0.5 < record["overall"]["code_overlap"] < 1.0 and record["quantizer_config"]["name"] == "rtn-w4-g32"
    )
    assert len(record["layers"]) == 14 and "lm_head" not in record["layers"]  # 2 blocks × 7 Linear
    cached = tmp_path / "quantized" / "ga@natural" / "rtn-w4-g32"
    assert all((cached / f).is_file() for f in ("codes.safetensors", "changed.safetensors", "quantizer.json"))
    assert not (cached / "model.safetensors").exists()  # codes, not a copy of the model
    assert "## Weight diagnostics" in render_markdown(list(results), "t")

    def fail(*args: object) -> None:
        raise AssertionError("quantized again")

    monkeypatch.setattr(RTNQuantizer, "quantize_with_codes", fail)
    again = tmp_path / "again"  # no diagnostics there yet: they must come from the cache
    again.mkdir()
    audit(
        models,
        ["fp", "rtn-w4-g32"],
        [],
        None,
        ResultsFile(again / "results.jsonl"),
        cache=tmp_path / "quantized",
    )
    fresh = ResultsFile(again / "diagnostics.jsonl")
    assert fresh.get("ga", "natural", "rtn-w4-g32", DIAGNOSTICS)["overall"] == record["overall"]


def test_diagnose_command(tmp_path, pair, capsys):
    target, unlearned = pair
    out = tmp_path / "d.json"
    assert main(["diagnose", str(target), str(unlearned), "--quantizer", "rtn-w8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "model.layers.0.self_attn.q_proj" in printed
    saved = json.loads(out.read_text())
    assert saved["quantizer_config"]["bits"] == 8 and 0 <= saved["overall"]["bucket_overlap"] <= 1
    # read layer by layer from cells on disk, it is what the two models quantized in memory give
    quantizer = get_quantizer("rtn-w8")
    models = [load_model(path) for path in (target, unlearned)]
    weights = [overlap.target_weights(m) for m in models]  # before quantizing in place
    codes = [quantizer.quantize_with_codes(m) for m in models]
    assert saved["overall"] == json.loads(json.dumps(diagnose(*weights, *codes)["overall"]))
    assert main(["diagnose", str(target), str(unlearned), "--quantizer", "fp"]) == 2
