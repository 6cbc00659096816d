"""cnn/methods.py: Q-MUL's similar labels and weights, OEU's step, the entropy loss and SalUn's mask by
hand, and every method in real training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llm_unlearn.cnn.data import Split
from llm_unlearn.cnn.loop import (
    Batches,
    TrainSettings,
    fit,
)
from llm_unlearn.cnn.methods import (
    METHODS,
    OEU,
    QMUL,
    agr_weights,
    entropy_loss,
    entropy_ratio,
    saliency_mask,
    similar_labels,
)
from llm_unlearn.cnn.metrics import predict
from llm_unlearn.cnn.models import build_model
from llm_unlearn.cnn.qat import (
    quantize_model,
)
from llm_unlearn.projection import combine

# ---- Q-MUL, OEU, SalUn pieces -------------------------------------------------------------------


def test_similar_labels_is_argmin_over_other_classes_and_code_compat_is_off_by_one():
    probs = torch.tensor([[0.10, 0.50, 0.05, 0.35], [0.70, 0.05, 0.10, 0.15]])
    y = torch.tensor([1, 0])
    # row 0: |p_k − p_1| = 0.40, 0.45, 0.15 for k = 0, 2, 3 -> 3; row 1: 0.65, 0.60, 0.55 -> 3
    assert similar_labels(probs, y).tolist() == [3, 3]
    # the public code drops column y and keeps the shorter row's index: class 3 comes out as 2
    assert similar_labels(probs, y, code_compat=True).tolist() == [2, 2]


def test_agr_weights_formula():
    assert agr_weights(2.0, 6.0) == (0.75, 0.25)


def test_qmul_epoch_weights_come_from_mean_norms_over_equal_size_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x_f, t_f, x_r, y_r = (
        torch.randn(4, 4),
        torch.tensor([0, 1, 2, 0]),
        torch.randn(7, 4),
        torch.tensor([1] * 7),
    )
    forget = DataLoader(TensorDataset(x_f, t_f, t_f), batch_size=2)
    retain = DataLoader(TensorDataset(x_r, y_r), batch_size=3)

    def mean_norm(pairs):
        norms = []
        for x, y in pairs:
            grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
            norms.append(torch.cat([g.flatten() for g in grads]).norm())
        return torch.stack(norms).mean().item()

    # B = min(|D_f| = 4, retain batch 3) = 3, full batches only: forget [0:3], retain [0:3], [3:6]
    g_f = mean_norm([(x_f[:3], t_f[:3])])
    g_r = mean_norm([(x_r[:3], y_r[:3]), (x_r[3:6], y_r[3:6])])
    method = QMUL(3)
    method.on_epoch(model, Batches(forget, retain), Accelerator(cpu=True))
    assert method.alpha == pytest.approx((g_r / (g_f + g_r), g_f / (g_f + g_r)))
    assert method.diagnostics[0]["G_f"] == pytest.approx(g_f) and method.diagnostics[0]["batch"] == 3


def test_qmul_weights_are_even_when_forget_and_retain_are_the_same_data():
    # the same 12 samples as forget (batch 2 in the paired loop) and retain (batch 6): measured on
    # the loop's own batch sizes G_f would come out larger only because its batches are smaller
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    forget = DataLoader(TensorDataset(x, y, y), batch_size=2)
    retain = DataLoader(TensorDataset(x, y), batch_size=6)
    method = QMUL(3)
    method.on_epoch(model, Batches(forget, retain), Accelerator(cpu=True))
    assert method.alpha == pytest.approx((0.5, 0.5))


def test_entropy_loss_is_minus_mean_entropy():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    h = [math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    assert entropy_loss(logits).item() == pytest.approx(-sum(h) / 2)


def test_saliency_mask_keeps_the_largest_share_across_layers():
    mask = saliency_mask([torch.tensor([0.1, -5.0]), torch.tensor([[3.0, 0.2], [-0.3, 0.0]])], ratio=0.5)
    assert [m.tolist() for m in mask] == [[0.0, 1.0], [[1.0, 0.0], [1.0, 0.0]]]


def test_oeu_step_sets_combined_gradient_orthogonal_to_retain_per_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x_f, x_r, y_r = torch.randn(3, 4), torch.randn(5, 4), torch.randint(0, 3, (5,))
    model.zero_grad()
    nn.functional.cross_entropy(model(x_r), y_r).backward()
    g_r = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    OEU(3).step(model, (x_f, None, None, x_r, y_r), Accelerator(cpu=True))
    for p, r in zip(model.parameters(), g_r, strict=True):
        assert (
            torch.dot((p.grad - r).flatten(), r.flatten()).abs()
            < 1e-5 * (p.grad - r).norm() * r.norm() + 1e-9
        )
    model.zero_grad(set_to_none=True)
    entropy_loss(model(x_f)).backward()
    g_f = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    OEU(3, scope="global").step(model, (x_f, None, None, x_r, y_r), Accelerator(cpu=True))
    for p, g in zip(model.parameters(), combine(g_f, g_r, scope="global"), strict=True):
        torch.testing.assert_close(p.grad, g)


# ---- every method ---------------------------------------------------------------------------------


def tiny_split() -> Split:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=gen), torch.arange(40) % 4
    return Split(x, y, x[:4], y[:4], x[:8], y[:8], torch.arange(0, 40, 5), 4)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_changes_parameters(name):
    torch.manual_seed(0)
    split = tiny_split()
    model = quantize_model(build_model("resnet18", 4, 1, 4), 4, 4)
    model.train()(split.x_train[:16])
    before = [p.detach().clone() for p in model.parameters()]
    method = METHODS.get(name)(4, 0)
    fit(model, method, split, TrainSettings(epochs=1, lr=0.05, batch_size=16), Accelerator(cpu=True))
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) > len(changed) // 2


def test_salun_updates_only_the_salient_weights():
    torch.manual_seed(0)
    split = tiny_split()
    model = quantize_model(build_model("resnet18", 4, 1, 4), 4, 4)
    model.train()(split.x_train[:16])
    before = [p.detach().clone() for p in model.parameters()]
    method = METHODS.get("salun")(4, 0, saliency_ratio=0.3)
    settings = TrainSettings(epochs=1, lr=0.05, batch_size=16, weight_decay=0.0)
    fit(model, method, split, settings, Accelerator(cpu=True))
    moved = torch.cat([(b != p).flatten() for b, p in zip(before, model.parameters(), strict=True)])
    mask = torch.cat([m.flatten() for m in method.mask]).bool()
    assert not moved[~mask].any() and moved[mask].float().mean() > 0.5
    assert mask.float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_oeu_and_qmul_log_their_checks_during_real_training():
    # OEU: per-layer ⟨p, g_r⟩ ≈ 0 at every step of a real (quantized) run, and entropy/log K in (0, 1];
    # Q-MUL: Similar Labels is the runner-up class wherever the true class is top-1
    torch.manual_seed(0)
    split = tiny_split()
    settings = TrainSettings(epochs=2, lr=0.05, batch_size=16)
    for name in ("oeu", "qmul"):
        model = quantize_model(build_model("resnet18", 4, 1, 4), 4, 4)
        model.train()(split.x_train[:16])
        method = METHODS.get(name)(4, 0)
        fit(model, method, split, settings, Accelerator(cpu=True))
        assert len(method.diagnostics) == 2
        if name == "oeu":
            assert all(d["steps"] > 0 and d["max_abs_cos_p_gr"] < 1e-4 for d in method.diagnostics)
            assert all(0 < d["forget_entropy_ratio"] <= 1 for d in method.diagnostics)
            assert any(d["mean_abs_cos_gf_gr"] > 1e-3 for d in method.diagnostics)  # projection did work
        else:
            d = method.diagnostics[0]
            assert d["top1_is_y"] == 0 or d["runner_up_where_top1"] == 1.0
            assert d["alpha_f"] + d["alpha_r"] == pytest.approx(1.0)


def test_minimising_entropy_loss_drives_predictions_to_uniform():
    logits = torch.tensor([[4.0, 0.0, -1.0], [0.0, 3.0, 1.0]], requires_grad=True)
    opt = torch.optim.SGD([logits], lr=1.0)
    for _ in range(200):
        opt.zero_grad()
        entropy_loss(logits).backward()
        opt.step()
    torch.testing.assert_close(logits.softmax(-1), torch.full((2, 3), 1 / 3), atol=1e-3, rtol=0)


# ---- issue 20: the papers' rules on hand-sized cases -------------------------------------------------


def test_qmul_similar_labels_come_from_the_model_before_unlearning_by_hand():
    # an identity classifier fed log-probabilities: the model's softmax is exactly these rows
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.45, 0.1, 0.45]])
    y = torch.tensor([2, 1, 1])
    # row 0: y = 2 (p 0.2) is not top-1: |0.5−0.2| = 0.3, |0.3−0.2| = 0.1 -> class 1, not the top-1 class 0
    # row 1: y top-1: |0.1−0.6| = 0.5, |0.3−0.6| = 0.3 -> class 2, the runner-up
    # row 2: |0.45−0.1| for classes 0 and 2 tie -> argmin takes the first, class 0
    method = QMUL(3)
    assert method.forget_targets(model, probs.log(), y).tolist() == [1, 2, 0]
    assert method.labels["top1_is_y"] == pytest.approx(1 / 3) and method.labels["equals_y"] == 0.0


def test_qmul_step_is_one_forward_over_the_union_batch():
    # with BatchNorm, one forward over F ∪ R differs from separate forwards: check it is the former
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    x_f, t_f, x_r, y_r = (
        torch.randn(3, 4),
        torch.tensor([0, 1, 2]),
        torch.randn(9, 4),
        torch.randint(0, 3, (9,)),
    )
    method = QMUL(3)
    method.alpha = (0.7, 0.3)
    reference = copy.deepcopy(model)
    z = reference(torch.cat([x_f, x_r]))
    (0.7 * nn.functional.cross_entropy(z[:3], t_f) + 0.3 * nn.functional.cross_entropy(z[3:], y_r)).backward()
    method.step(model, (x_f, None, t_f, x_r, y_r), Accelerator(cpu=True))
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_oeu_drives_forget_predictions_toward_uniform_in_real_training():
    torch.manual_seed(0)
    split = tiny_split()
    model = quantize_model(build_model("resnet18", 4, 1, 4), 4, 4)
    model.train()(split.x_train[:16])
    accel = Accelerator(cpu=True)
    fit(model, METHODS.get("original")(4, 0), split, TrainSettings(epochs=15, lr=0.05, batch_size=8), accel)
    x_f = split.x_train[split.forget]
    before = entropy_ratio(predict(model, x_f).log())
    fit(model, OEU(4), split, TrainSettings(epochs=4, lr=0.05, batch_size=16), accel)
    after = entropy_ratio(predict(model, x_f).log())
    assert before < 0.8 and after > before + 0.1, (before, after)
