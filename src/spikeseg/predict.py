"""Prediction on image files: colour-coded masks and image | prediction pictures with a legend.

For ``photo.jpg``, :func:`predict_files` writes ``photo_mask.png`` (a palette PNG whose pixel
values are the class ids, at the image's own size) and ``photo_pair.png`` (the image beside
the colour-coded prediction, above a legend naming each predicted class with its share of the
pixels, e.g. "background (98%)"). Colours are those of the dataset the checkpoint was trained on
(:func:`spikeseg.data.base.dataset_palette`: VOC's official colours for VOC, a categorical
palette for the built-in datasets). Each record carries a one-line ``summary`` with the class
names quoted (``'background' 98%, '1' 2%``), so names that are digits read unambiguously.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .data.base import dataset_palette
from .data.transforms import read_image as _read_image
from .engine.checkpoint import load_checkpoint
from .engine.evaluate import prepare_model, resolve_device, to_input
from .errors import SpikesegError

__all__ = ["read_image", "colorize", "legend_picture", "format_summary", "predict_files"]

MIN_PAIR_WIDTH = 320
"""Pair pictures narrower than this (in pixels) are enlarged by an integer factor, nearest
neighbour, so that the legend under them stays readable; the mask PNG keeps the image's size."""


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB ``uint8 [H, W, 3]`` (a writable array), read by
    :func:`spikeseg.data.transforms.read_image` (16-bit images rescaled, alpha dropped).

    Raises:
        SpikesegError: a missing, unreadable or corrupt file, or a decompression bomb, in one
            line starting with ``input image <path>``.
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        raise SpikesegError(f"input image {p} is a folder; give image files")
    img = _read_image(p, "RGB", what="input image", missing_hint="check the path",
                      corrupt_hint="give a PNG, JPEG or TIFF image")
    return np.array(img)  # writable, for torch.from_numpy


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class-id map ``[H, W]`` → RGB ``uint8 [H, W, 3]`` through ``palette``."""
    return palette[mask.astype(np.int64)]


def _share(v: float) -> str:
    """A pixel share as a whole percentage that never reads 0% or 100% when it is not."""
    if 0 < v < 0.005:
        return "<1%"
    if 0.995 <= v < 1:
        return ">99%"
    return f"{v:.0%}"


def format_summary(classes: dict[str, float], top: int | None = None) -> str:
    """``'background' 98%, '1' 2%``: class names quoted, by decreasing pixel share.

    Args:
        classes: class name → share of the pixels (a record's ``"classes"``).
        top: keep only the ``top`` largest (None: all).
    """
    items = sorted(classes.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{name!r} {_share(v)}" for name, v in items)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def legend_picture(
    entries: Sequence[tuple[str, tuple[int, int, int]]], width: int, font_size: int = 14
) -> np.ndarray:
    """A white strip listing ``(label, colour)`` entries as colour swatches with text.

    Entries are laid out left to right and wrap into rows of ``width`` pixels (one entry per
    row at least, however wide). Drawn with Pillow's default font.

    Returns:
        ``uint8 [h, max(width, widest entry), 3]``.
    """
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sw, pad, gap = font_size, font_size // 2, font_size
    boxes = [probe.textbbox((0, 0), text, font=font) for text, _ in entries]
    widths = [sw + pad + (b[2] - b[0]) for b in boxes]
    line_h = max([font_size] + [b[3] - b[1] for b in boxes]) + pad
    width = max([width] + [w + 2 * pad for w in widths])
    rows: list[list[int]] = [[]]
    x = pad
    for i, w in enumerate(widths):
        if rows[-1] and x + w > width - pad:
            rows.append([])
            x = pad
        rows[-1].append(i)
        x += w + gap
    height = pad + len(rows) * line_h + pad // 2
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    y = pad
    for row in rows:
        x = pad
        for i in row:
            text, colour = entries[i]
            top = y + (line_h - pad - sw) // 2
            draw.rectangle([x, top, x + sw - 1, top + sw - 1], fill=tuple(int(c) for c in colour),
                           outline=(128, 128, 128))
            draw.text((x + sw + pad, top + sw // 2), text, fill=(0, 0, 0), font=font, anchor="lm")
            x += widths[i] + gap
        y += line_h
    return np.asarray(img)


def _pair_picture(img: np.ndarray, mask: np.ndarray, palette: np.ndarray,
                  names: Sequence[str], shares: np.ndarray) -> np.ndarray:
    """``image | colour-coded mask`` above a legend of the predicted classes."""
    pair = np.concatenate([img, colorize(mask, palette)], axis=1)
    k = -(-MIN_PAIR_WIDTH // pair.shape[1]) if pair.shape[1] < MIN_PAIR_WIDTH else 1
    if k > 1:
        pair = pair.repeat(k, axis=0).repeat(k, axis=1)
    order = [int(i) for i in np.argsort(-shares, kind="stable") if shares[i] > 0]
    entries = [(f"{names[i]} ({_share(float(shares[i]))})", tuple(palette[i])) for i in order]
    size = int(np.clip(pair.shape[1] / 30, 12, 28))
    legend = legend_picture(entries, pair.shape[1], font_size=size)
    if legend.shape[1] > pair.shape[1]:  # a legend entry wider than the picture: pad it
        extra = legend.shape[1] - pair.shape[1]
        pair = np.pad(pair, ((0, 0), (0, extra), (0, 0)), constant_values=255)
    return np.concatenate([pair, legend], axis=0)


def _size(meta: dict) -> tuple[int, int]:
    s = meta.get("config", {}).get("data", {}).get("image_size", 64)
    return (int(s[0]), int(s[1])) if isinstance(s, (list, tuple)) else (int(s), int(s))


@torch.no_grad()
def predict_files(
    checkpoint: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    *,
    timesteps: int | None = None,
    device: str = "auto",
    seed: int = 0,
) -> list[dict]:
    """Segment each image file with the checkpoint's model and write pictures to ``out_dir``.

    Each image is resized to the model's training size, segmented, and the prediction is
    resized back to the image's own size. For ``photo.jpg`` this writes
    ``photo_mask.png`` (a palette PNG whose pixel values are the class ids) and
    ``photo_pair.png`` (the image beside the colour-coded prediction, with a legend of the
    predicted classes and their pixel shares; enlarged when narrower than
    :data:`MIN_PAIR_WIDTH`).

    Returns:
        One record per image: ``input``, ``mask``, ``pair`` (paths), ``classes`` (class name →
        share of the pixels, for the classes present) and ``summary`` (:func:`format_summary`
        of them, e.g. ``'background' 98%, '1' 2%``).

    Raises:
        SpikesegError: an unreadable input (before any work), or a checkpoint whose model
            does not read RGB images.
    """
    images = [(Path(p), read_image(p)) for p in inputs]  # fail before any work on a bad input
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, map_location="cpu")
    if model.in_channels != 3:
        raise SpikesegError(
            f"checkpoint {checkpoint} takes {model.in_channels}-channel input, not RGB images"
        )
    model = prepare_model(model, dev)
    cl = dev.type == "cpu"
    dataset = meta.get("dataset", {})
    names = dataset.get("class_names") or [str(i) for i in range(model.num_classes)]
    palette = dataset_palette(dataset.get("name"), model.num_classes)
    size = _size(meta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device=dev).manual_seed(seed)
    records = []
    for path, img in images:
        h, w = img.shape[:2]
        x = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = to_input(x.clamp_(0, 1), dev, cl)
        logits = model(x, timesteps=timesteps, generator=gen) if model.spiking else model(x)
        logits = F.interpolate(logits.float().cpu(), size=(h, w), mode="bilinear",
                               align_corners=False)
        mask = logits.argmax(1)[0].numpy().astype(np.uint8)
        mask_path = out / f"{path.stem}_mask.png"
        pair_path = out / f"{path.stem}_pair.png"
        m = Image.fromarray(mask, mode="P")
        m.putpalette(palette[:256].reshape(-1).tolist())
        m.save(mask_path)
        shares = np.bincount(mask.reshape(-1), minlength=model.num_classes) / mask.size
        Image.fromarray(_pair_picture(img, mask, palette, names, shares)).save(pair_path)
        classes = {names[i]: float(c) for i, c in enumerate(shares) if c > 0}
        records.append({
            "input": str(path), "mask": str(mask_path), "pair": str(pair_path),
            "classes": classes, "summary": format_summary(classes),
        })
    return records
