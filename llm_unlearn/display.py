"""The run's one terminal display, and the log file everything else goes to.

A run shows one rich `Progress` on stderr: a bar per stage (each demo model's training, the
unlearning runs, the audit's cells, a relearning column's training), each with the time it has
taken and rich's estimate of the time left from its rate so far. Hugging Face Trainer's log dicts
(`{'loss': ...}`), Python warnings (torch's `pin_memory` on a CPU, ...) and transformers' own log
lines would break into that display, so inside `run_display` they go to the run folder's log file
instead (`RunFolder.log`), and the Trainer's own console callbacks are swapped for `TrainingProgress`.
The display in use is a context variable, so the stages deep in the call tree (a demo model trained
while its checkpoint is resolved, a relearning column trained inside the audit) find it without
each caller handing it down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import TrainingArguments
from transformers.trainer_callback import (
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from transformers.utils import logging as hf_logging

if TYPE_CHECKING:  # transformers' Trainer module pulls in datasets and pandas: an `evaluate` needs neither
    from transformers import Trainer

#: every line a run prints goes through this console, so that it lands above the live display
console = Console(stderr=True)
logger = logging.getLogger("llm_unlearn")
_DISPLAY: ContextVar[Progress | None] = ContextVar("llm_unlearn_display", default=None)


def progress_bar(show: bool = True) -> Progress:
    """A rich Progress with the columns every stage shows: what, bar, done/total, elapsed, left."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    )


def current_display() -> Progress:
    """The display of the run in progress; outside one, a disabled one (a library call is silent)."""
    return _DISPLAY.get() or progress_bar(show=False)


class _LogFile(logging.FileHandler):
    """A log file opened on the first record (its folder made then): a run refused before it writes
    anything leaves no folder behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))

    def _open(self) -> TextIO:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


@contextmanager
def run_display(log_file: Path, show: bool = True) -> Iterator[Progress]:
    """The run's display on the terminal (`show`: the main process only), with warnings, library
    log lines and the training logs sent to `log_file` while it lasts; all restored afterwards."""
    handler = _LogFile(log_file)
    # the root logger's handlers are swapped, not added to: a library that configured logging on
    # import (a basicConfig stderr handler) would otherwise print every record on the terminal too
    root = logging.getLogger()
    handlers, level = root.handlers[:], logger.level
    root.handlers = [handler]
    logger.setLevel(logging.INFO)  # the training logs are INFO: the file keeps them
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the file
    hf_logging.disable_default_handler()  # transformers' stderr handler; its records propagate instead
    hf_logging.enable_propagation()
    progress = progress_bar(show)
    token = _DISPLAY.set(progress)
    progress.start()
    try:
        yield progress
    finally:
        if progress.tasks:
            progress.stop()
        else:  # nothing shown (a run refused before its first stage): no blank line left behind
            progress.live.transient = True
            progress.live.stop()  # Progress.stop would print a newline to a non-terminal
        _DISPLAY.reset(token)
        hf_logging.disable_propagation()
        hf_logging.enable_default_handler()
        logging.captureWarnings(False)
        logger.setLevel(level)
        root.handlers = handlers
        handler.close()


class TrainingProgress(TrainerCallback):
    """A Trainer's steps as a bar of the run's display, and its log dicts as lines of the log file:
    in place of transformers' `ProgressCallback` (a tqdm bar, log dicts printed through it) and
    `PrinterCallback` (log dicts printed)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.display: Progress | None = None
        self.task: TaskID | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        if state.is_world_process_zero:
            self.display = current_display()
            self.task = self.display.add_task(self.what, total=state.max_steps)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        if self.task is not None:
            self.display.update(self.task, completed=state.global_step)

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs
    ) -> None:
        if state.is_world_process_zero:
            logger.info("%s, step %d: %s", self.what, state.global_step, logs)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        if self.task is not None:  # done: its line leaves the display, which stays a few lines tall
            self.display.remove_task(self.task)
            self.task = None


def quiet(trainer: Trainer, what: str) -> Trainer:
    """`trainer` reporting to the run's display and log file, not printing to the terminal."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(TrainingProgress(what))
    return trainer
