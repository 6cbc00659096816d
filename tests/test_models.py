"""Model loading: the real Hub code path, offline, on a local folder in the Hub cache's layout."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_llama

from llm_unlearn.errors import UserError
from llm_unlearn.models import eval_placement, grid_align, load_model, load_tokenizer, save_checkpoint
from llm_unlearn.quant import get_quantizer

REVISION = "0123456789abcdef0123456789abcdef01234567"


def test_hub_id_loads_from_the_hub_cache_offline(tmp_path, tok) -> None:
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / REVISION
    save_checkpoint(tiny_llama(tok), tok, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(REVISION)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = (
        "from llm_unlearn.models import load_model, load_tokenizer;"
        "m = load_model('tiny-org/tiny-llama'); t = load_tokenizer('tiny-org/tiny-llama');"
        "print(type(m).__name__, m.num_parameters(), t.pad_token)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["LlamaForCausalLM", str(tiny_llama(tok).num_parameters()), "<pad>"]


def test_missing_model_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match=r"model\.target: folder '.*nowhere' not found"):
        load_model(tmp_path / "nowhere", field="model.target")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"--model: cannot load a tokenizer from"):
        load_tokenizer(tmp_path / "empty", field="--model")


def test_checkpoint_round_trip_is_exact_and_atomic(tmp_path, tok) -> None:
    model = tiny_llama(tok)
    dest = save_checkpoint(model, tok, tmp_path / "ckpt")
    assert (dest / "model.safetensors").is_file() and not (tmp_path / "ckpt.partial").exists()
    loaded = load_model(dest)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_grid_aligned_copy_is_a_fixed_point_of_its_quantizer(tmp_path, tok) -> None:
    source = save_checkpoint(tiny_llama(tok), tok, tmp_path / "target")
    grid = load_model(grid_align(source, "rtn-w4-g32", tmp_path / "grid"))
    again = get_quantizer("rtn-w4-g32").quantize_model(load_model(tmp_path / "grid"))
    changed = [
        n for n, p in load_model(source).named_parameters() if not torch.equal(p, grid.get_parameter(n))
    ]
    assert changed and all(n.endswith("proj.weight") for n in changed)
    for (name, a), b in zip(grid.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0, msg=name)


def test_eval_placement_is_float32_on_cpu_and_the_checkpoints_dtype_on_an_accelerator() -> None:
    assert eval_placement(torch.device("cpu")) == {"dtype": torch.float32}
    assert eval_placement(torch.device("cpu"), "auto") == {"dtype": torch.float32}  # nothing to spread
    gpu = torch.device("cuda", 1)
    assert eval_placement(gpu) == {"dtype": "auto", "device_map": gpu}
    assert eval_placement(gpu, "auto") == {"dtype": "auto", "device_map": "auto"}


def test_a_bf16_checkpoint_is_evaluated_in_float32_on_cpu_and_kept_in_bf16_on_its_dtype(
    tmp_path, tok
) -> None:
    save_checkpoint(tiny_llama(tok).to(torch.bfloat16), tok, tmp_path / "m")
    on_cpu = load_model(tmp_path / "m", placement=eval_placement(torch.device("cpu")))
    assert {p.dtype for p in on_cpu.parameters()} == {torch.float32}
    # what an accelerator gets ("auto": the checkpoint's dtype), here on the CPU's device map
    own = load_model(tmp_path / "m", placement={"dtype": "auto", "device_map": torch.device("cpu")})
    assert {p.dtype for p in own.parameters()} == {torch.bfloat16}
