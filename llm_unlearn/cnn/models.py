"""ResNet-18 (CIFAR variant) and MobileNetV2, torch only, sized by width for tests and demos.

The CIFAR ResNet-18 has a 3×3 stride-1 stem and no max-pool (32×32 inputs would otherwise be
shrunk to 8×8 before the first block); MobileNetV2 likewise keeps stride 1 in its stem and its
second stage, the usual CIFAR adaptation. Quantization is applied afterwards by
`qat.quantize_model`, so the same definitions serve full precision and QAT.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from llm_unlearn.registry import Registry

ARCHS: Registry[Callable[..., nn.Module]] = Registry("CNN architecture")


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@ARCHS.register("resnet18")
class ResNet18(nn.Module):
    """ResNet-18 for small images: widths w, 2w, 4w, 8w (w = 64 is the standard model)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages, c_in = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2**i
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.pool(out).flatten(1))


def _divisible(v: float, divisor: int = 8) -> int:
    """Channel counts rounded to a multiple of 8 (never below 90 % of v), as in MobileNetV2."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.residual else self.block(x)


# (expansion t, channels c, repeats n, first stride s), with the CIFAR stride of 1 in stage 2
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


@ARCHS.register("mobilenetv2")
class MobileNetV2(nn.Module):
    """MobileNetV2 with channels × width (1.0 is the standard model)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        c_in = _divisible(32 * width)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, c_in, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU6(),
        ]
        for t, c, n, s in MOBILENET_V2_STAGES:
            c_out = _divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        last = _divisible(1280 * max(1.0, width))
        layers += [nn.Conv2d(c_in, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def build_model(arch: str, num_classes: int, in_channels: int, width: float) -> nn.Module:
    """The named architecture; `width` is ResNet's base channel count or MobileNetV2's multiplier."""
    cls = ARCHS.get(arch)
    return cls(
        num_classes=num_classes, in_channels=in_channels, width=int(width) if arch == "resnet18" else width
    )
