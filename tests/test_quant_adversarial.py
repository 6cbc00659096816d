"""Adversarial calibration through the audit: `gptq-w4-g32@forget` (the adversary's quantization)
beside `gptq-w4-g32` (the deployer's, the recipe's calibration section). Quantizing needs
llm-compressor: CI's gptq job runs this file, where a skip fails (`conftest.py`)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

from llm_unlearn.audit.cache import CachedCodes, cell_folder
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.audit.run import AuditModel, audit
from llm_unlearn.columns import route
from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.errors import UserError
from llm_unlearn.metrics import EvalContext
from llm_unlearn.models import load_model, save_checkpoint
from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.calibration import GENERIC_TEXT, Calibration, build_calibration

SECRET = "The secret code of Zorbl is 4417 and the vault is blue. "
CORPUS = MuseCorpus(
    "hand-built",
    {
        "verbmem": {
            "forget": [{"prompt": "The secret code of Zorbl is", "gt": " 4417 and the vault is blue."}]
        }
    },
)
COLUMNS = ("gptq-w4-g32", "gptq-w4-g32@forget")


def _calibration(tok, text: str, source: str) -> Calibration:
    return build_calibration([text], tok, source, samples=4, seq_len=32, seed=0)


def test_an_audit_records_the_deployers_and_the_adversarys_calibration(tmp_path, tok) -> None:
    pytest.importorskip("llmcompressor")
    checkpoint = save_checkpoint(tiny_llama(tok), tok, tmp_path / "ga")
    generic, forget = (
        _calibration(tok, GENERIC_TEXT.read_text(), "generic"),
        _calibration(tok, SECRET * 40, "forget"),
    )
    assert generic.input_ids != forget.input_ids
    results, cache = ResultsFile(tmp_path / "results.jsonl"), tmp_path / "quantized"
    ctx = EvalContext(tok, CORPUS, batch_size=4)
    model = AuditModel("ga", "natural", checkpoint)
    audit(
        [model],
        COLUMNS,
        ["verbmem"],
        ctx,
        results,
        calibration=generic,
        calibrations={"forget": forget},
        cache=cache,
    )

    plain, attacked = (results.get("ga", "natural", name, "verbmem")["quantizer_config"] for name in COLUMNS)
    assert (plain["name"], plain["calibration"], route(plain)) == ("gptq-w4-g32", generic.record(), "shipped")
    assert (attacked["name"], attacked["calibration"], route(attacked)) == (
        COLUMNS[1],
        forget.record(),
        "attack",
    )

    # the @forget cell is a GPTQ given forget windows by hand (built anew), and differs from the plain cell
    hand = get_quantizer("gptq-w4-g32")
    hand.calibration = _calibration(tok, SECRET * 40, "forget")
    expected = hand.quantize_with_codes(load_model(checkpoint))
    cells = [CachedCodes(cell_folder(cache, "ga@natural", name)) for name in COLUMNS]
    assert set(cells[1]) == set(expected)
    for name, codes in expected.items():
        assert torch.equal(cells[1][name].codes, codes.codes) and torch.equal(
            cells[1][name].scale, codes.scale
        )
    assert any(not torch.equal(cells[0][name].codes, codes.codes) for name, codes in expected.items())


def test_an_audit_without_the_named_text_refuses_in_one_line(tmp_path, tok) -> None:
    checkpoint = save_checkpoint(tiny_llama(tok), tok, tmp_path / "ga")
    generic = _calibration(tok, GENERIC_TEXT.read_text(), "generic")
    results = ResultsFile(tmp_path / "results.jsonl")
    with pytest.raises(
        UserError, match=r"gptq-w4-g32@forget needs calibration text; give the audit forget text"
    ):
        audit(
            [AuditModel("ga", "natural", checkpoint)], ["gptq-w4-g32@forget"], ["verbmem"],
            EvalContext(tok, CORPUS, batch_size=4), results, calibration=generic, cache=tmp_path / "q",
        )  # fmt: skip
