"""PNG plots of the analyses (matplotlib, from the ``viz`` extra), one function per figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SpikesegError

__all__ = [
    "plot_spike_rates",
    "plot_robustness",
    "plot_sweep",
    "plot_class_iou",
    "plot_triplets",
    "plot_activation_variation",
]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpikesegError(
            'plots need matplotlib: pip install "spikeseg[viz]"'
        ) from None
    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_spike_rates(rates: dict[str, float], path: str | Path, title: str = "") -> Path:
    """Bar chart of eq. (8) per layer (figure 14)."""
    plt = _pyplot()
    names = list(rates)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), [rates[n] for n in names], color="#3b6fb6")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.removesuffix(".act") for n in names], rotation=45, ha="right",
                       fontsize=8)
    ax.set_ylabel("spike rate (spikes / neuron over T)")
    ax.set_title(title or "Spike rate per layer, eq. (8)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_robustness(curves: dict[str, Sequence], path: str | Path) -> Path:
    """Relative mIoU drop against Gaussian noise σ, one line per model (figure 11)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for label, pts in curves.items():
        ax.plot([p.sigma for p in pts], [p.drop_percent for p in pts], marker="o", label=label)
    ax.set_xlabel("Gaussian noise σ")
    ax.set_ylabel("relative mIoU drop (%)")
    ax.set_title("Robustness to input noise")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_sweep(curves: dict[str, Sequence], path: str | Path, trained_timesteps: int | None = None,
               ann_miou: float | None = None) -> Path:
    """mIoU against inference timesteps (figure 13), log-scaled T."""
    plt = _pyplot()
    many = len(curves) > 2
    fig, ax = plt.subplots(figsize=(7.5 if many else 5.0, 3.6))
    for label, pts in curves.items():
        ax.plot([p.timesteps for p in pts], [p.miou for p in pts], marker="o", label=label)
    if trained_timesteps:
        ax.axvline(trained_timesteps, color="grey", ls=":", label=f"trained T={trained_timesteps}")
    if ann_miou is not None:
        ax.axhline(ann_miou, color="black", ls="--", label="ANN")
    ax.set_xscale("log")
    ax.set_xlabel("inference timesteps T")
    ax.set_ylabel("mIoU")
    ax.set_title("Accuracy against timesteps")
    ax.grid(alpha=0.3, which="both")
    if many:  # beside the axes, not over the curves
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.legend()
    return _save(fig, path)


def plot_class_iou(class_names: Sequence[str], curves: dict[str, Sequence[float]],
                   path: str | Path) -> Path:
    """Grouped bars of per-class IoU, one group per class."""
    plt = _pyplot()
    n = len(class_names)
    k = len(curves)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * n + 2), 3.6))
    w = 0.8 / max(k, 1)
    for i, (label, ious) in enumerate(curves.items()):
        vals = [0.0 if v is None or np.isnan(v) else v for v in ious]
        ax.bar(np.arange(n) + i * w - 0.4 + w / 2, vals, width=w, label=label)
    ax.set_xticks(range(n))
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title("Per-class IoU")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_triplets(
    images: np.ndarray,
    predictions: np.ndarray,
    targets: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    path: str | Path,
) -> Path:
    """Rows of image | prediction | ground truth (figures 9-10), with a class colour legend.

    Args:
        images: ``uint8 [N, H, W, 3]``; predictions, targets: class ids ``[N, H, W]``
            (255 in targets = ignored, drawn in the palette's ignore colour).
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6.3, 2.1 * n + 0.9), squeeze=False)
    for i in range(n):
        for j, (pic, title) in enumerate(((images[i], "image"),
                                          (palette[predictions[i]], "prediction"),
                                          (palette[targets[i]], "ground truth"))):
            ax = axes[i][j]
            ax.imshow(pic, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=10)
    present = sorted(set(np.unique(predictions)) | set(np.unique(targets)) - {255})
    handles = [Patch(color=palette[c] / 255.0, label=class_names[c])
               for c in present if c < len(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.9 / (2.1 * n + 0.9), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_activation_variation(layers: dict[str, tuple[np.ndarray, np.ndarray]],
                              path: str | Path) -> Path:
    """Per layer, the spread of normalised per-channel and per-position maxima (figure 4)."""
    plt = _pyplot()
    names = list(layers)
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 0.9 * len(names) + 3), 3.8), sharey=True)
    for ax, k, title in ((axes[0], 0, "per channel"), (axes[1], 1, "per spatial position")):
        data = [layers[n][k] for n in names]
        ax.boxplot(data, showfliers=False, whis=(0, 100))
        rng = np.random.default_rng(0)
        for i, v in enumerate(data, start=1):
            v = v if v.size <= 400 else rng.choice(v, 400, replace=False)
            ax.scatter(i + rng.uniform(-0.18, 0.18, v.size), v, s=3, alpha=0.35, color="#3b6fb6")
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"max activation {title}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("max activation / layer max")
    axes[0].set_ylim(0, 1.05)
    return _save(fig, path)
