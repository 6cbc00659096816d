"""RMU: representation misdirection for unlearning (Li et al. 2024, WMDP, arXiv 2403.03218).

At one decoder layer ℓ, the forget text's hidden states are steered toward a fixed random
direction scaled by c, and the retain text's are kept equal to θ₀'s:

    L = mean_tokens ‖h_θ^ℓ(x_f) − c·u‖²  +  α · mean_tokens ‖h_θ^ℓ(x_r) − h_θ₀^ℓ(x_r)‖²

(α = the method's retain_weight; the paper uses α ≈ 1e3 and c ≈ 6.5 on 7B models, whose hidden
norms are far larger than a tiny model's: tune both). u is drawn once from a seeded generator,
uniform on [0, 1)^d and normalised, as the released code draws it. Means run over the batch's
non-padding tokens (the released code averages squared errors over every element, a factor d
apart). As in the paper only the MLP weights of layers ℓ−2…ℓ train by default (`update_layers`,
`update_module` override it); θ₀'s hidden states come from the base model with the adapter
disabled under LoRA, otherwise from a frozen copy. `layer` indexes the decoder layers from 0;
h^ℓ is that layer's output (for the last layer transformers returns it after the final norm).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from pydantic import Field
from torch import nn

from llm_unlearn.terms.base import Params, Reference, Term, TermInput, register_term


def control_vector(dim: int, coeff: float, seed: int) -> torch.Tensor:
    """c·u: u uniform on [0, 1)^dim from a generator seeded with `seed`, normalised to length 1."""
    u = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return coeff * u / u.norm()


def _mean_square_distance(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    sq = (a.float() - b.float()).pow(2).sum(dim=-1)
    return (sq * mask).sum() / mask.sum().clamp(min=1)


def rmu_forget(hidden: torch.Tensor, mask: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """mean over tokens of ‖h − c·u‖² (hidden [B, T, d], mask [B, T], control [d])."""
    return _mean_square_distance(hidden, control.to(hidden.device), mask)


def rmu_retain(hidden: torch.Tensor, ref_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over tokens of ‖h_θ − h_θ₀‖²; zero at θ = θ₀."""
    return _mean_square_distance(hidden, ref_hidden, mask)


class RMUParams(Params):
    layer: int = Field(default=7, ge=0, description="ℓ, the decoder layer (from 0) whose output is steered.")
    steering_coeff: float = Field(default=6.5, gt=0, description="c, the length of the control vector.")
    seed: int = Field(default=0, description="Seeds the random direction u.")
    update_layers: tuple[int, ...] | None = Field(
        default=None, description="Decoder layers whose update_module trains; default ℓ−2…ℓ (the paper)."
    )
    update_module: str = Field(default="mlp", description="The submodule of each such layer that trains.")


class RMURetainParams(Params):
    layer: int = Field(default=7, ge=0, description="ℓ, the decoder layer (from 0) whose output is steered.")


@register_term("rmu")
class RMUForget(Term):
    part = "forget"
    params = RMUParams
    description = "RMU: steer forget hidden states at layer ℓ toward c·u"

    def layer(self, p: RMUParams) -> int:
        return p.layer

    def trainable(self, p: RMUParams, model: nn.Module) -> list[str]:
        layers = p.update_layers if p.update_layers is not None else range(max(p.layer - 2, 0), p.layer + 1)
        pattern = re.compile(rf"\.layers\.({'|'.join(map(str, layers))})\.{re.escape(p.update_module)}\.")
        return [name for name, _ in model.named_parameters() if pattern.search(name)]

    def __call__(self, inputs: Mapping[str, TermInput], p: RMUParams) -> torch.Tensor:
        x = inputs["text"]
        control = control_vector(x.hidden.shape[-1], p.steering_coeff, p.seed)
        return rmu_forget(x.hidden, x.attention_mask, control)


@register_term("rmu_retain")
class RMURetain(Term):
    part = "retain"
    params = RMURetainParams
    description = "RMU: keep retain hidden states at layer ℓ equal to θ₀'s"

    def reference(self, p: RMURetainParams) -> Reference:
        return "hidden"

    def layer(self, p: RMURetainParams) -> int:
        return p.layer

    def __call__(self, inputs: Mapping[str, TermInput], p: RMURetainParams) -> torch.Tensor:
        x = inputs["text"]
        return rmu_retain(x.hidden, x.ref_hidden, x.attention_mask)
