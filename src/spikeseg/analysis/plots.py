"""PNG plots of the analyses (matplotlib, from the ``viz`` extra), one function per figure.

Every figure is drawn for a paper: fonts of 9-11 pt at the figure's printed size, legends
beside the axes (never over the data), ticks at the measured values, the SNN in blue and the
ANN in orange throughout (Tableau 10), and the PNG cropped to its content at 150 dpi.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SpikesegError
from ..io import atomic_write

__all__ = [
    "plot_spike_rates",
    "plot_robustness",
    "plot_sweep",
    "plot_class_iou",
    "plot_triplets",
    "plot_activation_variation",
]

DPI = 150
"""Resolution of the PNGs (dots per inch of the figure sizes below)."""

_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_COLOURS = {"SNN": "#1f77b4", "ANN": "#ff7f0e"}  # Tableau 10 blue and orange


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
    """Write ``fig`` cropped to its content (legends beside the axes included) and close it."""
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI,
                                                   bbox_inches="tight", pad_inches=0.08))
    finally:
        _pyplot().close(fig)
    return path


def _colour(label: str, i: int) -> str:
    """The label's fixed colour (SNN blue, ANN orange), else Tableau 10 in order."""
    tab10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
             "#7f7f7f", "#bcbd22", "#17becf"]
    return _COLOURS.get(label, tab10[i % len(tab10)])


