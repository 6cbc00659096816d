"""CNN training and unlearning methods, each a small class over the loop in `loop.py`.

`original` trains on all of train and `retrain` on retain only, both from scratch; the
unlearning methods start from the original model:

| name   | data   | loss per step |
|--------|--------|---------------|
| ft     | retain | CE(x_r, y_r) |
| ga     | forget | −CE(x_f, y_f) |
| rl     | paired | CE over the union batch, forget samples relabelled at random (k ≠ y, fixed once) |
| salun  | paired | rl, with gradients masked to the weights of largest |Σ∇(−CE)| on the forget set |
| qmul   | paired | α_f·CE(x_f, similar labels) + α_r·CE(x_r, y_r), one union batch, α from gradient norms |
| oeu    | paired | g_f from −mean H(softmax) on forget, g_r from CE on retain; update combine(g_f, g_r) |

The constructor's keyword arguments are a method's recipe options.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import nn
from torch.nn import functional as F

from llm_unlearn.cnn.loop import Batches, Stream
from llm_unlearn.projection import Scope, add_retain, project
from llm_unlearn.registry import Registry

METHODS: Registry[type[CNNMethod]] = Registry("CNN method")
SCRATCH_METHODS = ("original", "retrain")


def similar_labels(scores: torch.Tensor, y: torch.Tensor, code_compat: bool = False) -> torch.Tensor:
    """Q-MUL's Similar Labels: argmin_{k≠y} |s_k − s_y| per row, s = probabilities.

    `code_compat=True` reproduces the public code: it drops column y and returns the argmin
    index of the shorter row without mapping it back, so a class above y comes out one too low
    (possibly as y itself); its `scores` are logits."""
    dist = (scores - scores.gather(1, y[:, None])).abs()
    rows = torch.arange(len(y))
    if code_compat:
        keep = torch.ones_like(dist, dtype=torch.bool)
        keep[rows, y] = False
        return dist[keep].view(len(y), -1).argmin(1)
    dist[rows, y] = torch.inf
    return dist.argmin(1)


def runner_up(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """argmax_{k≠y} p_k: the class Similar Labels must pick wherever y is the predicted class
    (then |p_k − p_y| = p_y − p_k, smallest for the largest other p_k)."""
    others = probs.clone()
    others[torch.arange(len(y)), y] = -torch.inf
    return others.argmax(1)


def layer_cosines(a: list[torch.Tensor | None], b: list[torch.Tensor | None]) -> torch.Tensor:
    """cos(a_i, b_i) per parameter tensor, over the tensors where both are present and non-zero."""
    cos = [
        torch.dot(x.flatten().float(), z.flatten().float()) / (x.norm() * z.norm())
        for x, z in zip(a, b, strict=True)
        if x is not None and z is not None and x.norm() > 0 and z.norm() > 0
    ]
    return torch.stack(cos) if cos else torch.zeros(0)


def entropy_ratio(logits: torch.Tensor) -> float:
    """mean H(softmax(z)) / log K: 1 for uniform predictions, 0 for one-hot."""
    return float(-entropy_loss(logits) / torch.log(torch.tensor(float(logits.shape[-1]))))


def agr_weights(g_f: float, g_r: float) -> tuple[float, float]:
    """Adaptive Gradient Reweighting: (α_f, α_r) = (G_r, G_f) / (G_f + G_r)."""
    return g_r / (g_f + g_r), g_f / (g_f + g_r)


def random_other_labels(y: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly random label k ≠ y per sample."""
    return (y + torch.randint(1, num_classes, y.shape, generator=gen)) % num_classes


def saliency_mask(grads: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """SalUn's mask: 1 on the `ratio` share of all weights with the largest |g|, over all layers."""
    flat = torch.cat([g.abs().flatten() for g in grads])
    keep = torch.zeros_like(flat)
    # by rank, not by threshold: ties (many exact zeros where STE clips) must not widen the mask
    keep[flat.topk(max(1, round(ratio * flat.numel()))).indices] = 1
    return [
        m.view_as(g).to(g.dtype) for m, g in zip(keep.split([g.numel() for g in grads]), grads, strict=True)
    ]


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """−mean H(softmax(z)) = mean Σ_k p_k log p_k: minimising it drives predictions to uniform."""
    logp = logits.log_softmax(-1)
    return (logp.exp() * logp).sum(-1).mean()


def _grads(model: nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


class CNNMethod:
    """Defaults: stream the retain set with true labels, no setup, CE step."""

    stream: Stream = "retain"
    from_scratch = False

    def __init__(self, num_classes: int, seed: int = 0) -> None:
        self.num_classes = num_classes
        self.seed = seed
        #: what a method measures while it runs (per epoch), recorded beside its metrics
        self.diagnostics: list[dict[str, float]] = []

    def forget_targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y

    def setup(self, model: nn.Module, batches: Batches, accelerator: Accelerator) -> None:
        return None

    def on_epoch(self, model: nn.Module, batches: Batches, accelerator: Accelerator) -> None:
        return None

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, ...], accelerator: Accelerator) -> float:
        loss = F.cross_entropy(model(batch[0]), batch[1])
        accelerator.backward(loss)
        return loss.item()


