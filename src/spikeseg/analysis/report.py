"""One-command analysis report of a trained spiking model (and optionally its ANN twin).

:func:`write_report` evaluates the checkpoint on its validation split and writes to ``out``::

    report.json          every number below
    report.md            the report (Markdown, pictures linked)
    report.html          the same as a static page
    class_iou.png        per-class IoU (SNN, and ANN when given)
    spike_rates.png      eq. (8) per layer (figure 14)
    robustness.png       relative mIoU drop against Gaussian noise σ (figure 11)
    robustness_blur.png  the same against Gaussian blur σ in pixels (when blur_sigmas)
    robustness_salt_pepper.png   ... against the fraction of salt-and-pepper pixels
    timesteps.png        mIoU against inference timesteps (figure 13)
    predictions.png      image | prediction | ground truth triplets (figures 9-10), a legend
                         of the classes; event input drawn with ON counts red, OFF blue

The energy table (eqs. (9)-(12), table 6) compares the SNN with its ANN twin, whose dense
FLOPs are the same network's (counted from the ANN checkpoint when one is given).

The corruptions (:mod:`spikeseg.analysis.robustness`) and what they mean on event input:
Gaussian noise is added to the frame values; Gaussian blur blurs every frame and polarity
channel in space (a defocused lens); salt-and-pepper makes sensor pixels dead (no events) or
hot (as many as the busiest pixel), the same pixels in every frame. ``report.json`` keeps the
Gaussian-noise curves under ``robustness`` (as before) and the others under ``corruptions``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import rng
from ..data.base import DatasetInfo
from ..encoding.events import OFF, ON
from ..engine.checkpoint import load_checkpoint
from ..engine.evaluate import (
    build_split,
    checkpoint_data_config,
    checkpoint_dataset,
    checkpoint_seed,
    evaluate,
    prepare_model,
    resolve_device,
    to_input,
)
from ..errors import SpikesegError
from ..io import atomic_write_text
from . import plots
from .energy import OpCounter, estimate_energy
from .robustness import CORRUPTIONS, corruption_robustness, noise_robustness
from .spikes import SpikeRecorder
from .sweeps import timestep_sweep, window_sweep

__all__ = ["write_report", "DEFAULT_SIGMAS", "DEFAULT_BLUR_SIGMAS", "DEFAULT_SALT_PEPPER"]

DEFAULT_SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3)
"""Gaussian noise σ of the robustness curves (intensities in [0, 1])."""
DEFAULT_BLUR_SIGMAS = (0.0, 0.5, 1.0, 2.0)
"""Gaussian blur σ in pixels of the model's input (2 px on 64×64 is a strong blur)."""
DEFAULT_SALT_PEPPER = (0.0, 0.01, 0.05, 0.1)
"""Fractions of salt-and-pepper pixels."""

_FILES = {"gaussian_blur": "robustness_blur", "salt_pepper": "robustness_salt_pepper"}
"""Report file key (and PNG name) of each corruption beside Gaussian noise."""


