"""Which timesteps of a trained spiking model segment best, and what other readouts would give.

Runs a checkpoint on its validation split once, keeping the output layer's logits at every
step (``forward(..., return_steps=True)``, the same per-sample Poisson stream as
``spikeseg evaluate``), and prints the mIoU of: the model's own readout; each step alone; the
mean of the steps from step k on; leaky readouts ``Σ_t λ^{S-1-t} o_t`` for several λ. The
readouts other than the model's own are applied to a network trained for another one, so they
show where the information is, not what training for them would reach (docs/accuracy.md).

    python experiments/step_readout.py runs/NAME/checkpoints/best.safetensors [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.data import DataLoader


def step_logits(checkpoint: str, batch_size: int = 50):
    """``(model, per-step logits [S, N, K, H, W], labels [N, H, W])`` on the validation split."""
    from spikeseg.engine.checkpoint import load_checkpoint
    from spikeseg.engine.evaluate import (
        Indexed,
        batch_keys,
        checkpoint_dataset,
        checkpoint_seed,
        to_input,
    )

    model, meta = load_checkpoint(checkpoint)
    if not model.spiking:
        raise SystemExit("step_readout: the checkpoint is an ANN (no timesteps)")
    model.eval()
    ds = checkpoint_dataset(meta, model, "val", model.timesteps)
    seed, cpu = checkpoint_seed(meta), torch.device("cpu")
    steps, labels, start = [], [], 0
    with torch.no_grad():  # as spikeseg.engine.evaluate.evaluate feeds the model
        for batch in DataLoader(Indexed(ds), batch_size=batch_size):
            keys = batch_keys(batch, seed, start, cpu)
            steps.append(model(to_input(batch[0], cpu, False), return_steps=True, keys=keys))
            labels.append(batch[1])
            start += batch[1].shape[0]
    return model, torch.cat(steps, 1), torch.cat(labels)


def readouts(model, steps: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    from spikeseg.data import IGNORE_INDEX
    from spikeseg.engine.metrics import ConfusionMatrix
    from spikeseg.models.base import leaky_sum

    def miou(logits: torch.Tensor) -> float:
        cm = ConfusionMatrix(model.num_classes, IGNORE_INDEX)
        cm.update(logits.argmax(1), labels)
        return round(cm.compute().miou, 4)

    S = steps.shape[0]
    rows = {"model's readout": miou(model.readout_steps(steps))}
    rows.update({f"step {t} alone": miou(steps[t]) for t in range(S)})
    rows.update({f"mean of steps {k}..{S - 1}": miou(steps[k:].mean(0)) for k in range(S)})
    for lam in (0.9, 0.8, 0.7, 0.5, 0.3):
        rows[f"leaky readout λ {lam}"] = miou(leaky_sum(steps, lam))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, steps, labels = step_logits(args.checkpoint)
    rows = readouts(model, steps, labels)
    width = max(map(len, rows))
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "miou": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
