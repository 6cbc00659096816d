import pytest
import torch

from llm_unlearn.projection import combine, project


def test_hand_computed_projection():
    # ĝ_f = (0.6, 0.8), ĝ_r = (1, 0): p ∝ (0, 0.8), rescaled to ‖g_f‖ = 5.
    (p,) = project([torch.tensor([3.0, 4.0])], [torch.tensor([2.0, 0.0])])
    assert torch.allclose(p, torch.tensor([0.0, 5.0]))
    (update,) = combine([torch.tensor([3.0, 4.0])], [torch.tensor([2.0, 0.0])])
    assert torch.allclose(update, torch.tensor([2.0, 5.0]))
    (half,) = project([torch.tensor([3.0, 4.0])], [torch.tensor([2.0, 0.0])], alpha=0.5)
    expected = torch.tensor([0.3, 0.8]) * (5 / torch.tensor([0.3, 0.8]).norm())
    assert torch.allclose(half, expected)


def test_layerwise_alpha_one_is_orthogonal_per_layer_and_keeps_norms():
    gen = torch.Generator().manual_seed(0)
    g_f = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    g_r = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    for p, f, r in zip(project(g_f, g_r), g_f, g_r, strict=True):
        assert abs(torch.dot(p.flatten(), r.flatten()).item()) < 1e-5
        assert torch.isclose(p.norm(), f.norm())
        assert p.shape == f.shape


def test_alpha_zero_leaves_the_forget_gradient_unchanged():
    gen = torch.Generator().manual_seed(1)
    g_f = [torch.randn(3, 3, generator=gen)]
    g_r = [torch.randn(3, 3, generator=gen)]
    assert torch.allclose(project(g_f, g_r, alpha=0.0)[0], g_f[0])


def test_global_scope_is_orthogonal_overall_not_per_layer():
    g_f = [torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])]
    g_r = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
    p = project(g_f, g_r, scope="global")
    flat_p, flat_r = torch.cat(p), torch.cat(g_r)
    assert abs(torch.dot(flat_p, flat_r).item()) < 1e-6
    assert torch.isclose(flat_p.norm(), torch.cat(g_f).norm())
    assert abs(torch.dot(p[0], g_r[0]).item()) > 0.1  # each layer alone is not orthogonal


def test_missing_gradients_count_as_zero():
    g = torch.tensor([1.0, 2.0])
    p = project([g, None], [None, g])
    assert torch.allclose(p[0], g) and p[1] is None  # no retain gradient: nothing to project out
    assert combine([None], [g])[0] is g
    assert combine([None], [None]) == [None]


def test_parallel_gradients_leave_no_forget_step():
    (p,) = project([torch.tensor([1.0, 1.0])], [torch.tensor([2.0, 2.0])])
    assert torch.count_nonzero(p) == 0


@pytest.mark.parametrize(("kwargs", "message"), [({"alpha": 1.5}, "alpha"), ({"scope": "row"}, "scope")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        project([torch.ones(2)], [torch.ones(2)], **kwargs)
