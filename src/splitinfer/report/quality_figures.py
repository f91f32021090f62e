"""Figures of an eval: the confusion matrix of a classifier on labelled data (see :mod:`.quality`)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from splitinfer.report.figures import new_figure, styled
from splitinfer.report.quality import ClassificationDoc

MAX_ANNOTATED = 20  # classes up to which every cell shows its count
MAX_NAMED = 40  # classes up to which every tick is named; more are thinned
_NAME_CHARS = 14


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS - 1] + "…"


@styled
def confusion_matrix(cls: ClassificationDoc, title: str) -> Figure:
    """Rows: true class, columns: predicted; colour: the share of the row (its sensitivity on the
    diagonal), so that rare classes show as clearly as common ones; counts written in each cell."""
    n = cls.num_classes
    counts = np.asarray(cls.confusion, dtype=np.int64).reshape(n, n)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, np.float64), where=totals > 0)
    side = min(12.0, max(4.8, 0.38 * n + 2.6))
    fig, ax = new_figure(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.grid(False)
    if n <= MAX_ANNOTATED:
        for (r, c), count in np.ndenumerate(counts):
            if count:
                ax.text(c, r, str(count), ha="center", va="center", fontsize=7 if n > 10 else 8,
                        color="white" if share[r, c] > 0.55 else "#222222")
    step = 1 if n <= MAX_NAMED else int(np.ceil(n / MAX_NAMED))
    ticks = np.arange(0, n, step)
    names = [_short(cls.name_of(int(i))) for i in ticks]
    ax.set_xticks(ticks, names, rotation=90 if any(len(x) > 3 for x in names) else 0)
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}: accuracy {cls.accuracy:.4f} on {cls.num_samples} samples")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class")
    fig.tight_layout()
    return fig