@METHODS.register("original")
class Original(CNNMethod):
    stream: Stream = "train"
    from_scratch = True


@METHODS.register("retrain")
class Retrain(CNNMethod):
    from_scratch = True


@METHODS.register("ft")
class FineTune(CNNMethod):
    pass


@METHODS.register("ga")
class GradientAscent(CNNMethod):
    stream: Stream = "forget"

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, ...], accelerator: Accelerator) -> float:
        loss = -F.cross_entropy(model(batch[0]), batch[1])
        accelerator.backward(loss)
        return loss.item()


@METHODS.register("rl")
class RandomLabels(CNNMethod):
    stream: Stream = "paired"

    def forget_targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return random_other_labels(y, self.num_classes, torch.Generator().manual_seed(self.seed))

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, ...], accelerator: Accelerator) -> float:
        x_f, _, t_f, x_r, y_r = batch
        loss = F.cross_entropy(model(torch.cat([x_f, x_r])), torch.cat([t_f, y_r]))
        accelerator.backward(loss)
        return loss.item()


@METHODS.register("salun")
class SalUn(RandomLabels):
    """RL on the salient weights only: the mask keeps `saliency_ratio` of all parameters."""

    def __init__(self, num_classes: int, seed: int = 0, saliency_ratio: float = 0.5) -> None:
        super().__init__(num_classes, seed)
        self.saliency_ratio = saliency_ratio
        self.mask: list[torch.Tensor] = []

    def setup(self, model: nn.Module, batches: Batches, accelerator: Accelerator) -> None:
        model.eval()  # as SalUn: BN statistics are not moved while measuring
        model.zero_grad(set_to_none=True)
        for x, y, _ in batches.forget:
            accelerator.backward(-F.cross_entropy(model(x), y))
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
        self.mask = saliency_mask(grads, self.saliency_ratio)
        model.zero_grad(set_to_none=True)
        model.train()

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, ...], accelerator: Accelerator) -> float:
        loss = super().step(model, batch, accelerator)
        for p, m in zip(model.parameters(), self.mask, strict=True):
            if p.grad is not None:
                p.grad.mul_(m)
        return loss


