"""quant/calibrated.py: GPTQ/AWQ (llm-compressor) on a tiny Llama, the missing-backend errors, and a
recipe's calibration reaching GPTQ through `run`."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError

import pytest
import torch
from conftest import tiny_llama
from helpers import load, recipe, run_quantizer

from llm_unlearn.errors import UserError
from llm_unlearn.models import save_checkpoint
from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.calibration import GENERIC_TEXT, build_calibration
from llm_unlearn.quant.rtn import dequantize_tensor, quantize_tensor
from llm_unlearn.recipe import validate_recipe

GPTQ = [f"gptq-w{b}-g{g}" for b in (2, 3, 4, 8) for g in (32, 64, 128)]
AWQ = [f"awq-w4-g{g}" for g in (32, 64, 128)]


@pytest.fixture(scope="module")
def calibration(tok):
    return build_calibration([GENERIC_TEXT.read_text()], tok, "generic", samples=4, seq_len=32, seed=0)


@pytest.mark.parametrize("name", GPTQ + AWQ)
def test_calibrated_names_quantize_and_run(name, folder, calibration):
    pytest.importorskip("llmcompressor")
    model, quantizer, codes = run_quantizer(name, folder, calibration)
    assert len(codes) == 7 and "lm_head" not in codes
    for module_name, c in codes.items():
        # codes read back × scales are exactly the weights the quantized model computes with
        assert torch.equal(c.dequantize(), model.get_submodule(module_name).weight.detach())
        assert (
            int(c.codes.max()) < 2**quantizer.bits
            and c.scale.numel() == c.codes.numel() // quantizer.group_size
        )
    logits = model(torch.tensor([calibration.input_ids[0]])).logits
    assert torch.isfinite(logits).all()
    config = quantizer.config()
    assert config["calibration"] == calibration.record() and config["library"].startswith("llmcompressor")
    assert config["bits"] == quantizer.bits and config["group_size"] == quantizer.group_size


def test_gptq_reconstructs_the_calibration_activations_better_than_rtn(folder, calibration):
    pytest.importorskip("llmcompressor")
    original = load(folder)
    layer = "model.layers.0.self_attn.q_proj"  # the first quantized layer: its inputs are unquantized
    inputs = []
    hook = original.get_submodule(layer).register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    with torch.no_grad():
        original(torch.tensor([list(w) for w in calibration.input_ids]))
    hook.remove()
    x = torch.cat(inputs).reshape(-1, 128)
    w = original.get_submodule(layer).weight.detach()
    gptq = run_quantizer("gptq-w4-g32", folder, calibration)[0].get_submodule(layer).weight.detach()
    rtn = dequantize_tensor(quantize_tensor(w, 4, 32, symmetric=True))

    def error(q: torch.Tensor) -> float:
        return (x @ (q - w).T).square().sum().item()

    assert error(gptq) < 0.9 * error(rtn)


def test_awq_runs_on_cpu_only_with_the_pinning_workaround():
    pytest.importorskip("llmcompressor")
    from llmcompressor.pipelines.cache import IntermediatesCache

    from llm_unlearn.quant.calibrated import _no_pinning_without_accelerator

    original = IntermediatesCache.pin_memory
    with _no_pinning_without_accelerator():
        patched = IntermediatesCache.pin_memory is not original
    assert patched != torch.accelerator.is_available()
    assert IntermediatesCache.pin_memory is original


def test_missing_backend_is_a_user_error(folder, calibration, monkeypatch):
    monkeypatch.setitem(sys.modules, "llmcompressor", None)
    with pytest.raises(UserError, match=r"pip install 'llm-unlearn\[gptq\]'"):
        run_quantizer("gptq-w4-g128", folder, calibration)
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    with pytest.raises(UserError, match=r"pip install 'llm-unlearn\[bnb\]'"):
        run_quantizer("bnb-nf4", folder, None)

    def not_installed(package: str) -> str:
        raise PackageNotFoundError(package)

    # the audit reads a quantizer's configuration (library versions) before quantizing
    monkeypatch.setattr("llm_unlearn.quant.calibrated.version", not_installed)
    monkeypatch.setattr("llm_unlearn.quant.bnb.version", not_installed)
    for name, extra in (("awq-w4-g32", "gptq"), ("bnb-int8", "bnb")):
        with pytest.raises(UserError, match=rf"pip install 'llm-unlearn\[{extra}\]'"):
            get_quantizer(name).config()


def test_calibrated_quantizer_without_calibration_raises(folder):
    with pytest.raises(ValueError, match="needs calibration"):
        get_quantizer("gptq-w4-g32").quantize_model(load(folder))


@pytest.mark.parametrize("name", ["gptq-w5-g32", "gptq-w4", "awq-w8-g128", "bnb-nf8"])
def test_malformed_names_are_refused(name):
    with pytest.raises(ValueError, match="expected"):
        get_quantizer(name)


def test_run_records_each_quantizers_configuration(tmp_path, tok):
    """A recipe's calibration reaches GPTQ through `run`, and every result records it."""
    pytest.importorskip("llmcompressor")
    pytest.importorskip("bitsandbytes")

    from llm_unlearn.audit.results import ResultsFile
    from llm_unlearn.pipeline import run

    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "target")
    data = recipe(source="retain", samples=2, seq_len=16)
    data.update(
        model={"target": str(target)},
        data={"source": "demo", "max_length": 32},
        train={"max_steps": 1, "per_device_train_batch_size": 2, "disable_tqdm": True},
        quantize=["fp", "gptq-w4-g32", "bnb-int8"],
        evaluate=["knowmem_retain"],
        output={"dir": str(tmp_path / "run")},
    )
    out = run(validate_recipe(data))
    results = ResultsFile(out / "results.jsonl")
    gptq = results.get("ga", "natural", "gptq-w4-g32", "knowmem_retain")["quantizer_config"]
    assert gptq["calibration"] | {"sha256": None} == {
        "source": "retain",
        "samples": 2,
        "seq_len": 16,
        "seed": 0,
        "sha256": None,
    }
    assert gptq["evaluation"] == "dequantized weights (float32)" and gptq["library"].startswith(
        "llmcompressor"
    )
    assert results.get("ga", "natural", "bnb-int8", "knowmem_retain")["quantizer_config"]["bits"] == 8
    diagnostics = ResultsFile(out / "diagnostics.jsonl")
    assert {r["quantizer"] for r in diagnostics} == {"gptq-w4-g32", "bnb-int8"}
    assert (out / "quantized" / "ga@natural" / "gptq-w4-g32" / "codes.safetensors").is_file()
    assert "## Weight diagnostics" in (out / "report.md").read_text()
