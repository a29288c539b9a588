"""Prediction on image files: colour-coded masks and image | prediction pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .data import default_palette
from .engine.checkpoint import load_checkpoint
from .engine.evaluate import prepare_model, resolve_device, to_input
from .errors import SpikesegError

__all__ = ["read_image", "colorize", "predict_files"]


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image file as ``uint8 [H, W, 3]`` (SpikesegError if missing or unreadable)."""
    p = Path(path)
    if not p.is_file():
        raise SpikesegError(f"input image {p} not found")
    try:
        with Image.open(p) as im:
            return np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SpikesegError(f"input image {p} is unreadable: {e}") from None


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class-id map ``[H, W]`` → RGB ``uint8 [H, W, 3]`` through ``palette``."""
    return palette[mask.astype(np.int64)]


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
    ``photo_pair.png`` (the image beside the colour-coded prediction).

    Returns:
        One record per image: input path, output paths and the pixel share of each class.
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
    names = meta.get("dataset", {}).get("class_names") or [str(i) for i in range(model.num_classes)]
    palette = default_palette(model.num_classes)
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
        logits = F.interpolate(logits.float().cpu(), size=(h, w), mode="bilinear", align_corners=False)
        mask = logits.argmax(1)[0].numpy().astype(np.uint8)
        mask_path = out / f"{path.stem}_mask.png"
        pair_path = out / f"{path.stem}_pair.png"
        m = Image.fromarray(mask, mode="P")
        m.putpalette(palette.reshape(-1).tolist())
        m.save(mask_path)
        Image.fromarray(np.concatenate([img, colorize(mask, palette)], axis=1)).save(pair_path)
        counts = np.bincount(mask.reshape(-1), minlength=model.num_classes) / mask.size
        records.append({
            "input": str(path), "mask": str(mask_path), "pair": str(pair_path),
            "classes": {names[i]: float(c) for i, c in enumerate(counts) if c > 0},
        })
    return records
