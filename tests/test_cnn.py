"""The CNN track: LSQ maths, Q-MUL / OEU pieces, metrics, loaders, every method, the CLI."""

from __future__ import annotations

import copy
import gzip
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llm_unlearn.cli import main
from llm_unlearn.cnn.data import DataError, Split, forget_indices, make_split, read_idx
from llm_unlearn.cnn.loop import (
    Batches,
    TrainSettings,
    augment_batch,
    fit,
    lr_factor,
    paired_batch_sizes,
    param_groups,
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
from llm_unlearn.cnn.metrics import average_gap, mia_efficacy, predict, t_interval
from llm_unlearn.cnn.models import build_model
from llm_unlearn.cnn.qat import (
    LSQQuantizer,
    QConv2d,
    QLinear,
    export_codes,
    lsq_quantize,
    qrange,
    quantize_model,
)
from llm_unlearn.cnn.recipe import load_cnn_recipe, validate_cnn_recipe
from llm_unlearn.cnn.run import load_split, new_model, trained_from_scratch
from llm_unlearn.projection import combine
from llm_unlearn.recipe import RecipeError

ROOT = Path(__file__).resolve().parents[1]


# ---- LSQ -------------------------------------------------------------------------------------


def test_qrange_signed_and_unsigned():
    assert qrange(4, signed=True) == (8, 7)
    assert qrange(4, signed=False) == (0, 15)


def test_lsq_forward_is_round_clip_times_step():
    v = torch.tensor([-3.0, -0.74, -0.26, 0.0, 0.24, 0.26, 0.9, 5.0])
    s = torch.tensor(0.5)
    out = lsq_quantize(v, s, q_n=4, q_p=3, numel=v.numel())
    expected = torch.tensor([-4, -1, -1, 0, 0, 1, 2, 3], dtype=torch.float) * 0.5  # round(clip(v/s, -4, 3))
    torch.testing.assert_close(out, expected)
    # SGD can carry a learned step through zero; its magnitude is the step
    torch.testing.assert_close(lsq_quantize(v, -s, q_n=4, q_p=3, numel=v.numel()), expected)


def test_ste_passes_gradient_inside_the_range_only():
    v = torch.tensor([-3.0, -1.2, 0.3, 1.4, 2.0], requires_grad=True)
    lsq_quantize(v, torch.tensor(0.5), q_n=4, q_p=3, numel=5).sum().backward()
    # clip range is [-4·0.5, 3·0.5] = [-2, 1.5]
    torch.testing.assert_close(v.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


def test_step_gradient_is_scaled_by_one_over_sqrt_n_qp():
    v = torch.tensor([-3.0, -0.7, 0.3, 0.8, 2.0])
    s = torch.tensor(0.5, requires_grad=True)
    q_n, q_p, n = 4, 3, 5
    lsq_quantize(v, s, q_n, q_p, numel=n).sum().backward()
    # LSQ: ∂v̂/∂s = −Q_N below, Q_P above, round(v/s) − v/s inside
    per_element = [-q_n, round(-1.4) + 1.4, round(0.6) - 0.6, round(1.6) - 1.6, q_p]
    assert s.grad.item() == pytest.approx(sum(per_element) / math.sqrt(n * q_p), rel=1e-5)


def test_activation_quantizer_initialises_step_and_sign_and_counts_per_sample():
    q = LSQQuantizer(4, signed=None, per_sample=True)
    x = torch.rand(6, 3, 4, 4)  # non-negative, as after ReLU
    q(x)
    assert not bool(q.signed)
    assert q.step.item() == pytest.approx(2 * x.abs().mean().item() / math.sqrt(15), rel=1e-5)
    signed = LSQQuantizer(4, signed=None, per_sample=True)
    signed(x - 0.5)
    assert bool(signed.signed)


def test_quantize_model_keeps_first_conv_and_classifier_full_precision_and_exports_codes():
    model = quantize_model(build_model("resnet18", 10, 3, 4), 4, 4)
    assert type(model.conv1) is nn.Conv2d and type(model.fc) is nn.Linear
    assert isinstance(model.layers[0][0].conv1, QConv2d)
    model(torch.randn(2, 3, 8, 8))
    codes = export_codes(model)
    layer = model.layers[1][0].conv1
    entry = codes["layers.1.0.conv1"]
    assert entry["codes"].dtype == torch.int32 and entry["codes"].abs().max() <= 8
    torch.testing.assert_close(
        entry["codes"].float() * entry["weight_step"], layer.weight_quant(layer.weight)
    )
    mobile = quantize_model(build_model("mobilenetv2", 5, 1, 0.25), 2, 8, full_precision_ends=False)
    assert isinstance(mobile.features[0], QConv2d) and isinstance(mobile.classifier, QLinear)
    assert mobile(torch.randn(2, 1, 8, 8)).shape == (2, 5)


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


# ---- metrics ---------------------------------------------------------------------------------


def test_mia_efficacy_on_separable_confidences():
    rng = np.random.default_rng(0)
    members = rng.uniform(0.9, 1.0, 200)
    non_members = rng.uniform(0.1, 0.4, 100)
    assert mia_efficacy(members, non_members, rng.uniform(0.9, 1.0, 50)) == pytest.approx(0, abs=2)
    assert mia_efficacy(members, non_members, rng.uniform(0.1, 0.4, 50)) == pytest.approx(100, abs=2)


def test_average_gap_by_hand():
    retrain = {"FA": 90.0, "RA": 99.0, "TA": 92.0, "MIA": 10.0}
    row = {"FA": 95.0, "RA": 98.0, "TA": 91.0, "MIA": 16.0}
    assert average_gap(row, retrain) == pytest.approx((5 + 1 + 1 + 6) / 4)


# ---- data ------------------------------------------------------------------------------------


def _cifar_batch(path: Path, n: int, label_key: bytes, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: list(rng.integers(0, classes, n)),
    }
    path.write_bytes(pickle.dumps(batch))


def test_cifar10_loader_reads_python_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _cifar_batch(folder / f"data_batch_{i}", 8, b"labels", 10, i)
    _cifar_batch(folder / "test_batch", 6, b"labels", 10, 9)
    split = make_split("cifar10", tmp_path, val_fraction=0.1, forget_ratio=0.25)
    assert split.x_train.shape == (36, 3, 32, 32) and len(split.y_val) == 4 and len(split.y_test) == 6
    assert len(split.forget) == 9 and len(split.retain) == 27
    raw = pickle.loads((folder / "test_batch").read_bytes())
    assert split.y_test.tolist() == raw[b"labels"]


def test_cifar100_loader_uses_fine_labels_and_names_a_missing_file(tmp_path):
    _cifar_batch(tmp_path / "train", 20, b"fine_labels", 100, 0)
    with pytest.raises(DataError, match="test: file not found"):
        make_split("cifar100", tmp_path)
    _cifar_batch(tmp_path / "test", 5, b"fine_labels", 100, 1)
    split = make_split("cifar100", tmp_path, val_fraction=0.0, forget_classes=(int(split_label(tmp_path)),))
    assert split.num_classes == 100 and len(split.y_train) == 20


def split_label(folder: Path) -> int:
    return pickle.loads((folder / "train").read_bytes())[b"fine_labels"][0]


def test_svhn_loader_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    rng = np.random.default_rng(0)
    for name, n in (("train", 12), ("test", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10]] + [[k % 9 + 1] for k in range(n - 1)], dtype=np.uint8)
        savemat(tmp_path / f"{name}_32x32.mat", {"X": x, "y": y})
    split = make_split("svhn", tmp_path, val_fraction=0.0, forget_ratio=0.25)
    assert split.x_test.shape == (4, 3, 32, 32)
    assert split.y_test.tolist() == [0, 1, 2, 3]


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_loader_reads_gzipped_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte").tolist() == list(range(10))
    split = make_split("fashion_mnist", tmp_path, val_fraction=0.1, forget_ratio=0.1)
    assert split.x_train.shape == (27, 1, 28, 28) and split.y_test.tolist() == list(range(10))
    assert split.x_train.mean(dim=(0, 2, 3)).abs().item() < 1e-4  # normalised with train statistics


def test_digits_split_holds_out_a_test_set_and_forgets_whole_classes():
    split = make_split("digits", forget_classes=(3,))
    assert len(split.y_test) == round(1797 / 6)
    assert (split.y_train[split.forget] == 3).all() and (split.y_train[split.retain] != 3).all()
    with pytest.raises(DataError, match="forget_classes"):
        make_split("digits", forget_classes=(10,))


def test_random_forget_set_has_the_ratio_and_depends_on_seed():
    labels = torch.arange(200) % 10
    a, b = forget_indices(labels, 0.1, None, 0), forget_indices(labels, 0.1, None, 1)
    assert len(a) == 20 and len(set(labels[a].tolist())) > 1 and a.tolist() != b.tolist()


def test_step_sizes_get_no_weight_decay():
    model = quantize_model(build_model("resnet18", 4, 1, 4), 4, 4)
    decayed, steps = param_groups(model, 5e-4)
    assert steps["weight_decay"] == 0.0 and decayed["weight_decay"] == 5e-4
    assert len(steps["params"]) == 2 * sum(isinstance(m, QConv2d | QLinear) for m in model.modules())
    assert len(decayed["params"]) + len(steps["params"]) == len(list(model.parameters()))


def test_paired_batches_split_in_forget_retain_proportion_and_augmentation_keeps_shape():
    assert paired_batch_sizes(256, 4500, 40500) == (26, 230)
    assert paired_batch_sizes(8, 1, 1000) == (1, 7)
    assert [lr_factor(i, 10, "cosine") for i in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    assert lr_factor(7, 10, "constant") == 1.0
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).view(2, 3, 8, 8)
    assert augment_batch(x, "crop_flip", torch.Generator().manual_seed(0)).shape == x.shape
    assert augment_batch(x, "none", torch.Generator()) is x


# ---- every method, recipes, CLI --------------------------------------------------------------


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


def _demo_data() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "recipes" / "cnn_demo.yaml").read_text())


