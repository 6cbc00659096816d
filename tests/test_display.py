"""display.py: inside a run's display a Trainer prints no log dicts and warnings print nothing;
both land in the run's log file, and everything is restored afterwards."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from conftest import tiny_llama
from transformers import Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from llm_unlearn.data.collate import LMDataset, UnlearningCollator, chunk_texts
from llm_unlearn.display import current_display, run_display
from llm_unlearn.models import train_and_save

TEXTS = ["alpha beta gamma delta " * 4, "one two three four five " * 4]


def tiny_trainer(tok, folder: Path) -> Trainer:
    """A Trainer as the project's are built, logging every step, with transformers' own console
    callbacks (a tqdm bar, which prints the log dicts through it)."""
    args = TrainingArguments(
        output_dir=str(folder), max_steps=3, logging_steps=1, per_device_train_batch_size=1, report_to="none"
    )
    data = LMDataset(chunk_texts(TEXTS, tok, 32))
    return Trainer(
        tiny_llama(tok), args, train_dataset=data, data_collator=UnlearningCollator(tok.pad_token_id)
    )


def test_training_and_warnings_go_to_the_log_file_not_the_terminal(tmp_path: Path, tok, capfd) -> None:
    log = tmp_path / "run" / "run.log"
    root_handlers = logging.getLogger().handlers[:]
    with run_display(log) as display:
        assert current_display() is display
        train_and_save(tiny_trainer(tok, tmp_path / "scratch"), tok, tmp_path / "model", "training tiny")
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
        hf_logging.get_logger("transformers.tiny").warning("a transformers warning")
    terminal = capfd.readouterr()
    for stream in (terminal.out, terminal.err):
        assert "{'loss'" not in stream and "'train_runtime'" not in stream
        assert "warning" not in stream.lower()
    written = log.read_text()
    # the Trainer's log dicts: one per logged step (logging_steps=1), then the run's summary
    assert sum("training tiny, step" in line and "'loss'" in line for line in written.splitlines()) == 3
    assert "'train_runtime'" in written
    assert "UserWarning: a library's warning" in written and "a transformers warning" in written
    # afterwards: the terminal's handlers back, and warnings shown again
    assert logging.getLogger().handlers == root_handlers
    assert not current_display().live.is_started
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        warnings.warn("after", UserWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == ["after"]


def test_a_run_refused_before_it_logs_leaves_no_folder(tmp_path: Path) -> None:
    with run_display(tmp_path / "run" / "run.log"):
        pass
    assert not (tmp_path / "run").exists()