@METHODS.register("qmul")
class QMUL(CNNMethod):
    """Q-MUL: Similar Labels (once, from the model before unlearning) and Adaptive Gradient
    Reweighting (α recomputed before each epoch from mean per-batch gradient norms).

    G_f and G_r are measured on batches of one size B = min(|D_f|, retain batch size), full
    batches only, at most `agr_batches` of each set (all when None). The norm of a mean gradient
    over n samples grows as n shrinks (its noise part goes as 1/√n), so measuring the forget set
    on the paired loop's small forget batches (26 of 256 at 10 %) would inflate G_f by about
    √(b_r/b_f) and shrink α_f for a reason that has nothing to do with the data."""

    stream: Stream = "paired"

    def __init__(
        self, num_classes: int, seed: int = 0, code_compat: bool = False, agr_batches: int | None = None
    ) -> None:
        super().__init__(num_classes, seed)
        self.code_compat = code_compat
        self.agr_batches = agr_batches
        self.alpha = (0.5, 0.5)
        self.history: list[tuple[float, float]] = []
        self.labels: dict[str, float] = {}

    def forget_targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = _logits(model, x)
        probs = logits.softmax(-1)
        targets = similar_labels(logits if self.code_compat else probs, y, self.code_compat)
        predicted = probs.argmax(1) == y
        self.labels = {  # how often the rule reduces to "the runner-up class" (it must, where y is top-1)
            "top1_is_y": float(predicted.float().mean()),
            "runner_up_where_top1": float((targets == runner_up(probs, y))[predicted].float().mean()),
            "equals_y": float((targets == y).float().mean()),
        }
        return targets

    def _mean_grad_norm(
        self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, size: int, accelerator: Accelerator
    ) -> float:
        n = len(t) // size if self.agr_batches is None else min(len(t) // size, self.agr_batches)
        norms = []
        for i in range(n):
            model.zero_grad(set_to_none=True)
            xb, tb = (v[i * size : (i + 1) * size].to(accelerator.device) for v in (x, t))
            accelerator.backward(F.cross_entropy(model(xb), tb))
            norms.append(
                torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm()
            )
        model.zero_grad(set_to_none=True)
        return float(torch.stack(norms).mean())

    def on_epoch(self, model: nn.Module, batches: Batches, accelerator: Accelerator) -> None:
        x_f, _, t_f = batches.forget.dataset.tensors
        x_r, y_r = batches.retain.dataset.tensors
        # accelerate's prepared loader keeps its size in total_batch_size (batch_size is None)
        retain_batch = getattr(batches.retain, "total_batch_size", None) or batches.retain.batch_size
        size = min(len(t_f), retain_batch)
        model.eval()  # measuring must not move BN statistics
        g_f = self._mean_grad_norm(model, x_f, t_f, size, accelerator)
        g_r = self._mean_grad_norm(model, x_r, y_r, size, accelerator)
        model.train()
        self.alpha = agr_weights(g_f, g_r)
        self.history.append(self.alpha)
        self.diagnostics.append({"G_f": g_f, "G_r": g_r, "alpha_f": self.alpha[0], "alpha_r": self.alpha[1],
                                 "batch": size, **self.labels})  # fmt: skip

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, ...], accelerator: Accelerator) -> float:
        x_f, _, t_f, x_r, y_r = batch
        a_f, a_r = self.alpha
        # one forward over the union batch, as the paper trains on D'_f ∪ D'_r (and as RL does):
        # two forwards would normalise the few forget samples (13 of 128 at 10 %) by their own
        # BatchNorm statistics and move the running statistics on forget-only batches
        logits = model(torch.cat([x_f, x_r]))
        loss = a_f * F.cross_entropy(logits[: len(x_f)], t_f) + a_r * F.cross_entropy(logits[len(x_f) :], y_r)
        accelerator.backward(loss)
        return loss.item()


@METHODS.register("oeu")
class OEU(CNNMethod):
    """OEU: entropy on forget, CE on retain, two backward passes, p.grad = p + g_r with
    p = project(g_f, g_r) per layer (`scope="layer"`) or over all parameters (`"global"`).

    Per epoch it logs the largest per-layer |cos(p, g_r)| over its steps (≈ 0 at α = 1, layer
    scope), the mean per-layer |cos(g_f, g_r)| before projection, and the forget batches' mean
    entropy / log K (→ 1 as predictions go uniform)."""

    stream: Stream = "paired"

    def __init__(self, num_classes: int, seed: int = 0, alpha: float = 1.0, scope: Scope = "layer") -> None:
        super().__init__(num_classes, seed)
        self.alpha = alpha
        self.scope = scope

    def _new_epoch(self) -> None:
        self.diagnostics.append({"steps": 0, "max_abs_cos_p_gr": 0.0, "mean_abs_cos_gf_gr": 0.0,
                                 "forget_entropy_ratio": 0.0})  # fmt: skip

    def on_epoch(self, model: nn.Module, batches: Batches, accelerator: Accelerator) -> None:
        self._new_epoch()

    def _log(self, g_f: list, g_r: list, p: list, logits_f: torch.Tensor) -> None:
        if not self.diagnostics:  # a step outside `fit` (a test calling step directly)
            self._new_epoch()
        d = self.diagnostics[-1]
        n = d["steps"]
        cos_p = layer_cosines(p, g_r).abs()
        d["max_abs_cos_p_gr"] = max(d["max_abs_cos_p_gr"], float(cos_p.max()) if len(cos_p) else 0.0)
        for key, value in (
            ("mean_abs_cos_gf_gr", float(layer_cosines(g_f, g_r).abs().mean())),
            ("forget_entropy_ratio", entropy_ratio(logits_f.detach())),
        ):
            d[key] = (d[key] * n + value) / (n + 1)  # running mean over the epoch's steps
        d["steps"] = n + 1

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, ...], accelerator: Accelerator) -> float:
        x_f, _, _, x_r, y_r = batch
        logits_f = model(x_f)
        forget = entropy_loss(logits_f)
        accelerator.backward(forget)
        g_f = _grads(model)
        model.zero_grad(set_to_none=True)
        retain = F.cross_entropy(model(x_r), y_r)
        accelerator.backward(retain)
        g_r = _grads(model)
        p = project(g_f, g_r, self.alpha, self.scope)
        for param, g in zip(model.parameters(), add_retain(p, g_r), strict=True):
            param.grad = g
        self._log(g_f, g_r, p, logits_f)
        return forget.item() + retain.item()