def test_recipe_errors_name_the_field():
    data = _demo_data()
    data["methods"] = [{"name": "ga", "epochs": 1, "lr": 0.1, "scope": "global"}]
    with pytest.raises(RecipeError, match=r"methods\.0: .*scope is not an option of 'ga'"):
        validate_cnn_recipe(data)
    data["methods"] = [{"name": "retrain", "epochs": 1, "lr": 0.1}]
    with pytest.raises(RecipeError, match=r"methods\.0\.name: 'retrain' always runs"):
        validate_cnn_recipe(data)
    data["methods"] = [{"name": "npo", "epochs": 1, "lr": 0.1}]
    with pytest.raises(RecipeError, match="unknown CNN method 'npo'; known: ft, ga"):
        validate_cnn_recipe(data)
    with pytest.raises(RecipeError, match="data.source: unknown CNN data source 'imagenet'"):
        validate_cnn_recipe({**_demo_data(), "data": {"source": "imagenet"}})
    with pytest.raises(RecipeError, match="model.bits: unknown field; allowed here: arch, width"):
        validate_cnn_recipe({**_demo_data(), "model": {"bits": 4}})


@pytest.mark.parametrize("name", ["qmul_cifar10", "qmul_cifar100", "oeu_cifar100_30", "cnn_demo"])
def test_shipped_recipes_validate(name):
    recipe = load_cnn_recipe(ROOT / "recipes" / f"{name}.yaml")
    assert {m.name for m in recipe.methods} >= {"qmul"}


