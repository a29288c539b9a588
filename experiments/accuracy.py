"""The accuracy study of docs/accuracy.md: the paper recipe, each modern option alone, the
modern recipe at several T, and the ANN twin, on the built-in static and event sets.

Each row is a ``spikeseg train`` command (printed and recorded exactly); after training, the
best checkpoint is evaluated once more on the validation split while spike rates (eq. (8))
and operation counts (eqs. (9)-(12)) are recorded. One JSON line per run goes to
``results.jsonl`` (runs already there are skipped, so the study resumes); ``--table`` prints
the Markdown table of docs/accuracy.md from it (mean ± standard deviation over seeds).

    python experiments/accuracy.py --suite static --out docs/accuracy      # run what is missing
    python experiments/accuracy.py --suite static --out docs/accuracy --table
    python experiments/accuracy.py --suite events --only ann,paper,lr-later --headline ann,paper,lr-later
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This checkout's spikeseg, whatever the interpreter has installed (run the study from a clean
# worktree of a fixed commit: git worktree add /tmp/study HEAD).
SPIKESEG = [sys.executable, "-m", "spikeseg"]
# One thread per run: the study shares the machine, and oversubscribed OpenMP threads spin.
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}

# The modern recipe: what won, option by option, on the built-in sets (docs/accuracy.md).
# Static: of the options alone at 8 epochs, direct coding won (+5.6 mIoU) and PLIF was neutral;
# tdBN, TET and augmentation lost (docs/accuracy.md).
# Events: no architectural option alone beat the paper recipe; the composition of the options
# the literature recommends for event data is the "all-T8" row (it lost too).
MODERN_STATIC = ["model.encoding=direct", "model.neuron=plif", "model.learnable_per=channel"]
# The event recipe of configs/modern/builtin_events.yaml: the paper's, the LR drop at 88%.
LATE_DROP = ["train.lr_milestones=[0.875]"]
# The static recipe of configs/modern/builtin.yaml.
STATIC_RECIPE = MODERN_STATIC + ["model.timesteps=4"] + LATE_DROP
# Pixel-wise distillation from the ANN twin's run of the same seed (trained first if missing).
KD = ["train.teacher={runs}/{suite}-ann-s{seed}/checkpoints/best.safetensors"]
# ... from the ANN twin trained with the late LR drop (the stronger teacher).
KD_LATE = ["train.teacher={runs}/{suite}-ann-late-s{seed}/checkpoints/best.safetensors"]
# The event recipe of configs/modern/builtin_events.yaml.
EVENT_RECIPE = LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0",
                            "model.timesteps=2", "model.propagation_steps=4"]
# Surrogate gradients other than the paper's piecewise-linear one (eq. (6), γ 1).
SG_FSIG = ["model.surrogate=fast_sigmoid", "model.surrogate_options={slope: 25}"]
SG_EXP = ["model.surrogate=exponential", "model.surrogate_options={gamma: 1.0, beta: 2.0}"]
SG_PWL03 = ["model.surrogate_options={gamma: 0.3}"]

SUITES = {
    "static": {
        "config": "configs/builtin_cpu.yaml",
        "common": ["train.report=false", "train.threads=1"],
        "rows": [
            ("ann", "ANN twin (deeplab)", ["model.name=deeplab"]),
            ("paper", "paper recipe, T=8", []),
            ("direct", "+ direct coding", ["model.encoding=direct"]),
            ("plif", "+ PLIF (learnable leak per channel)",
             ["model.neuron=plif", "model.learnable_per=channel"]),
            ("threshold", "+ learnable threshold", ["model.learn_threshold=true"]),
            ("tdbn", "+ tdBN", ["model.norm=tdbn"]),
            ("bn", "+ time-shared BN", ["model.norm=bn"]),
            ("tet", "+ TET loss", ["train.loss=tet"]),
            ("augment", "+ augmentation (flip, scale-crop)",
             ["data.augment={flip: true, scale: [0.75, 1.25]}"]),
            ("res", "+ residual backbone (spiking_deeplab_res)",
             ["model.name=spiking_deeplab_res"]),
            ("modern-T8", "modern recipe, T=8", MODERN_STATIC),
            ("modern-T4", "modern recipe, T=4", MODERN_STATIC + ["model.timesteps=4"]),
            ("modern-T2", "modern recipe, T=2", MODERN_STATIC + ["model.timesteps=2"]),
            ("modern-T1", "modern recipe, T=1", MODERN_STATIC + ["model.timesteps=1"]),
            # Variants of the T=4 recipe: which part carries it, and what else might add.
            ("direct-T4", "direct coding alone, T=4",
             ["model.encoding=direct", "model.timesteps=4"]),
            ("direct-bn-T4", "direct coding + time-shared BN, T=4",
             ["model.encoding=direct", "model.norm=bn", "model.timesteps=4"]),
            ("modern-thr-T4", "modern recipe + learnable threshold, T=4",
             MODERN_STATIC + ["model.learn_threshold=true", "model.timesteps=4"]),
            ("modern-res-T4", "modern recipe, residual backbone, T=4",
             MODERN_STATIC + ["model.name=spiking_deeplab_res", "model.timesteps=4"]),
            ("modern-adam-T4", "modern recipe + Adam without AMSGrad, T=4",
             MODERN_STATIC + ["model.timesteps=4", "train.amsgrad=false"]),
            ("modern-readout-T4", "modern recipe + leaky readout (λ_o 0.7), T=4",
             MODERN_STATIC + ["model.timesteps=4", "model.readout_leak=0.7"]),
            # The recall gap (the spiking models miss digit pixels): class-weighted
            # cross-entropy, and the ANN twin with the same loss for a fair comparison.
            ("modern-cw-T4", "modern recipe + median-frequency class weights, T=4",
             MODERN_STATIC + ["model.timesteps=4", "train.class_weight=median_freq"]),
            ("modern-cwsqrt-T4", "modern recipe + inverse-sqrt class weights, T=4",
             MODERN_STATIC + ["model.timesteps=4", "train.class_weight=inv_sqrt_freq"]),
            ("ann-cw", "ANN twin + median-frequency class weights",
             ["model.name=deeplab", "train.class_weight=median_freq"]),
            ("ann-cwsqrt", "ANN twin + inverse-sqrt class weights",
             ["model.name=deeplab", "train.class_weight=inv_sqrt_freq"]),
            # ... and a loss made of the metric: CE + the Lovász-softmax surrogate of 1 − IoU.
            ("modern-lovasz-T4", "modern recipe + Lovász-softmax loss (weight 1), T=4",
             MODERN_STATIC + ["model.timesteps=4", "train.lovasz_weight=1.0"]),
            ("ann-lovasz", "ANN twin + Lovász-softmax loss (weight 1)",
             ["model.name=deeplab", "train.lovasz_weight=1.0"]),
            # The schedule that won on events (the ÷10 drop at 88% of the epochs), on the T=4
            # recipe and, for a fair comparison, on the ANN twin.
            ("modern-late-T4", "modern recipe + LR drop at 88%, T=4",
             STATIC_RECIPE),
            ("ann-late", "ANN twin + LR drop at 88%", ["model.name=deeplab"] + LATE_DROP),
            # Distillation: the ANN twin's soft per-pixel predictions as a second target.
            ("modern-kd-T4", "modern recipe + distillation from the ANN twin, T=4",
             MODERN_STATIC + ["model.timesteps=4"] + KD),
            # The late drop on the modern recipe at the other T, and with distillation.
            ("modern-late-T8", "modern recipe + LR drop at 88%, T=8",
             MODERN_STATIC + ["model.timesteps=8"] + LATE_DROP),
            ("modern-late-T2", "modern recipe + LR drop at 88%, T=2",
             MODERN_STATIC + ["model.timesteps=2"] + LATE_DROP),
            ("modern-late-T1", "modern recipe + LR drop at 88%, T=1",
             MODERN_STATIC + ["model.timesteps=1"] + LATE_DROP),
            ("modern-late-kd-T4", "modern recipe + LR drop at 88% + distillation, T=4",
             STATIC_RECIPE + KD),
            ("paper-late", "paper recipe + LR drop at 88%, T=8", LATE_DROP),
            ("modern-late-kdl-T4",
             "modern recipe + LR drop at 88% + distillation from the late-drop ANN twin, T=4",
             STATIC_RECIPE + KD_LATE),
            ("modern-late-kdl4-T4",
             "modern recipe + LR drop at 88% + distillation from the late-drop ANN twin (τ 4), T=4",
             STATIC_RECIPE + KD_LATE
             + ["train.distill_temperature=4"]),
            # The surrogate gradient (the paper's eq. (6) is the piecewise-linear one) and the
            # width, on the T=4 recipe; the wider network beside its equally wide ANN twin.
            ("modern-late-fsig-T4", "modern recipe + LR drop at 88% + fast-sigmoid surrogate "
             "(k 25), T=4",
             STATIC_RECIPE + SG_FSIG),
            ("modern-late-exp-T4", "modern recipe + LR drop at 88% + exponential surrogate "
             "(β 2), T=4",
             STATIC_RECIPE + SG_EXP),
            ("modern-late-pwl03-T4", "modern recipe + LR drop at 88% + piecewise-linear "
             "surrogate damped by γ 0.3 (the paper's code), T=4",
             STATIC_RECIPE + SG_PWL03),
            ("modern-late-w05-T4", "modern recipe + LR drop at 88%, half width, T=4",
             MODERN_STATIC + ["model.timesteps=4", "model.width=0.5"] + LATE_DROP),
            ("ann-late-w05", "ANN twin + LR drop at 88%, half width",
             ["model.name=deeplab", "model.width=0.5"] + LATE_DROP),
        ],
    },
    "events": {
        "config": "configs/builtin_events_cpu.yaml",
        "common": ["train.report=false", "train.threads=1"],
        "rows": [
            ("ann", "ANN twin (deeplab)", ["model.name=deeplab"]),
            ("paper", "paper recipe, T=8", []),
            ("voxel", "+ voxel-grid input", ["data.options.representation=voxel"]),
            ("plif", "+ PLIF (learnable leak per channel)",
             ["model.neuron=plif", "model.learnable_per=channel"]),
            ("threshold", "+ learnable threshold", ["model.learn_threshold=true"]),
            ("tdbn", "+ tdBN", ["model.norm=tdbn"]),
            ("bn", "+ time-shared BN", ["model.norm=bn"]),
            ("tet", "+ TET loss", ["train.loss=tet"]),
            ("augment", "+ augmentation (flip, shift)", ["data.augment={flip: true, shift: 2}"]),
            ("res", "+ residual backbone (spiking_deeplab_res)",
             ["model.name=spiking_deeplab_res"]),
            # Integrating the window: more weight on the recent frames (a faster leak), and
            # more activity from sparse frames (a lower threshold).
            ("leak", "+ faster leak (λ 0.9)", ["model.leak=0.9"]),
            ("thr-half", "+ lower threshold (θ 0.5)", ["model.threshold=0.5"]),
            ("lr-low", "+ learning rate 1e-3 (paper 3e-3)", ["train.lr=0.001"]),
            # The same 16 epochs, the LR drop later (the 32-epoch row gained from it).
            ("lr-late", "+ LR drop at 75% of the epochs (paper 50%)", ["train.lr_milestones=[0.75]"]),
            ("lr-later", "+ LR drop at 88% of the epochs (paper 50%)",
             ["train.lr_milestones=[0.875]"]),
            # On top of the late drop (configs/modern/builtin_events.yaml), same epochs and
            # images: twice the optimiser steps (batch 8), no L2 penalty, and zero-input steps
            # after the 8 frames so that what the last frames started reaches the output.
            ("late-bs8", "LR drop at 88% + batch 8 (twice the steps)",
             LATE_DROP + ["train.batch_size=8"]),
            ("late-wd0", "LR drop at 88% + no weight decay (paper 5e-4)",
             LATE_DROP + ["train.weight_decay=0"]),
            ("late-prop4", "LR drop at 88% + 4 propagation steps",
             LATE_DROP + ["model.propagation_steps=4"]),
            # The optimiser: AMSGrad (the paper's code) keeps the largest second moment seen,
            # so steps shrink for good once early gradients were large; plain Adam does not.
            ("late-adam", "LR drop at 88% + Adam without AMSGrad",
             LATE_DROP + ["train.amsgrad=false"]),
            ("late-lr1e-2", "LR drop at 88% + learning rate 1e-2",
             LATE_DROP + ["train.lr=0.01"]),
            # The readout: the label is at the end of the window, and a trained network's
            # last steps segment best (their logits alone beat the average over all steps),
            # so a leaky output accumulator that weighs them most.
            ("late-readout", "LR drop at 88% + leaky readout (λ_o 0.8)",
             LATE_DROP + ["model.readout_leak=0.8"]),
            ("late-prop4-readout", "LR drop at 88% + 4 propagation steps + leaky readout (λ_o 0.8)",
             LATE_DROP + ["model.propagation_steps=4", "model.readout_leak=0.8"]),
            ("late-readout-0.5", "LR drop at 88% + leaky readout (λ_o 0.5)",
             LATE_DROP + ["model.readout_leak=0.5"]),
            ("late-prop4-readout-0.5",
             "LR drop at 88% + 4 propagation steps + leaky readout (λ_o 0.5)",
             LATE_DROP + ["model.propagation_steps=4", "model.readout_leak=0.5"]),
            # The averaged logits under-call digits: class-weighted cross-entropy.
            ("late-cw", "LR drop at 88% + median-frequency class weights",
             LATE_DROP + ["train.class_weight=median_freq"]),
            ("late-cwsqrt", "LR drop at 88% + inverse-sqrt class weights",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq"]),
            ("ann-cw", "ANN twin + median-frequency class weights",
             ["model.name=deeplab", "train.class_weight=median_freq"]),
            ("late-lovasz", "LR drop at 88% + Lovász-softmax loss (weight 1)",
             LATE_DROP + ["train.lovasz_weight=1.0"]),
            ("ann-lovasz", "ANN twin + Lovász-softmax loss (weight 1)",
             ["model.name=deeplab", "train.lovasz_weight=1.0"]),
            # The two recall remedies together, and with the propagation steps.
            ("late-cwsqrt-lovasz", "LR drop at 88% + inverse-sqrt class weights + Lovász",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0"]),
            ("late-cwsqrt-prop4", "LR drop at 88% + inverse-sqrt class weights + 4 propagation steps",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "model.propagation_steps=4"]),
            ("late-cwsqrt-lovasz-prop4",
             "LR drop at 88% + inverse-sqrt class weights + Lovász + 4 propagation steps",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0",
                          "model.propagation_steps=4"]),
            # Not the equal budget of the other rows: is the paper recipe still learning?
            ("long", "paper recipe, 32 epochs (twice the budget)", ["train.epochs=32"]),
            ("all-T8", "tdBN + PLIF + TET + augmentation, T=8",
             ["model.norm=tdbn", "model.neuron=plif", "train.loss=tet",
              "data.augment={flip: true, shift: 2}"]),
            # The event recipe (the late drop; its T=8 row is "lr-later") at fewer timesteps:
            # the same 50 ms of events in T coarser frames.
            ("recipe-T4", "event recipe (LR drop at 88%), T=4", LATE_DROP + ["model.timesteps=4"]),
            ("recipe-T2", "event recipe (LR drop at 88%), T=2", LATE_DROP + ["model.timesteps=2"]),
            ("recipe-T1", "event recipe (LR drop at 88%), T=1", LATE_DROP + ["model.timesteps=1"]),
            # T=8 steps of fewer, denser frames, each held for several steps (as direct coding
            # holds a static image): data.options.steps_per_frame.
            ("hold2", "event recipe, 4 frames each held for 2 steps (T=8)",
             LATE_DROP + ["data.options.steps_per_frame=2"]),
            ("hold4", "event recipe, 2 frames each held for 4 steps (T=8)",
             LATE_DROP + ["data.options.steps_per_frame=4"]),
            ("hold8", "event recipe, the whole window as 1 frame held for 8 steps (T=8)",
             LATE_DROP + ["data.options.steps_per_frame=8"]),
            # T=4 frames and 4 zero-input steps: the paper's T=8 compute.
            ("recipe-T4-prop4", "event recipe, T=4 + 4 propagation steps (8 steps)",
             LATE_DROP + ["model.timesteps=4", "model.propagation_steps=4"]),
            # The recall remedies (inverse-sqrt class weights + Lovász) with denser frames at
            # the same T=8 steps, and with T=4 frames + 4 propagation steps (8 steps).
            ("late-cwsqrt-lovasz-hold2",
             "LR drop at 88% + inverse-sqrt class weights + Lovász, 4 frames held 2 steps (T=8)",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0",
                          "data.options.steps_per_frame=2"]),
            # The paper recipe at T=4 frames (and 4 zero-input steps): the baselines of the
            # T=4-frame rows.
            ("paper-T4", "paper recipe, T=4", ["model.timesteps=4"]),
            ("paper-T4-prop4", "paper recipe, T=4 + 4 propagation steps (8 steps)",
             ["model.timesteps=4", "model.propagation_steps=4"]),
            ("recipe-T2-prop4-cwsqrt-lovasz",
             "LR drop at 88% + inverse-sqrt class weights + Lovász, T=2 + 4 propagation steps",
             EVENT_RECIPE),
            ("recipe-T2-prop6-cwsqrt-lovasz",
             "LR drop at 88% + inverse-sqrt class weights + Lovász, T=2 + 6 propagation steps",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0",
                          "model.timesteps=2", "model.propagation_steps=6"]),
            ("recipe-T1-prop4-cwsqrt-lovasz",
             "LR drop at 88% + inverse-sqrt class weights + Lovász, T=1 + 4 propagation steps",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0",
                          "model.timesteps=1", "model.propagation_steps=4"]),
            # Neuron options on top of the T=2 + propagation recipe.
            ("recipe-T2-prop4-cwsqrt-lovasz-plif",
             "LR drop at 88% + inverse-sqrt class weights + Lovász + PLIF, T=2 + 4 "
             "propagation steps",
             EVENT_RECIPE + ["model.neuron=plif", "model.learnable_per=channel"]),
            ("recipe-T2-prop4-cwsqrt-lovasz-thr",
             "LR drop at 88% + inverse-sqrt class weights + Lovász + learnable threshold, T=2 "
             "+ 4 propagation steps",
             EVENT_RECIPE + ["model.learn_threshold=true"]),
            ("paper-T2", "paper recipe, T=2", ["model.timesteps=2"]),
            ("paper-T2-prop4", "paper recipe, T=2 + 4 propagation steps (6 steps)",
             ["model.timesteps=2", "model.propagation_steps=4"]),
            ("recipe-T4-prop4-cwsqrt-lovasz-kd",
             "LR drop at 88% + inverse-sqrt class weights + Lovász + distillation, T=4 + 4 "
             "propagation steps",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0",
                          "model.timesteps=4", "model.propagation_steps=4"] + KD),
            ("ann-late", "ANN twin + LR drop at 88%", ["model.name=deeplab"] + LATE_DROP),
            ("recipe-T4-prop4-cwsqrt-lovasz-kdl",
             "LR drop at 88% + inverse-sqrt class weights + Lovász + distillation from the "
             "late-drop ANN twin, T=4 + 4 propagation steps",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0",
                          "model.timesteps=4", "model.propagation_steps=4"] + KD_LATE),
            ("recipe-T4-prop4-cwsqrt-lovasz-kd3",
             "LR drop at 88% + inverse-sqrt class weights + Lovász + distillation at weight 3, "
             "T=4 + 4 propagation steps",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0",
                          "model.timesteps=4", "model.propagation_steps=4",
                          "train.distill_weight=3"] + KD),
            ("recipe-T2-prop4-cwsqrt-lovasz-kd",
             "LR drop at 88% + inverse-sqrt class weights + Lovász + distillation, T=2 + 4 "
             "propagation steps",
             EVENT_RECIPE + KD),
            ("late-kd", "LR drop at 88% + distillation from the ANN twin", LATE_DROP + KD),
            ("late-cwsqrt-lovasz-kd",
             "LR drop at 88% + inverse-sqrt class weights + Lovász + distillation from the ANN twin",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0"] + KD),
            ("recipe-T4-prop4-cwsqrt-lovasz",
             "LR drop at 88% + inverse-sqrt class weights + Lovász, T=4 + 4 propagation steps",
             LATE_DROP + ["train.class_weight=inv_sqrt_freq", "train.lovasz_weight=1.0",
                          "model.timesteps=4", "model.propagation_steps=4"]),
            # The surrogate gradient and the width, on the event recipe (T=2 + 4 propagation
            # steps); the wider network beside its equally wide ANN twin.
            ("recipe-T2-prop4-cwsqrt-lovasz-fsig",
             "T=2 + 4 propagation steps recipe (0.244) + fast-sigmoid surrogate (k 25)",
             EVENT_RECIPE + SG_FSIG),
            ("recipe-T2-prop4-cwsqrt-lovasz-exp",
             "T=2 + 4 propagation steps recipe (0.244) + exponential surrogate (β 2)",
             EVENT_RECIPE + SG_EXP),
            ("recipe-T2-prop4-cwsqrt-lovasz-pwl03",
             "T=2 + 4 propagation steps recipe (0.244) + piecewise-linear surrogate damped by γ 0.3 "
             "(the paper's code)",
             EVENT_RECIPE + SG_PWL03),
            ("recipe-T2-prop4-cwsqrt-lovasz-w05",
             "T=2 + 4 propagation steps recipe (0.244), half width",
             EVENT_RECIPE + ["model.width=0.5"]),
            ("ann-late-w05", "ANN twin + LR drop at 88%, half width",
             ["model.name=deeplab", "model.width=0.5"] + LATE_DROP),
            # The learnable threshold on the event recipe (it lifted seed 0), with
            # distillation.
            ("recipe-T2-prop4-cwsqrt-lovasz-thr-kd",
             "T=2 + 4 propagation steps recipe (0.244) + learnable threshold + distillation from "
             "the ANN twin",
             EVENT_RECIPE + ["model.learn_threshold=true"] + KD),
            ("recipe-T2-prop4-cwsqrt-lovasz-thr-exp",
             "**event recipe**: T=2 + 4 propagation steps recipe (0.244) + learnable threshold + "
             "exponential surrogate (β 2)",
             EVENT_RECIPE + ["model.learn_threshold=true"] + SG_EXP),
            # PLIF on the event recipe (it lifted seed 0), with distillation.
            ("recipe-T2-prop4-cwsqrt-lovasz-plif-kd",
             "T=2 + 4 propagation steps recipe (0.244) + PLIF + distillation from the ANN twin",
             EVENT_RECIPE + ["model.neuron=plif", "model.learnable_per=channel"] + KD),
        ],
    },
}


def command(suite: str, sets: list[str], seed: int, name: str, out: Path) -> list[str]:
    s = SUITES[suite]
    argv = [*SPIKESEG, "train", "--config", s["config"], "--no-progress"]
    for o in [*s["common"], *sets, f"train.seed={seed}", f"train.name={name}",
              f"train.out_dir={out / 'runs'}"]:
        argv += ["--set", o.replace("{runs}", str(out / "runs")).replace("{suite}", suite)
                 .replace("{seed}", str(seed))]
    return argv


def teacher_of(sets: list[str]) -> str | None:
    """The row id whose run a row distils (``train.teacher={runs}/{suite}-ID-s{seed}/...``)."""
    for o in sets:
        if o.startswith("train.teacher={runs}/{suite}-"):
            return o.split("{suite}-", 1)[1].split("-s{seed}", 1)[0]
    return None


def measure(checkpoint: Path) -> dict:
    """mIoU, eq. (8) spike rate and E_ANN/E_SNN of a checkpoint on its validation split."""
    from torch.utils.data import DataLoader

    from spikeseg.analysis.energy import OpCounter, estimate_energy
    from spikeseg.analysis.spikes import SpikeRecorder
    from spikeseg.engine.checkpoint import load_checkpoint
    from spikeseg.engine.evaluate import Indexed, checkpoint_dataset, checkpoint_seed, evaluate

    model, meta = load_checkpoint(checkpoint)
    ds = checkpoint_dataset(meta, model, "val", model.timesteps)
    loader = DataLoader(Indexed(ds), batch_size=16)
    seed = checkpoint_seed(meta)
    if not model.spiking:
        r = evaluate(model, loader, progress=False, seed=seed)
        return {"miou": r.scores.miou, "pixel_accuracy": r.scores.pixel_accuracy}
    with SpikeRecorder(model) as rec, OpCounter(model) as oc:
        r = evaluate(model, loader, progress=False, seed=seed)
    # The first layer's dense MACs at the T input steps, as `spikeseg report` prices them: the
    # propagation steps' zero frames need none (rows measured before 2026-12-06 priced all
    # T + P steps and were rescored exactly by subtracting P of those MACs).
    energy = estimate_energy(oc.layers(), model.timesteps)
    return {"miou": r.scores.miou, "pixel_accuracy": r.scores.pixel_accuracy,
            "spike_rate": rec.mean_rate(), "energy_ratio": energy.ratio,
            "energy_snn_uj": energy.energy_snn / 1e6,
            "energy_first_layer_steps": model.timesteps}


def run(suite: str, out: Path, only: set[str] | None, seeds: list[int], headline: set[str]
        ) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results = out / f"{suite}.jsonl"
    done = set()
    if results.is_file():
        done = {(r["id"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())}
    rows = {rid: (label, sets) for rid, label, sets in SUITES[suite]["rows"]}

    def best(rid: str, seed: int) -> Path:
        return out / "runs" / f"{suite}-{rid}-s{seed}" / "checkpoints" / "best.safetensors"

    todo = []
    for rid, _, sets in SUITES[suite]["rows"]:
        if only and rid not in only:
            continue
        for seed in seeds if rid in headline else seeds[:1]:
            if (rid, seed) in done:
                continue
            # A distilling row needs its teacher's run of the same seed: trained first if this
            # folder lacks it (and recorded only if the study has no row for it yet).
            teacher = teacher_of(sets)
            if teacher:
                todo.append((teacher, seed))
            todo.append((rid, seed))
    for rid, seed in todo:
        is_teacher_again = (rid, seed) in done
        if is_teacher_again and best(rid, seed).is_file():
            continue
        label, sets = rows[rid]
        name = f"{suite}-{rid}-s{seed}"
        argv = command(suite, sets, seed, name, out)
        # A run folder left by an interrupted study: continue it (`spikeseg train` would
        # otherwise start afresh in "<name>-2" while this study measured the stale folder).
        run_dir = out / "runs" / name
        resumed = (run_dir / "checkpoints" / "train_state.safetensors").is_file()
        if resumed:
            argv.append("--resume")
        elif run_dir.exists():
            shutil.rmtree(run_dir)
        print("$", shlex.join(["spikeseg", *argv[3:]]), flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=ENV)
        wall = time.time() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            continue
        if is_teacher_again:
            continue
        done.add((rid, seed))
        row = {"id": rid, "label": label, "seed": seed, "suite": suite,
               "command": shlex.join(["spikeseg", *argv[3:]]),
               # A resumed run's times are those of its last part only.
               **({"resumed": True} if resumed else {}),
               "wall_s": round(wall, 1),
               "cpu_s": round((after.ru_utime - before.ru_utime)
                              + (after.ru_stime - before.ru_stime), 1),
               **measure(best(rid, seed))}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"  {rid} seed {seed}: mIoU {row['miou']:.4f} ({wall:.0f} s)", flush=True)


def _cell(vals: list[float], digits: int = 3) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def table(suite: str, out: Path) -> str:
    rows = [json.loads(line) for line in (out / f"{suite}.jsonl").read_text().splitlines()]
    lines = ["| row | mIoU | seeds | spike rate (eq. 8) | E_ANN/E_SNN | train time (wall / CPU) |",
             "|---|---|---|---|---|---|"]
    for rid, label, _ in SUITES[suite]["rows"]:
        rs = [r for r in rows if r["id"] == rid]
        if not rs:
            continue
        spike = [r["spike_rate"] for r in rs if "spike_rate" in r]
        ratio = [r["energy_ratio"] for r in rs if "energy_ratio" in r]
        wall = statistics.mean(r["wall_s"] for r in rs)
        cpu = statistics.mean(r["cpu_s"] for r in rs)
        lines.append(f"| {label} | {_cell([r['miou'] for r in rs])} | "
                     f"{','.join(str(r['seed']) for r in rs)} | {_cell(spike, 2)} | "
                     f"{_cell(ratio, 2) + '×' if ratio else '–'} | "
                     f"{wall / 60:.1f} / {cpu / 60:.1f} min |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True, choices=sorted(SUITES))
    p.add_argument("--out", default="docs/accuracy", help="folder of results and runs")
    p.add_argument("--only", help="comma-separated row ids (default: all)")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the headline rows (others: first)")
    p.add_argument("--headline", default="ann,paper,modern-T4",
                   help="rows run with every seed")
    p.add_argument("--table", action="store_true", help="print the table of what has run")
    args = p.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(args.suite, out))
        return 0
    run(args.suite, out, set(args.only.split(",")) if args.only else None,
        [int(s) for s in args.seeds.split(",")], set(args.headline.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
