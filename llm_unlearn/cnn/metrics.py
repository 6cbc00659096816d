"""FA, RA, TA, MIA-efficacy and the Average Gap (AG) against Retrain, as in METHODS.md.

All four are percentages. MIA-efficacy trains `SVC(C=3, gamma="auto", kernel="rbf")` on the
confidence p_y(x): members (1) are the first |test| retain samples, non-members (0) the test
set; MIA = 100 × the share of forget samples predicted non-member (higher = more forgotten).
`t_interval` gives a mean ± 95 % Student-t half-width over seeds.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy import stats
from sklearn.svm import SVC
from torch import nn

from llm_unlearn.cnn.data import Split

METRIC_NAMES = ("FA", "RA", "TA", "MIA")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Softmax probabilities, in eval mode (BN running statistics, quantizers as trained)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs = torch.cat(
        [model(x[i : i + batch_size].to(device)).softmax(-1).cpu() for i in range(0, len(x), batch_size)]
    )
    model.train(was_training)
    return probs


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy × 100."""
    return float((probs.argmax(-1) == y).float().mean() * 100)


def confidence(probs: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """p_y(x), the feature the MIA sees."""
    return probs.gather(1, y[:, None]).squeeze(1).numpy()


def mia_efficacy(conf_retain: np.ndarray, conf_test: np.ndarray, conf_forget: np.ndarray) -> float:
    """100 × share of forget samples an SVC (members: first |test| retain; non-members: test)
    predicts as non-members."""
    members = conf_retain[: len(conf_test)]
    x = np.concatenate([members, conf_test])[:, None]
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(conf_test))])
    svc = SVC(C=3, gamma="auto", kernel="rbf").fit(x, labels)
    return float((svc.predict(conf_forget[:, None]) == 0).mean() * 100)


def average_gap(row: dict[str, float], retrain: dict[str, float]) -> float:
    """AG = mean over FA, RA, TA, MIA of |metric − metric of Retrain|."""
    return float(np.mean([abs(row[k] - retrain[k]) for k in METRIC_NAMES]))


def evaluate(model: nn.Module, split: Split, heldout: Literal["test", "val"] = "test") -> dict[str, float]:
    """FA, RA, TA and MIA of `model` on `split`. `heldout="val"` puts the validation split in the
    test set's place (TA is then validation accuracy, and the MIA's non-members are validation
    samples): hyperparameters are chosen on it without the test set ever being seen."""
    forget, retain = split.forget, split.retain
    x_held, y_held = (split.x_test, split.y_test) if heldout == "test" else (split.x_val, split.y_val)
    p_train = predict(model, split.x_train)
    p_held = predict(model, x_held)
    y_f, y_r = split.y_train[forget], split.y_train[retain]
    return {
        "FA": accuracy(p_train[forget], y_f),
        "RA": accuracy(p_train[retain], y_r),
        "TA": accuracy(p_held, y_held),
        "MIA": mia_efficacy(
            confidence(p_train[retain], y_r),
            confidence(p_held, y_held),
            confidence(p_train[forget], y_f),
        ),
    }


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the two-sided Student-t interval over independent runs (seeds):
    half = t_{(1+c)/2, n−1} · s / √n with s the sample standard deviation (ddof 1). A single run
    has no spread to measure: its half-width is nan, not 0."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * stats.sem(x))
