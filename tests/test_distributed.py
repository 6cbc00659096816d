"""Two processes (torchrun, gloo on CPU) train exactly what one process does with the same
global batch: OEU's projection acts on the all-reduced gradients, and SURE's mask is the same
on every rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import char_tokenizer, tiny_llama

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    sys.path.insert(0, {tests!r})
    from conftest import char_tokenizer, tiny_llama

    from llm_unlearn.data.collate import ForgetRetainDataset, chunk_texts
    from llm_unlearn.trainer import UnlearningConfig, UnlearningTrainer

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
    "oeu": {"forget_loss": "entropy", "retain_loss": "gdr", "projection": "layer"},
    "sure": {"forget_loss": "ga", "retain_loss": "gdr", "saliency_percentile": 90.0},
}


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_equal_one_with_the_global_batch(method, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    settings = repr(METHODS[method])
    two, one = tmp_path / "two.pt", tmp_path / "one.pt"
    with socket.socket() as sock:  # a free port: torchrun's static rendezvous cannot take port 0
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    subprocess.run([*torchrun, str(script), str(two), "1", settings], env=env, check=True, timeout=300)
    subprocess.run([sys.executable, str(script), str(one), "2", settings], env=env, check=True, timeout=300)
    a, b = torch.load(two), torch.load(one)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    initial = dict(tiny_llama(char_tokenizer()).named_parameters())
    assert any(not torch.equal(a[n], initial[n]) for n in a), "the step changed nothing"