def test_cli_runs_a_shrunk_demo_and_writes_the_ag_table(tmp_path, capsys):
    shrink = ["model.width=2", "original.epochs=1", "retrain.epochs=1", f"output.dir={tmp_path}"]
    shrink += [f"methods.{i}.epochs=1" for i in range(len(_demo_data()["methods"]))]
    assert (
        main(["cnn", str(ROOT / "recipes" / "cnn_demo.yaml"), *(a for s in shrink for a in ("--set", s))])
        == 0
    )
    assert str(tmp_path / "ag_table.md") in capsys.readouterr().out
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    names = [r["method"] for r in rows]
    assert names[:2] == ["original", "retrain"] and {"qmul", "oeu", "oeu+global"} <= set(names)
    assert rows[1]["AG"] == 0.0 and all(0 <= r[k] <= 100 for r in rows for k in ("FA", "RA", "TA", "MIA"))
    assert (tmp_path / "checkpoints" / "qmul.safetensors").is_file()
    assert len(next(r for r in rows if r["method"] == "qmul")["agr_weights"]) == 1  # once per epoch
    table = (tmp_path / "ag_table.md").read_text()
    assert all(f"| {n} |" in table for n in names)


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


# ---- issue 20: the papers' rules on hand-sized cases, and the benchmark's statistics -------------


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


def test_t_interval_by_hand():
    # [1, 2, 3]: mean 2, s = 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / √3
    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(t_interval([5.0])[1])


def test_original_checkpoint_serves_every_forget_ratio_and_retrain_does_not(tmp_path):
    data = _demo_data()
    data["data"] |= {"max_train": 60, "max_test": 30}
    data["model"]["width"] = 2
    data["original"] = data["retrain"] = {"epochs": 1, "lr": 0.05, "batch_size": 32}
    recipes = [validate_cnn_recipe({**data, "data": {**data["data"], "forget_ratio": r}}) for r in (0.1, 0.3)]
    accel = Accelerator(cpu=True)
    timing = {}
    for i, recipe in enumerate(recipes):
        split = load_split(recipe)
        for role in ("original", "retrain"):
            model, timing[role, i] = trained_from_scratch(recipe, split, role, accel, tmp_path)
            if role == "original" and i == 1:
                shared = model
    assert timing["original", 1]["cached"] and not timing["retrain", 1]["cached"]
    fresh = METHODS.get("original")(10, 0)
    again = fit(new_model(recipes[1], load_split(recipes[1])), fresh, load_split(recipes[1]),
                recipes[1].settings(recipes[1].original), accel)  # fmt: skip
    for p, q in zip(shared.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q)  # training the original never reads the forget set


def _benchmark_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("cnn_benchmark", ROOT / "eval" / "cnn_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_grid_and_paired_orderings():
    bench = _benchmark_module()
    assert bench.lr_grid("ft") == [0.00333, 0.01, 0.03] and bench.lr_grid("ga") == [1e-4, 1e-3, 1e-2]
    assert bench.lr_grid("salun") == [0.00433, 0.013, 0.039]
    rows = {
        "qmul": [{"AG": a} for a in (1.0, 2.0, 3.0)],
        "ft": [{"AG": a} for a in (3.0, 4.0, 5.5)],  # qmul − ft = −2, −2, −2.5
        "ga": [{"AG": a} for a in (9.0, 9.0, 9.0)],
    }
    out = bench.paired(rows, "qmul", ("ft", "ga"))
    assert out["b"] == "ft" and out["verdict"] == "holds"
    assert out["diff"] == pytest.approx(list(t_interval([-2.0, -2.0, -2.5])))
    assert bench.paired(rows, "ga", "qmul")["verdict"] == "reversed"
