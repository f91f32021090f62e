"""Convolutional classifiers: VGG-16, ResNet-18/50 (torchvision v1.5 layout), MobileNetV2.

Node names follow torchvision's module names where it has them
(``layer3.1.conv2``, ``features.conv4_2``), so a cut reads like the paper's figure.
"""

from __future__ import annotations

from splitinfer.zoo.builder import GraphBuilder
from splitinfer.zoo.config import ZooConfig, scale_channels, scale_depth


def _image(g: GraphBuilder, cfg: ZooConfig) -> str:
    return g.add_input("image", (1, 3, cfg.resolution, cfg.resolution))


def _classifier_head(g: GraphBuilder, x: str, cfg: ZooConfig, *, pool: str, fc: str) -> None:
    x = g.global_avg_pool(x, name=pool)
    x = g.flatten(x, name="flatten")
    g.mark_output(g.linear(x, cfg.num_classes, name=fc, out="logits"))


def build_vgg16(g: GraphBuilder, cfg: ZooConfig) -> None:
    """VGG-16 (configuration D, no batch norm): 13 convs in 5 stages, 3 fully connected layers."""
    x = _image(g, cfg)
    stages = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
    for s, (channels, repeats) in enumerate(stages, 1):
        for i in range(1, scale_depth(repeats, cfg.depth) + 1):
            x = g.conv(x, scale_channels(channels, cfg.width), 3, name=f"features.conv{s}_{i}", bias=True)
            x = g.act(x, "relu", name=f"features.relu{s}_{i}")
        x = g.max_pool(x, 2, 2, name=f"features.pool{s}")
    x = g.flatten(x, name="classifier.flatten")
    hidden = scale_channels(4096, cfg.width)
    for layer in (6, 7):
        x = g.linear(x, hidden, name=f"classifier.fc{layer}", gain=2.0)
        x = g.act(x, "relu", name=f"classifier.relu{layer}")
    g.mark_output(g.linear(x, cfg.num_classes, name="classifier.fc8", out="logits"))


def _conv_bn(g: GraphBuilder, x: str, channels: int, kernel: int, *, conv: str, bn: str,
             stride: int = 1) -> str:
    return g.batch_norm(g.conv(x, channels, kernel, name=conv, stride=stride), name=bn)


def basic_block(g: GraphBuilder, x: str, in_c: int, width: int, stride: int, name: str) -> tuple[str, int]:
    y = _conv_bn(g, x, width, 3, conv=f"{name}.conv1", bn=f"{name}.bn1", stride=stride)
    y = g.act(y, "relu", name=f"{name}.relu1")
    y = _conv_bn(g, y, width, 3, conv=f"{name}.conv2", bn=f"{name}.bn2")
    return _residual(g, x, y, in_c, width, stride, name), width


def _bottleneck(g: GraphBuilder, x: str, in_c: int, width: int, stride: int, name: str) -> tuple[str, int]:
    out_c = 4 * width
    y = _conv_bn(g, x, width, 1, conv=f"{name}.conv1", bn=f"{name}.bn1")
    y = g.act(y, "relu", name=f"{name}.relu1")
    # v1.5: the stride sits on the 3x3 conv, as in torchvision.
    y = _conv_bn(g, y, width, 3, conv=f"{name}.conv2", bn=f"{name}.bn2", stride=stride)
    y = g.act(y, "relu", name=f"{name}.relu2")
    y = _conv_bn(g, y, out_c, 1, conv=f"{name}.conv3", bn=f"{name}.bn3")
    return _residual(g, x, y, in_c, out_c, stride, name), out_c


def _residual(g: GraphBuilder, x: str, y: str, in_c: int, out_c: int, stride: int, name: str) -> str:
    if stride != 1 or in_c != out_c:
        x = _conv_bn(g, x, out_c, 1, conv=f"{name}.downsample.0", bn=f"{name}.downsample.1", stride=stride)
    return g.act(g.add(x, y, name=f"{name}.add"), "relu", name=f"{name}.relu")


def _resnet(g: GraphBuilder, cfg: ZooConfig, bottleneck: bool, layers: tuple[int, ...]) -> None:
    x = _image(g, cfg)
    stem = scale_channels(64, cfg.width)
    x = g.batch_norm(g.conv(x, stem, 7, name="conv1", stride=2, pad=3), name="bn1")
    x = g.act(x, "relu", name="relu")
    x = g.max_pool(x, 3, 2, name="maxpool", pad=1)
    block = _bottleneck if bottleneck else basic_block
    channels = stem
    for stage, repeats in enumerate(layers, 1):
        width = scale_channels(64 * 2 ** (stage - 1), cfg.width)
        for i in range(scale_depth(repeats, cfg.depth)):
            stride = 2 if stage > 1 and i == 0 else 1
            x, channels = block(g, x, channels, width, stride, f"layer{stage}.{i}")
    _classifier_head(g, x, cfg, pool="avgpool", fc="fc")


def build_resnet18(g: GraphBuilder, cfg: ZooConfig) -> None:
    """ResNet-18: basic blocks (2, 2, 2, 2)."""
    _resnet(g, cfg, bottleneck=False, layers=(2, 2, 2, 2))


def build_resnet50(g: GraphBuilder, cfg: ZooConfig) -> None:
    """ResNet-50 v1.5: bottleneck blocks (3, 4, 6, 3)."""
    _resnet(g, cfg, bottleneck=True, layers=(3, 4, 6, 3))


def conv_bn_act(g: GraphBuilder, x: str, channels: int, kernel: int, *, name: str, act: str,
                stride: int = 1, groups: int = 1, pad: int | None = None) -> str:
    """Conv (no bias) + BatchNormalization + activation, named ``{name}.conv/.bn/.{act}``."""
    y = g.conv(x, channels, kernel, name=f"{name}.conv", stride=stride, groups=groups, pad=pad)
    y = g.batch_norm(y, name=f"{name}.bn")
    return g.act(y, act, name=f"{name}.{act}") if act else y


def _inverted_residual(g: GraphBuilder, x: str, in_c: int, out_c: int, stride: int, expand: int,
                       name: str) -> str:
    hidden = round(in_c * expand)
    y = x
    if expand != 1:
        y = conv_bn_act(g, y, hidden, 1, name=f"{name}.expand", act="relu6")
    y = conv_bn_act(g, y, hidden, 3, name=f"{name}.depthwise", act="relu6", stride=stride, groups=hidden)
    y = conv_bn_act(g, y, out_c, 1, name=f"{name}.project", act="")  # linear bottleneck
    if stride == 1 and in_c == out_c:
        y = g.add(x, y, name=f"{name}.add")
    return y


def build_mobilenetv2(g: GraphBuilder, cfg: ZooConfig) -> None:
    """MobileNetV2: inverted residuals with linear bottlenecks, ReLU6 as Clip(0, 6)."""
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    x = _image(g, cfg)
    channels = scale_channels(32, cfg.width)
    x = conv_bn_act(g, x, channels, 3, name="features.0", act="relu6", stride=2)
    index = 1
    for expand, c, repeats, first_stride in settings:
        out_c = scale_channels(c, cfg.width)
        for i in range(scale_depth(repeats, cfg.depth)):
            stride = first_stride if i == 0 else 1
            x = _inverted_residual(g, x, channels, out_c, stride, expand, f"features.{index}")
            channels, index = out_c, index + 1
    last = scale_channels(1280, max(1.0, cfg.width))
    x = conv_bn_act(g, x, last, 1, name=f"features.{index}", act="relu6")
    _classifier_head(g, x, cfg, pool="pool", fc="classifier")