def _default_timesteps(T: int) -> list[int]:
    return sorted({max(1, T // 4), max(1, T // 2), T, 2 * T, 4 * T})


def _picture(x: torch.Tensor, info: DatasetInfo | None = None) -> np.ndarray:
    """A displayable ``uint8 [H, W, 3]`` of one input sample.

    RGB images (the last frame of an RGB time series) are shown as they are. Event input is
    drawn on black, the window's frames summed: with ON and OFF count channels
    (``info.on_off_channels``; without ``info``, a 2-channel input is taken as count frames,
    OFF then ON) ON events are red and OFF events blue (magenta where both occur), each channel
    counted from its per-frame minimum (so min-max normalised counts start at 0); other event
    input (voxel grids) is summed with its sign: positive red, negative blue. Intensities are
    scaled by the brightest pixel and shown with a square-root tone curve.
    """
    x = x.float()
    on_off = info.on_off_channels if info is not None else None
    if info is not None:
        events = info.temporal or on_off is not None
    else:
        events = x.shape[-3] != 3
    if not events:
        x = x[-1] if x.dim() == 4 else x  # a time series: its last frame
        if x.shape[0] == 3:
            img = x.clamp(0, 1)
        else:  # other static input: grey
            g = x.abs().sum(0, keepdim=True)
            img = (g / g.max().clamp(min=1e-6)).expand(3, -1, -1)
    else:
        frames = x if x.dim() == 4 else x[None]  # [T, C, H, W]
        if on_off is None and frames.shape[1] == 2 and info is None:
            on_off = (ON, OFF)
        if on_off is not None:
            counts = frames - frames.amin(dim=(-2, -1), keepdim=True)
            pos, neg = counts[:, on_off[0]].sum(0), counts[:, on_off[1]].sum(0)
        else:
            signed = frames.sum(dim=(0, 1))
            pos, neg = signed.clamp(min=0), (-signed).clamp(min=0)
        scale = torch.maximum(pos.max(), neg.max()).clamp(min=1e-6)
        img = torch.stack([pos / scale, torch.zeros_like(pos), neg / scale]).sqrt()
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _picture_title(info: DatasetInfo) -> str:
    if info.on_off_channels is not None:
        return "events (ON red, OFF blue)"
    return "events (+ red, − blue)" if info.temporal else "image"


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return v


def _fmt(v: float | None, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def write_report(
    checkpoint: str | Path,
    out: str | Path,
    *,
    ann_checkpoint: str | Path | None = None,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    blur_sigmas: Sequence[float] | None = DEFAULT_BLUR_SIGMAS,
    salt_pepper: Sequence[float] | None = DEFAULT_SALT_PEPPER,
    timesteps: Sequence[int] | None = None,
    num_pictures: int = 6,
    batch_size: int = 16,
    max_batches: int | None = None,
    energy_model: str = "45nm_fp32",
    first_layer: str = "mac",
    device: str = "auto",
    data_root: str | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the analyses of a spiking checkpoint and write the report files to ``out``.

    Args:
        checkpoint: the spiking model (``spiking_deeplab``, ``spiking_fcn``, ...).
        out: output folder.
        ann_checkpoint: its ANN twin, for the energy ratio, robustness and accuracy comparison.
        sigmas: Gaussian noise levels σ for the robustness curves (figure 11), in input units.
        blur_sigmas: Gaussian blur levels σ in pixels of the model's input; None or empty
            skips the blur curves.
        salt_pepper: fractions of salt-and-pepper pixels (each in [0, 1]); None or empty
            skips them.
        timesteps: inference windows of the timestep sweep (default T/4, T/2, T, 2T, 4T).
        num_pictures: validation samples shown as image | prediction | ground truth.
        max_batches: limit every evaluation to this many batches (quick looks).
        energy_model: a preset of :data:`spikeseg.analysis.energy.ENERGY_MODELS`.
        first_layer: ``"mac"`` (real-valued input) or ``"ac"`` (spike input) pricing.

    Returns:
        The content of ``report.json``.
    """
    dev = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    snn, meta = load_checkpoint(checkpoint, map_location="cpu")
    if not snn.spiking:
        raise SpikesegError(
            f"{checkpoint} is an ANN ({meta['model']['name']}); give the spiking model as "
            "--checkpoint and the ANN as --ann-checkpoint"
        )
    if ann_checkpoint is not None:  # refuse a wrong twin before any work
        ann, ann_meta = load_checkpoint(ann_checkpoint, map_location="cpu")
        if ann.spiking:
            raise SpikesegError(f"--ann-checkpoint {ann_checkpoint} is a spiking model")
        if (ann.num_classes, ann.in_channels) != (snn.num_classes, snn.in_channels):
            raise SpikesegError(
                f"{ann_checkpoint} predicts {ann.num_classes} classes from {ann.in_channels} "
                f"channels; the SNN {snn.num_classes} from {snn.in_channels}"
            )
    if seed is None:  # the streams the run's own validation used
        seed = checkpoint_seed(meta)
    data = checkpoint_data_config(meta, str(checkpoint))
    if data_root is not None:
        data.root = data_root
    val = checkpoint_dataset(meta, snn, "val", snn.timesteps, data_root, source=str(checkpoint))
    loader = DataLoader(val, batch_size=batch_size, shuffle=False, num_workers=data.num_workers)
    class_names = list(val.info.class_names)
    snn = prepare_model(snn, dev)
    T = snn.timesteps
    common = dict(max_batches=max_batches, seed=seed, progress=progress)

    # Accuracy, spike rates and operation counts in one pass.
    with SpikeRecorder(snn) as rec, OpCounter(snn) as oc:
        snn_eval = evaluate(snn, loader, dev, desc="SNN", **common)
    snn_ops = oc.layers()

    ann_eval = ann_ops = None
    if ann_checkpoint is None:
        ann = ann_meta = None
    else:
        ann = prepare_model(ann, dev)
        ann_loader = loader
        if val.info.temporal and ann.timesteps != T:  # the frames the ANN was trained on
            ann_loader = DataLoader(build_split(data, "val", ann.timesteps),
                                    batch_size=batch_size, shuffle=False,
                                    num_workers=data.num_workers)
        with OpCounter(ann) as aoc:
            ann_eval = evaluate(ann, ann_loader, dev, desc="ANN", **common)
        ann_ops = aoc.layers()
        if [o.flops for o in ann_ops] != [o.flops for o in snn_ops]:
            raise SpikesegError(
                f"{ann_checkpoint} ({ann_meta['model']['name']}) is not the ANN twin of "
                f"{meta['model']['name']}: their layers differ"
            )
    energy = estimate_energy(snn_ops, T, energy_model, first_layer, ann_ops)

    robust = {"SNN": noise_robustness(snn, loader, sigmas, dev, **common)}
    if ann is not None:
        robust["ANN"] = noise_robustness(ann, ann_loader, sigmas, dev, **common)
    # Blur and salt-and-pepper; on event frames salt-and-pepper takes each frame's own range.
    value_range = None if val.info.temporal or val.info.on_off_channels else (0.0, 1.0)
    corruptions: dict[str, dict[str, Any]] = {}
    for name, levels in (("gaussian_blur", blur_sigmas), ("salt_pepper", salt_pepper)):
        if not levels:
            continue
        curves = {"SNN": corruption_robustness(snn, loader, name, levels, dev,
                                               value_range=value_range,
                                               clean_miou=snn_eval.scores.miou, **common)}
        if ann is not None:
            curves["ANN"] = corruption_robustness(ann, ann_loader, name, levels, dev,
                                                  value_range=value_range,
                                                  clean_miou=ann_eval.scores.miou, **common)
        c = CORRUPTIONS[name]
        corruptions[name] = {"title": c.title, "parameter": c.parameter, "symbol": c.symbol,
                             "axis": c.axis,
                             "input": "events" if value_range is None else "images",
                             "meaning": _MEANING[name][value_range is None], "curves": curves}
    marks = sorted({int(t) for t in (timesteps or _default_timesteps(T))})
    hold = getattr(val, "steps_per_frame", 1)
    if not timesteps and val.info.temporal and hold > 1:  # frames held for `hold` steps each
        marks = [t for t in marks if t % hold == 0]
    if val.info.temporal:  # T frames ending at each label, one run per T
        def make_loader(t: int) -> DataLoader:
            return DataLoader(build_split(data, "val", t), batch_size=batch_size,
                              shuffle=False, num_workers=data.num_workers)

        sweep = window_sweep(snn, make_loader, marks, dev, **common)
    else:
        sweep = timestep_sweep(snn, loader, marks, dev, **common)

    # Pictures of the first validation samples.
    n = min(num_pictures, len(val))
    samples = [val[i] for i in range(n)]
    xs = torch.stack([s[0] for s in samples])
    gts = torch.stack([s[1] for s in samples]).numpy().astype(np.int64)
    with torch.no_grad():
        # The spike trains evaluate() gave samples 0..n-1 (keyed by their index).
        keys = rng.sample_keys(seed, "poisson", range(n), device=dev)
        logits = snn(to_input(xs, dev, dev.type == "cpu"), keys=keys)
    preds = logits.argmax(1).cpu().numpy()
    palette = val.info.palette  # the dataset's own colours (VOC's, Cityscapes', categorical)
    files = {
        "class_iou": plots.plot_class_iou(
            class_names,
            {"SNN": snn_eval.scores.iou, **({"ANN": ann_eval.scores.iou} if ann_eval else {})},
            out / "class_iou.png"),
        "spike_rates": plots.plot_spike_rates(rec.rates(), out / "spike_rates.png",
                                              f"{meta['model']['name']}: spike rate per layer"),
        "robustness": plots.plot_robustness(robust, out / "robustness.png",
                                            xlabel=f"Gaussian noise σ ({_noise_unit(val.info)})"),
        **{_FILES[k]: plots.plot_robustness(c["curves"], out / f"{_FILES[k]}.png",
                                            xlabel=c["axis"], title=f"Robustness to {c['title']}")
           for k, c in corruptions.items()},
        "timesteps": plots.plot_sweep({"SNN": sweep}, out / "timesteps.png", T,
                                      ann_eval.scores.miou if ann_eval else None),
        "predictions": plots.plot_triplets(np.stack([_picture(x, val.info) for x in xs]),
                                           preds, gts, class_names, palette,
                                           out / "predictions.png",
                                           image_title=_picture_title(val.info)),
    }

    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "model": meta["model"],
        "dataset": {"name": val.info.name, "split": "val", "images": snn_eval.num_images,
                    "class_names": class_names,
                    "input": "events" if value_range is None else "images",
                    "picture": _picture_title(val.info)},
        "snn": snn_eval.as_dict(),
        "ann": ann_eval.as_dict() if ann_eval else None,
        "ann_checkpoint": str(ann_checkpoint) if ann_checkpoint else None,
        "spike_rates": [s.as_dict() for s in rec.layers.values()],
        "mean_spike_rate": rec.mean_rate(),
        "energy": energy.as_dict(),
        "robustness": {k: [vars(p) for p in v] for k, v in robust.items()},
        "corruptions": {k: {**c, "curves": {m: [vars(p) for p in pts]
                                            for m, pts in c["curves"].items()}}
                        for k, c in corruptions.items()},
        "timestep_sweep": [vars(p) for p in sweep],
        "files": {k: Path(v).name for k, v in files.items()},
    }
    report = _nan_to_none(report)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out / "report.md", _markdown(report))
    atomic_write_text(out / "report.html", _html(report))
    return report


_MEANING = {
    "gaussian_blur": ("each colour channel blurred in space by a Gaussian of σ pixels",
                      "every frame and polarity channel blurred in space alike (a defocused "
                      "lens spreads each pixel's events over its neighbours)"),
    "salt_pepper": ("a fraction q of the pixels set to black (0) or white (1), half each",
                    "a fraction q of the sensor's pixels dead (no events) or hot (as many as "
                    "the frame's busiest pixel), half each, the same pixels in every frame"),
}
"""What each corruption does, on images and on event frames."""


def _noise_unit(info: DatasetInfo) -> str:
    return "frame values" if info.temporal or info.on_off_channels else "intensities in [0, 1]"


Section = tuple[str, list[str], list[list[str]], str | None, str | None]


def _tables(r: dict[str, Any]) -> list[Section]:
    """The report's sections as (title, header, rows, picture, note) tuples."""
    snn, ann = r["snn"], r["ann"]
    sections: list[Section] = []
    head = ["model", "mIoU", "pixel accuracy", "mean class accuracy"]
    rows = [[f"{r['model']['name']} (T={snn['timesteps']})", _fmt(snn["miou"]),
             _fmt(snn["pixel_accuracy"]), _fmt(snn["mean_accuracy"])]]
    if ann:
        rows.append(["ANN twin", _fmt(ann["miou"]), _fmt(ann["pixel_accuracy"]),
                     _fmt(ann["mean_accuracy"])])
    sections.append(("Accuracy", head, rows, None, None))
    names = r["dataset"]["class_names"]
    rows = [[n, _fmt(snn["iou"][n])] + ([_fmt(ann["iou"][n])] if ann else []) for n in names]
    sections.append(("Per-class IoU", ["class", "SNN"] + (["ANN"] if ann else []), rows,
                     r["files"]["class_iou"],
                     "– (n/a in the plot): the class occurs neither in the labels nor in the "
                     "predictions."))
    rows = [[s["layer"], f"{s['neurons']:,}", _fmt(s["spike_rate"])] for s in r["spike_rates"]]
    rows.append(["all layers (neuron-weighted)", "", _fmt(r["mean_spike_rate"])])
    sections.append(("Spike rate per layer, eq. (8): spikes over all timesteps per neuron",
                     ["layer", "neurons", "spike rate"], rows, r["files"]["spike_rates"], None))
    e = r["energy"]
    rows = [[x["name"], x["kind"], f"{x['flops_ann']:,}", _fmt(x["input_rate"], 3), x["op"],
             f"{x['flops_snn']:,.0f}", _fmt(x["energy_ann"] / 1e6, 3),
             _fmt(x["energy_snn"] / 1e6, 3)]
            for x in e["layers"]]
    rows.append(["total", "", f"{e['flops_ann']:,}", "", "", f"{e['flops_snn']:,.0f}",
                 _fmt(e["energy_ann_pj"] / 1e6, 3), _fmt(e["energy_snn_pj"] / 1e6, 3)])
    em = e["energy_model"]
    sections.append((
        f"Energy, eqs. (9)-(12), {em['name']} (E_MAC {em['e_mac']} pJ, E_AC {em['e_ac']} pJ): "
        f"E_ANN / E_SNN = {e['ratio_ann_over_snn']:.2f}x",
        ["layer", "kind", "FLOPs (ANN)", "input spike rate", "SNN op", "FLOPs (SNN)",
         "E_ANN (µJ)", "E_SNN (µJ)"], rows, None, None))
    events = r["dataset"].get("input") == "events"
    sig = [p["sigma"] for p in r["robustness"]["SNN"]]
    rows = [[k] + [f"{_fmt(p['miou'])} ({_fmt(p['drop_percent'], 1)}%)" for p in pts]
            for k, pts in r["robustness"].items()]
    sections.append((
        "Gaussian noise: mIoU (relative drop)", ["model"] + [f"σ={s:g}" for s in sig], rows,
        r["files"]["robustness"],
        "Relative drop = (clean mIoU − corrupted mIoU) / clean mIoU × 100 (section 5.4). "
        + ("N(0, σ²) noise added to every frame value (not clipped: counts may turn "
           "negative)." if events else
           "N(0, σ²) noise added to the intensities in [0, 1], before Poisson coding.")))
    for name, c in r.get("corruptions", {}).items():
        curves = c["curves"]
        levels = [p["level"] for p in next(iter(curves.values()))]
        rows = [[k] + [f"{_fmt(p['miou'])} ({_fmt(p['drop_percent'], 1)}%)" for p in pts]
                for k, pts in curves.items()]
        sections.append((f"{c['title'][0].upper() + c['title'][1:]}: mIoU (relative drop)",
                         ["model"] + [f"{c['symbol']}={v:g}" for v in levels], rows,
                         r["files"].get(_FILES[name]),
                         f"Level: {c['parameter']}. On {c['input']}: {c['meaning']}."))
    rows = [[str(p["timesteps"]), _fmt(p["miou"]), _fmt(p["pixel_accuracy"])]
            for p in r["timestep_sweep"]]
    sections.append(("mIoU against inference timesteps", ["T", "mIoU", "pixel accuracy"], rows,
                     r["files"]["timesteps"], None))
    sections.append((f"Predictions ({'events' if events else 'image'} | prediction | ground "
                     "truth)", [], [], r["files"]["predictions"],
                     f"Input drawn as {r['dataset'].get('picture', 'events')}: the window's "
                     "frames summed, brightness on a square-root scale." if events else None))
    return sections


def _intro(r: dict[str, Any]) -> str:
    return (f"{r['model']['name']} from {r['checkpoint']} on the {r['dataset']['name']} "
            f"validation split ({r['dataset']['images']} images)"
            + (f", with ANN twin {r['ann_checkpoint']}" if r["ann_checkpoint"] else "") + ".")


def _markdown(r: dict[str, Any]) -> str:
    lines = ["# spikeseg report", "", _intro(r), ""]
    for title, head, rows, pic, note in _tables(r):
        lines += [f"## {title}", ""]
        if note:
            lines += [note, ""]
        if head:
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
        if pic:
            lines += [f"![{title}]({pic})", ""]
    lines.append("Every number is also in report.json.")
    return "\n".join(lines) + "\n"


def _html(r: dict[str, Any]) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>spikeseg report</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:.2em .5em;text-align:right}td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%}</style></head><body>",
             "<h1>spikeseg report</h1>", f"<p>{e(_intro(r))}</p>"]
    for title, head, rows, pic, note in _tables(r):
        parts.append(f"<h2>{e(title)}</h2>")
        if note:
            parts.append(f"<p>{e(note)}</p>")
        if head:
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        if pic:
            parts.append(f"<img src='{e(pic)}' alt='{e(title)}'>")
    parts.append("<p>Every number is also in report.json.</p></body></html>")
    return "\n".join(parts) + "\n"
