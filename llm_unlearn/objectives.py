"""Unlearning objectives as pure functions of logits and labels.

No model calls and no state: the trainer runs the forward passes and composes these terms,
so each formula can be checked against a hand-computed number. Conventions (METHODS.md):
`labels` hold token ids with -100 on padding and prompt tokens; logits at position t predict
token t+1, so every function shifts once, the way Hugging Face causal LMs compute `.loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits [B, T-1, V], targets [B, T-1] (ignored ones set to 0) and their mask [B, T-1]."""
    logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    return logits, targets.masked_fill(~mask, 0), mask


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """−log p(x_t | x_<t) per predicted position [B, T-1] (0 where masked) and the mask."""
    logits, targets, mask = _shifted(logits, labels)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -logp * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """nll(θ, x) = Σ_t −log p_θ(x_t | x_<t) over label tokens, one value per sequence [B]."""
    nll, _ = token_nll(logits, labels)
    return nll.sum(dim=-1)


def ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ce(θ, x) = mean token cross-entropy over all label tokens of the batch (HF's `.loss`)."""
    nll, mask = token_nll(logits, labels)
    return nll.sum() / mask.sum().clamp(min=1)


def ga(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: L = −ce(θ, x_f)."""
    return -ce(logits, labels)


def npo(logits: torch.Tensor, labels: torch.Tensor, ref_nll: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Negative preference optimisation (Zhang et al. 2024).

    L = −(2/β) · mean_seq log σ(β · (nll(θ, x_f) − nll(θ₀, x_f)))

    on the per-SEQUENCE summed NLL (log π_θ(y|x) = −nll), not on raw logits. At θ = θ₀ the
    loss is (2/β)·log 2 and its gradient is −∇ mean_seq nll(θ, x_f): gradient ascent on the
    summed token NLL. `ref_nll` [B] is nll(θ₀, x_f) for the same sequences.
    """
    margin = sequence_nll(logits, labels) - ref_nll.to(logits.device, torch.float32)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def gdr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient descent on retain: L = ce(θ, x_r) (the trainer multiplies by λ)."""
    return ce(logits, labels)


def klr(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL retain regulariser: mean over retain label positions of KL(p_θ₀(·|x) ‖ p_θ(·|x)).

    Both distributions go through log_softmax (feeding raw logits to `kl_div` is a known bug
    of a reference implementation); zero at θ = θ₀.
    """
    logits, _, mask = _shifted(logits, labels)
    ref_logits = ref_logits[:, :-1, :].float()
    logp = torch.log_softmax(logits, dim=-1)
    ref_logp = torch.log_softmax(ref_logits, dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(dim=-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """OEU's forget term: L = −mean over label positions of H(p_θ(·|x_<t)).

    Minimising it maximises the predictive entropy on forget text, pushing its next-token
    distributions toward uniform (H ≤ log V) instead of away from the true token as GA does.
    """
    logits, _, mask = _shifted(logits, labels)
    logp = torch.log_softmax(logits, dim=-1)
    h = -(logp.exp() * logp).sum(dim=-1)
    return -(h * mask).sum() / mask.sum().clamp(min=1)


HINGE_DISTANCES = ("mean_abs", "l2", "linf")


def quail_hinge(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    distance: str = "mean_abs",
) -> torch.Tensor:
    """QUAIL's logit-space hinge: L = mean over forget label positions of relu(m − d(z_θ, z_θ₀)).

    d per position over the vocabulary: `mean_abs` = mean |z − z₀| (the paper's default),
    `l2` = ‖z − z₀‖₂, `linf` = max |z − z₀|. The term is zero once every position is at least
    m away from the reference, so it only acts where unlearning moved the logits too little
    to survive rounding. At θ = θ₀ (d = 0) its gradient is 0: the forget term must move θ
    first. m is in logit units (see `UnlearningConfig.hinge_margin` for how `auto` sets it).
    """
    if distance not in HINGE_DISTANCES:
        raise ValueError(f"distance must be one of {HINGE_DISTANCES}, got {distance!r}")
    logits, _, mask = _shifted(logits, labels)
    diff = logits - ref_logits[:, :-1, :].float()
    if distance == "mean_abs":
        d = diff.abs().mean(dim=-1)
    elif distance == "l2":
        d = torch.linalg.vector_norm(diff, dim=-1)
    else:
        d = diff.abs().amax(dim=-1)
    return (F.relu(margin - d) * mask).sum() / mask.sum().clamp(min=1)