def _legend_beside(ax) -> None:
    """The legend to the right of the axes, outside them, so it never covers data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0.0)


def _crowded(positions: np.ndarray, labels: Sequence[str], axis_in: float,
             span: float | None = None) -> bool:
    """Whether horizontal tick labels would overlap at 9 pt (about 0.075 in per character,
    plus a 0.08 in gap between neighbours).

    Args:
        positions: the ticks in data units (their logs on a log axis), increasing.
        labels: the tick labels.
        axis_in: the axis' length in inches.
        span: the data range the axis shows (default: that of ``positions``).
    """
    span = span or float(positions.max() - positions.min()) or 1.0
    x = positions / span * axis_in
    half = np.array([0.0375 * len(s) for s in labels])
    return bool(np.any(np.diff(x) < half[1:] + half[:-1] + 0.08))


def _rotate(ax) -> None:
    for lab in ax.get_xticklabels():
        lab.set_rotation(45)
        lab.set_ha("right")
        lab.set_rotation_mode("anchor")


def _level(p: Any) -> float:
    """A robustness point's level: ``level`` (CorruptionPoint), ``sigma`` (NoisePoint), or
    the same keys of a dict."""
    for key in ("level", "sigma"):
        if isinstance(p, dict) and key in p:
            return float(p[key])
        if hasattr(p, key):
            return float(getattr(p, key))
    raise TypeError(f"not a robustness point: {p!r}")


def _drop(p: Any) -> float:
    v = p["drop_percent"] if isinstance(p, dict) else p.drop_percent
    return float("nan") if v is None else float(v)


def plot_spike_rates(rates: dict[str, float], path: str | Path, title: str = "") -> Path:
    """Bar chart of eq. (8) per layer (figure 14): spikes per neuron over the T timesteps."""
    plt = _pyplot()
    names = list(rates)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(max(4.5, 0.5 * len(names) + 1.5), 3.2))
        ax.bar(range(len(names)), [rates[n] for n in names], color=_COLOURS["SNN"], width=0.7)
        for i, n in enumerate(names):  # a silent layer has no bar to see: say so
            if rates[n] == 0:
                ax.text(i, 0, "0", ha="center", va="bottom", fontsize=8, color="0.4")
        ax.set_xticks(range(len(names)))
        labels = [n.removesuffix(".act") for n in names]
        ax.set_xticklabels(labels)
        width = max(4.5, 0.5 * len(names) + 1.5)
        if len(names) > 1 and _crowded(np.arange(len(names), dtype=float), labels,
                                       width - 0.8, len(names) + 0.6):
            _rotate(ax)
        ax.set_xlabel("layer")
        ax.set_ylabel("spike rate (spikes / neuron)")
        ax.set_ylim(0, max([*rates.values(), 0.0]) * 1.12 or 1.0)
        ax.set_title(title or "Spike rate per layer, eq. (8)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        return _save(fig, path)


def plot_robustness(
    curves: dict[str, Sequence],
    path: str | Path,
    *,
    xlabel: str = "Gaussian noise σ",
    title: str = "Robustness to Gaussian noise",
) -> Path:
    """Relative mIoU drop against a corruption's level, one line per model (figure 11).

    Args:
        curves: label (``"SNN"``, ``"ANN"``) → points with ``level`` or ``sigma`` and
            ``drop_percent`` (:mod:`spikeseg.analysis.robustness` records or their dicts).
        path: the PNG to write.
        xlabel: the level's meaning and unit.
        title: the figure's title.
    """
    plt = _pyplot()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(4.6, 3.2))
        levels: set[float] = set()
        for i, (label, pts) in enumerate(curves.items()):
            xs = [_level(p) for p in pts]
            levels.update(xs)
            ax.plot(xs, [_drop(p) for p in pts], marker="o", ms=5, lw=1.8, label=label,
                    color=_colour(label, i))
        ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
        ticks = sorted(levels)
        if 0 < len(ticks) <= 8:
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{v:g}" for v in ticks])
            if len(ticks) > 1 and _crowded(np.asarray(ticks), [f"{v:g}" for v in ticks],
                                           3.4, 1.1 * (ticks[-1] - ticks[0])):
                _rotate(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("relative mIoU drop (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.margins(x=0.05, y=0.1)
        _legend_beside(ax)
        return _save(fig, path)


def plot_sweep(curves: dict[str, Sequence], path: str | Path, trained_timesteps: int | None = None,
               ann_miou: float | None = None) -> Path:
    """mIoU against inference timesteps (figure 13): log-scaled T, ticks at the measured T."""
    plt = _pyplot()
    from matplotlib.ticker import FixedLocator, NullLocator

    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(4.8, 3.2))
        measured: set[int] = set()
        for i, (label, pts) in enumerate(curves.items()):
            ts = [int(p.timesteps) for p in pts]
            measured.update(ts)
            ax.plot(ts, [p.miou for p in pts], marker="o", ms=5, lw=1.8, label=label,
                    color=_colour(label, i))
        if trained_timesteps:
            ax.axvline(trained_timesteps, color="0.45", ls=":", lw=1.2,
                       label=f"trained T = {trained_timesteps}")
        if ann_miou is not None:
            ax.axhline(ann_miou, color="black", ls="--", lw=1.2, label="ANN")
        ticks = sorted(measured | ({int(trained_timesteps)} if trained_timesteps else set()))
        if len(ticks) > 1:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([str(t) for t in ticks])
            if _crowded(np.log10(ticks), [str(t) for t in ticks], 3.6,
                        1.12 * float(np.log10(ticks[-1] / ticks[0]))):
                _rotate(ax)
        elif ticks:
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("inference timesteps T")
        ax.set_ylabel("mIoU")
        ax.set_title("Accuracy against timesteps")
        ax.grid(alpha=0.3)
        ax.margins(x=0.06, y=0.15)
        _legend_beside(ax)
        return _save(fig, path)


def plot_class_iou(class_names: Sequence[str], curves: dict[str, Sequence[float]],
                   path: str | Path) -> Path:
    """Grouped bars of per-class IoU, one group per class; "n/a" where a class is absent
    from both the predictions and the labels (IoU undefined, NaN)."""
    plt = _pyplot()
    n = len(class_names)
    k = len(curves)
    with plt.rc_context(_RC):
        width = min(max(4.5, (0.2 + 0.22 * max(k, 1)) * n + 1.5), 12.0)
        fig, ax = plt.subplots(figsize=(width, 3.2))
        w = 0.8 / max(k, 1)
        undefined = np.ones(n, dtype=bool)
        for i, (label, ious) in enumerate(curves.items()):
            raw = np.array([np.nan if v is None else float(v) for v in ious])
            undefined &= np.isnan(raw)
            ax.bar(np.arange(n) + i * w - 0.4 + w / 2, np.nan_to_num(raw, nan=0.0), width=w,
                   label=label, color=_colour(label, i))
        for c in np.flatnonzero(undefined):
            ax.text(c, 0.02, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
        ax.set_xticks(range(n))
        ax.set_xticklabels(class_names)
        if n > 1 and _crowded(np.arange(n, dtype=float), list(class_names), width - 1.0, n):
            _rotate(ax)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_xlabel("class")
        ax.set_ylabel("IoU")
        ax.set_ylim(0, 1)
        ax.set_title("Per-class IoU")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        _legend_beside(ax)
        return _save(fig, path)


def _row_major(handles: list, ncol: int) -> list:
    """Reorder legend entries so that a legend of ``ncol`` columns (filled column by column,
    as matplotlib does) reads left to right, row by row."""
    rows = -(-len(handles) // ncol)
    order = [r * ncol + c for c in range(ncol) for r in range(rows) if r * ncol + c < len(handles)]
    return [handles[i] for i in order]


def plot_triplets(
    images: np.ndarray,
    predictions: np.ndarray,
    targets: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    path: str | Path,
    *,
    image_title: str = "image",
) -> Path:
    """Rows of image | prediction | ground truth (figures 9-10), with a class colour legend.

    Args:
        images: ``uint8 [N, H, W, 3]``; predictions, targets: class ids ``[N, H, W]``
            (255 in targets = ignored, drawn in the palette's ignore colour).
        class_names: names of the class ids; the legend lists the classes that occur.
        palette: ``uint8 [>= 256, 3]`` colours of the class ids.
        image_title: the first column's title (e.g. ``"events (ON red, OFF blue)"``).
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    n = len(images)
    h, w = images.shape[1:3]
    s = 1.9  # inches per panel's width
    ph = s * h / w
    present = sorted((set(np.unique(predictions).tolist()) | set(np.unique(targets).tolist()))
                     - {255})
    handles = [Patch(facecolor=palette[c] / 255.0, edgecolor="0.5", lw=0.5,
                     label=class_names[c]) for c in present if c < len(class_names)]
    if 255 in np.unique(targets):
        handles.append(Patch(facecolor=palette[255] / 255.0, edgecolor="0.5", lw=0.5,
                             label="ignored"))
    ncol = min(6, max(1, len(handles)))
    legend_rows = -(-len(handles) // ncol)
    title_h, legend_h, gap = 0.3, 0.12 + 0.24 * legend_rows, 0.06
    height = title_h + n * ph + (n - 1) * gap + legend_h
    width = 3 * s + 2 * gap
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(n, 3, figsize=(width, height), squeeze=False)
        fig.subplots_adjust(left=0, right=1, top=1 - title_h / height, bottom=legend_h / height,
                            wspace=gap / s, hspace=gap / ph)
        for i in range(n):
            for j, (pic, title) in enumerate(((images[i], image_title),
                                              (palette[predictions[i]], "prediction"),
                                              (palette[targets[i]], "ground truth"))):
                ax = axes[i][j]
                ax.imshow(pic, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_visible(True)
                    side.set_color("0.6")
                if i == 0:
                    ax.set_title(title, fontsize=10, pad=4)
        if handles:
            fig.legend(handles=_row_major(handles, ncol), loc="lower center", ncol=ncol,
                       frameon=False, bbox_to_anchor=(0.5, 0.0), handlelength=1.2,
                       columnspacing=1.0, borderaxespad=0.1)
        return _save(fig, path)


def plot_activation_variation(layers: dict[str, tuple[np.ndarray, np.ndarray]],
                              path: str | Path) -> Path:
    """Per layer, the spread of normalised per-channel and per-position maxima (figure 4)."""
    plt = _pyplot()
    names = list(layers)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 0.9 * len(names) + 3), 3.8),
                                 sharey=True)
        for ax, k, title in ((axes[0], 0, "per channel"), (axes[1], 1, "per spatial position")):
            data = [layers[n][k] for n in names]
            ax.boxplot(data, showfliers=False, whis=(0, 100))
            rng = np.random.default_rng(0)
            for i, v in enumerate(data, start=1):
                v = v if v.size <= 400 else rng.choice(v, 400, replace=False)
                ax.scatter(i + rng.uniform(-0.18, 0.18, v.size), v, s=3, alpha=0.35,
                           color=_COLOURS["SNN"])
            ax.set_xticks(range(1, len(names) + 1))
            ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor")
            ax.set_title(f"max activation {title}")
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel("max activation / layer max")
        axes[0].set_ylim(0, 1.05)
        return _save(fig, path)
