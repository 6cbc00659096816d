"""The one training loop every CNN method runs through (accelerate-aware, seeded).

A method says which data it streams ("train", "retain", "forget" or "paired") and how one step
fills the gradients; the loop owns loaders, SGD, the schedule, augmentation and epochs.
A "paired" step sees a forget batch and a retain batch whose sizes split the batch in
proportion |F| : |R|, so an epoch is one pass over the retain set with the forget set cycled
alongside, as training on the shuffled union F ∪ R would mix them.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llm_unlearn.cnn.data import Split

log = logging.getLogger("llm_unlearn.cnn")
Stream = Literal["train", "retain", "forget", "paired"]
CROP_PAD = 4


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    lr: float
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant"] = "constant"
    augment: Literal["none", "crop", "crop_flip"] = "none"
    seed: int = 0


@dataclass
class Batches:
    """The prepared loaders of one run: forget batches are (x, y, target), the others (x, y)."""

    forget: DataLoader
    retain: DataLoader
    train: DataLoader | None = None


class Method(Protocol):
    stream: Stream
    from_scratch: bool

    def forget_targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def setup(self, model: nn.Module, batches: Batches, accelerator: Accelerator) -> None: ...

    def on_epoch(self, model: nn.Module, batches: Batches, accelerator: Accelerator) -> None: ...

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, ...], accelerator: Accelerator) -> float: ...


def augment_batch(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Random crop after zero-padding by 4 (and a horizontal flip for "crop_flip"), per sample."""
    if mode == "none":
        return x
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (CROP_PAD,) * 4)
    dev = x.device
    top = torch.randint(0, 2 * CROP_PAD + 1, (n,), generator=gen).to(dev)
    left = torch.randint(0, 2 * CROP_PAD + 1, (n,), generator=gen).to(dev)
    rows = (top[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    samples = torch.arange(n, device=dev)[:, None, None, None]
    out = padded[samples, torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    if mode == "crop_flip":
        flip = (torch.rand(n, generator=gen) < 0.5).to(dev)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def paired_batch_sizes(batch_size: int, n_forget: int, n_retain: int) -> tuple[int, int]:
    """(forget, retain) batch sizes in proportion |F| : |R|, at least one of each."""
    b_f = min(batch_size - 1, max(1, round(batch_size * n_forget / (n_forget + n_retain))))
    return b_f, batch_size - b_f


def lr_factor(step: int, total: int, schedule: str) -> float:
    """The learning-rate multiplier: ½(1 + cos(π·step/total)) for "cosine", 1 for "constant"."""
    return 0.5 * (1 + math.cos(math.pi * step / total)) if schedule == "cosine" else 1.0


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: on an LSQ step size it would only pull the grid toward zero."""
    steps = [p for n, p in model.named_parameters() if n.endswith("_quant.step")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("_quant.step")]
    return [{"params": rest, "weight_decay": weight_decay}, {"params": steps, "weight_decay": 0.0}]


def _loader(tensors: tuple[torch.Tensor, ...], batch_size: int, seed: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=True, generator=gen)


def _cycle(loader: DataLoader) -> Iterator:
    return itertools.chain.from_iterable(itertools.repeat(loader))


def fit(
    model: nn.Module, method: Method, split: Split, settings: TrainSettings, accelerator: Accelerator
) -> nn.Module:
    """Run `method` for `settings.epochs` epochs of SGD (momentum, weight decay) on `model`."""
    torch.manual_seed(settings.seed)
    x, y = split.x_train, split.y_train
    x_f, y_f, x_r, y_r = x[split.forget], y[split.forget], x[split.retain], y[split.retain]
    t_f = method.forget_targets(model, x_f, y_f)
    b_f, b_r = (
        paired_batch_sizes(settings.batch_size, len(y_f), len(y_r))
        if method.stream == "paired"
        else (settings.batch_size, settings.batch_size)
    )
    loaders = [_loader((x_f, y_f, t_f), b_f, settings.seed), _loader((x_r, y_r), b_r, settings.seed + 1)]
    if method.stream == "train":
        loaders.append(_loader((x, y), settings.batch_size, settings.seed + 2))
    optimizer = torch.optim.SGD(
        param_groups(model, settings.weight_decay), lr=settings.lr, momentum=settings.momentum
    )
    model, optimizer, *loaders = accelerator.prepare(model, optimizer, *loaders)
    batches = Batches(*loaders)
    main = {
        "train": batches.train,
        "retain": batches.retain,
        "forget": batches.forget,
        "paired": batches.retain,
    }
    total = settings.epochs * len(main[method.stream])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, total, settings.schedule))
    gen = torch.Generator().manual_seed(settings.seed + 3)
    model.train()
    method.setup(model, batches, accelerator)
    forget_cycle = _cycle(batches.forget)
    for epoch in range(settings.epochs):
        method.on_epoch(model, batches, accelerator)
        losses = []
        for batch in main[method.stream]:
            batch = (augment_batch(batch[0], settings.augment, gen), *batch[1:])
            if method.stream == "paired":
                x_fb, *rest = next(forget_cycle)
                batch = (augment_batch(x_fb, settings.augment, gen), *rest, *batch)
            optimizer.zero_grad(set_to_none=True)
            losses.append(method.step(model, batch, accelerator))
            optimizer.step()
            schedule.step()
        mean_loss = sum(losses) / max(1, len(losses))
        log.info("%s epoch %d/%d loss %.4f", type(method).__name__, epoch + 1, settings.epochs, mean_loss)
    model = accelerator.unwrap_model(model)
    accelerator.free_memory()
    return model
