"""A YOLOv5s-style two-scale detector: CSP (C3) backbone with SPPF, an FPN + PAN
neck (nearest Resize upsampling, Concat), and two heads at strides 16 and 32.

At 640x640 the heads ``p4`` and ``p5`` are [1, A*(5+C), 40, 40] and
[1, A*(5+C), 20, 20] with A = 3 anchors and C = 80 classes (255 channels).
"""

from __future__ import annotations

from splitinfer.zoo.builder import GraphBuilder
from splitinfer.zoo.cnn import conv_bn_act
from splitinfer.zoo.config import ZooConfig, scale_channels, scale_depth

NUM_ANCHORS = 3


def _conv(g: GraphBuilder, x: str, channels: int, kernel: int, name: str, stride: int = 1,
          pad: int | None = None) -> str:
    return conv_bn_act(g, x, channels, kernel, name=name, act="silu", stride=stride, pad=pad)


def _c3(g: GraphBuilder, x: str, out_c: int, repeats: int, shortcut: bool, name: str) -> str:
    """CSP bottleneck with 3 convs: half the channels go through ``repeats`` bottlenecks."""
    hidden = out_c // 2
    a = _conv(g, x, hidden, 1, f"{name}.cv1")
    for i in range(repeats):
        y = _conv(g, a, hidden, 1, f"{name}.m.{i}.cv1")
        y = _conv(g, y, hidden, 3, f"{name}.m.{i}.cv2")
        a = g.add(a, y, name=f"{name}.m.{i}.add") if shortcut else y
    b = _conv(g, x, hidden, 1, f"{name}.cv2")
    return _conv(g, g.concat([a, b], 1, name=f"{name}.concat"), out_c, 1, f"{name}.cv3")


def _sppf(g: GraphBuilder, x: str, out_c: int, name: str) -> str:
    """Spatial pyramid pooling, fast: three chained 5x5 max pools, concatenated."""
    hidden = g.info[x].shape[1] // 2
    pooled = [_conv(g, x, hidden, 1, f"{name}.cv1")]
    for i in range(1, 4):
        # Chained 5x5 pools are 9x9 and 13x13 pools of the first input (SPP).
        pooled.append(g.max_pool(pooled[-1], 5, 1, name=f"{name}.pool{i}", pad=2,
                                 source=(pooled[0], 4 * i + 1)))
    return _conv(g, g.concat(pooled, 1, name=f"{name}.concat"), out_c, 1, f"{name}.cv2")


def build_detector(g: GraphBuilder, cfg: ZooConfig) -> None:
    """Backbone to stride 32, FPN up to stride 16, PAN back down to 32; heads ``p4`` and ``p5``."""
    def ch(c: int) -> int:
        return scale_channels(c, cfg.width)

    def n(r: int) -> int:
        return scale_depth(r, cfg.depth)

    x = g.add_input("image", (1, 3, cfg.resolution, cfg.resolution))
    x = _conv(g, x, ch(32), 6, "backbone.stem", stride=2, pad=2)
    x = _conv(g, x, ch(64), 3, "backbone.down1", stride=2)
    x = _c3(g, x, ch(64), n(1), True, "backbone.stage1")
    x = _conv(g, x, ch(128), 3, "backbone.down2", stride=2)
    x = _c3(g, x, ch(128), n(2), True, "backbone.stage2")
    x = _conv(g, x, ch(256), 3, "backbone.down3", stride=2)
    c4 = _c3(g, x, ch(256), n(3), True, "backbone.stage3")
    x = _conv(g, c4, ch(512), 3, "backbone.down4", stride=2)
    x = _c3(g, x, ch(512), n(1), True, "backbone.stage4")
    x = _sppf(g, x, ch(512), "backbone.sppf")

    lateral = _conv(g, x, ch(256), 1, "neck.lateral5")
    up = g.resize(lateral, 2, name="neck.upsample")
    n4 = _c3(g, g.concat([up, c4], 1, name="neck.concat4"), ch(256), n(1), False, "neck.fpn4")
    down = _conv(g, n4, ch(256), 3, "neck.down4", stride=2)
    n5 = _c3(g, g.concat([down, lateral], 1, name="neck.concat5"), ch(512), n(1), False, "neck.pan5")

    outputs = NUM_ANCHORS * (5 + cfg.num_classes)
    for level, feature in (("p4", n4), ("p5", n5)):
        g.mark_output(g.conv(feature, outputs, 1, name=f"head.{level}", bias=True, gain=1.0, out=level))
