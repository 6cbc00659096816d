"""Two processes (torchrun, gloo on CPU) train exactly what one process does with the same
global batch: OEU's projection acts on the all-reduced gradients, and SURE's mask is the same
on every rank. They also audit what one process does, each running its share of the batches,
with one writer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import char_tokenizer, demo_bench_subset, tiny_llama

from llm_unlearn.audit.results import ResultsFile, cell_key
from llm_unlearn.metrics import generation
from llm_unlearn.models import save_checkpoint
from llm_unlearn.pipeline import run
from llm_unlearn.recipe import load_recipe

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    sys.path.insert(0, {tests!r})
    from conftest import char_tokenizer, tiny_llama

    from llm_unlearn.data.collate import ForgetRetainDataset, chunk_texts
    from llm_unlearn.trainer import UnlearningTrainer
    from llm_unlearn.unlearning_config import UnlearningConfig

    def train(out, batch, **method):
        torch.set_num_threads(1)
        tok = char_tokenizer()
        forget = chunk_texts(["abcdefgh", "hgfedcba"], tok, 64)  # equal lengths: means agree
        retain = chunk_texts(["qrstuvwx", "xwvutsrq"], tok, 64)
        args = UnlearningConfig(
            output_dir=str(Path(out).parent / "scratch"), optim="sgd", learning_rate=0.5, max_steps=1,
            lr_scheduler_type="constant", max_grad_norm=0.0, per_device_train_batch_size=batch,
            report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, **method,
        )
        trainer = UnlearningTrainer(
            model=tiny_llama(tok), args=args, train_dataset=ForgetRetainDataset(forget, retain, seed=0),
            processing_class=tok,
        )
        trainer.train()
        if trainer.is_world_process_zero():
            torch.save({{n: p.detach() for n, p in trainer.model.named_parameters()}}, out)

    if __name__ == "__main__":
        train(sys.argv[1], int(sys.argv[2]), **eval(sys.argv[3]))
    """
)

METHODS = {
    "oeu": {"forget_loss": "entropy", "retain_loss": "gdr", "modifiers": {"projection": {"scope": "layer"}}},
    "sure": {"forget_loss": "ga", "retain_loss": "gdr", "modifiers": {"sure": {"percentile": 90.0}}},
}


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_equal_one_with_the_global_batch(method, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    settings = repr(METHODS[method])
    two, one = tmp_path / "two.pt", tmp_path / "one.pt"
    subprocess.run([*_torchrun(), str(script), str(two), "1", settings], env=env, check=True, timeout=300)
    subprocess.run([sys.executable, str(script), str(one), "2", settings], env=env, check=True, timeout=300)
    a, b = torch.load(two), torch.load(one)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    initial = dict(tiny_llama(char_tokenizer()).named_parameters())
    assert any(not torch.equal(a[n], initial[n]) for n in a), "the step changed nothing"


def _torchrun() -> list[str]:
    with socket.socket() as sock:  # a free port: torchrun's static rendezvous cannot take port 0
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]


def test_sharded_batches_come_back_in_input_order(monkeypatch) -> None:
    """Simulated ranks of a 3-process launch: each runs whole batches of its own, the ranks together
    run each batch once, and the gathered results (in rank order) are put back in input order."""
    ids = [[0] * n for n in (3, 1, 4, 1, 5, 9, 2, 6, 5)]
    ran: dict[int, list[list[int]]] = {}

    def run_batch(rank: int, idx: list[int]) -> list[str]:
        ran.setdefault(rank, []).append(idx)
        return [f"result {i}" for i in idx]

    shares: list[list[tuple[int, str]]] = []
    for rank in range(3):  # the fake gather keeps each rank's pairs, as all_gather_object would
        monkeypatch.setattr(
            generation, "PartialState", lambda r=rank: SimpleNamespace(process_index=r, num_processes=3)
        )
        monkeypatch.setattr(generation, "gather_object", lambda found: shares.append(found) or found)
        generation._sharded(ids, 2, lambda idx, r=rank: run_batch(r, idx))
    monkeypatch.setattr(generation, "gather_object", lambda found: [p for share in shares for p in share])
    gathered = generation._sharded(ids, 2, lambda idx: [f"result {i}" for i in idx])
    assert gathered == [f"result {i}" for i in range(len(ids))]
    batches = [b for rank in range(3) for b in ran[rank]]
    assert sorted(batches) == sorted(generation._batches(ids, 2))  # each batch once, none split
    assert all(ran[rank] for rank in range(3))


AUDIT_KEEP = {"raw": 4, "verbmem": 3, "knowmem": 3, "privleak": 5}  # odd: ranks get unequal shares


def _audit_recipe(tmp_path: Path, name: str) -> Path:
    tok = char_tokenizer()
    muse = tmp_path / "muse"
    if not muse.exists():
        demo_bench_subset(muse, AUDIT_KEEP)
        for model, seed in (("target", 0), ("retrain", 1)):
            save_checkpoint(tiny_llama(tok, seed=seed), tok, tmp_path / model)
    data = {
        "name": "sharded",
        "model": {"target": str(tmp_path / "target"), "retrain": str(tmp_path / "retrain")},
        "data": {"source": str(muse), "max_length": 64},
        # a checkpoint audited as it is (the target itself): every cell must come out the same
        "models": [{"name": "ga", "path": str(tmp_path / "target")}],
        "train": {
            "max_steps": 1,
            "per_device_train_batch_size": 1,
            "per_device_eval_batch_size": 2,
            "disable_tqdm": True,
            "use_cpu": True,  # on CPUs, what makes the Trainer (and the audit) see both processes
        },
        "quantize": ["fp", "rtn-w4-g32"],
        "evaluate": ["verbmem", "knowmem_forget", "privleak"],
        "output": {"dir": str(tmp_path / name)},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_two_processes_audit_what_one_does_with_one_writer(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = _audit_recipe(tmp_path, "two")
    subprocess.run([*_torchrun(), "-m", "llm_unlearn", str(two)], env=env, check=True, timeout=300)
    one = run(load_recipe(_audit_recipe(tmp_path, "one")))
    for file, cells in (("results.jsonl", 3 * 2 * 3), ("diagnostics.jsonl", 1)):
        lines = (tmp_path / "two" / file).read_text().splitlines()
        assert len(lines) == len({cell_key(json.loads(line)) for line in lines}) == cells, file
        expected = ResultsFile(one / file)
        for got in map(json.loads, lines):
            want = expected.get(*cell_key(got))
            assert got["agg_value"] == pytest.approx(want["agg_value"], rel=1e-6, abs=1e-9), cell_key(got)
            assert got.get("value_by_index") == want.get("value_by_index"), cell_key(got)
    assert (tmp_path / "two" / "report.md").is_file()
