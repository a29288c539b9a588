"""Command line: ``spikeseg {train,evaluate,predict,report,models}``.

The CLI only parses arguments and formats results; the work is done by library functions
(:func:`spikeseg.engine.train`, :func:`spikeseg.engine.evaluate_checkpoint`,
:func:`spikeseg.predict.predict_files`). A problem with the user's input prints one line,
``spikeseg: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import SpikesegError

__all__ = ["main", "format_table"]


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def format_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A plain-text table with aligned columns."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.4f}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    out = [line, sep]
    numeric = [
        all(_is_number(r[i]) for r in rows) if rows else False for i in range(len(headers))
    ]
    for r in body:
        out.append("  ".join(v.rjust(w) if numeric[i] else v.ljust(w)
                             for i, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    return "\n".join(out)


def _scores_table(result) -> str:
    s = result.scores
    rows = [(n, v) for n, v in zip(result.class_names, s.iou, strict=True)]
    table = format_table(rows, ["class", "IoU"])
    return (
        f"{table}\n\nmIoU {s.miou:.4f}   pixel accuracy {s.pixel_accuracy:.4f}   "
        f"mean class accuracy {s.mean_accuracy:.4f}"
        + (f"   (T={result.timesteps})" if result.timesteps else "")
        + f"   {result.num_images} images"
    )


# -- subcommands ----------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine.evaluate import baseline_scores, build_split, data_timesteps
    from .engine.train import train

    cfg = load_config(args.config, args.set)
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports
    frames = data_timesteps(cfg.model.name, cfg.model.timesteps)
    base = baseline_scores(build_split(cfg.data, "val", frames))
    print()
    if result.last_eval is not None:
        print(_scores_table(result.last_eval))
    print(
        f"\nvalidation mIoU {result.best_miou:.4f} (best, epoch {result.best_epoch}); "
        f"all-background baseline {base.miou:.4f}"
    )
    if cfg.train.report:
        from .analysis.report import write_report

        report_dir = result.run_dir / "report"
        r = write_report(result.best_checkpoint, report_dir, progress=not args.no_progress)
        _print_report_summary(r)
    print(f"outputs: {result.run_dir} (metrics.csv, config.yaml, checkpoints/best.safetensors"
          + (", report/report.md" if cfg.train.report else "") + ")")
    return 0


def _print_report_summary(r: dict) -> None:
    e = r["energy"]
    rates = ", ".join(f"{s['layer'].removesuffix('.act')} {s['spike_rate']:.2f}"
                      for s in r["spike_rates"])
    print(f"\nspike rates (eq. 8): {rates}")
    print(f"energy: E_ANN {e['energy_ann_pj'] / 1e6:.2f} µJ, E_SNN {e['energy_snn_pj'] / 1e6:.2f} µJ "
          f"per image, E_ANN/E_SNN = {e['ratio_ann_over_snn']:.2f}x ({e['energy_model']['name']})")
    for name, pts in r["robustness"].items():
        print(f"noise robustness {name}: " + ", ".join(
            f"σ={p['sigma']:g} mIoU {p['miou']:.3f} ({p['drop_percent']:.1f}% drop)" for p in pts))
    print("mIoU vs T: " + ", ".join(f"T={p['timesteps']} {p['miou']:.3f}"
                                   for p in r["timestep_sweep"]))


def cmd_report(args: argparse.Namespace) -> int:
    from .analysis.report import write_report

    r = write_report(
        args.checkpoint, args.out, ann_checkpoint=args.ann_checkpoint,
        sigmas=_floats(args.sigmas), timesteps=[int(t) for t in _floats(args.timesteps)]
        if args.timesteps else None, num_pictures=args.pictures, batch_size=args.batch_size,
        max_batches=args.max_batches, energy_model=args.energy_model,
        first_layer=args.first_layer, device=args.device, data_root=args.data_root,
        progress=not args.no_progress,
    )
    snn = r["snn"]
    print(f"{r['model']['name']}: mIoU {snn['miou']:.4f} (T={snn['timesteps']})"
          + (f", ANN twin {r['ann']['miou']:.4f}" if r["ann"] else ""))
    _print_report_summary(r)
    print(f"report written to {Path(args.out) / 'report.md'} (and report.html, report.json, PNGs)")
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpikesegError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate_checkpoint

    result, meta = evaluate_checkpoint(
        args.checkpoint, timesteps=args.timesteps, split=args.split, batch_size=args.batch_size,
        device=args.device, data_root=args.data_root, max_batches=args.max_batches,
        progress=not args.no_progress,
    )
    print(f"{meta['model']['name']} on {meta.get('dataset', {}).get('name', '?')} ({args.split})")
    print(_scores_table(result))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"checkpoint": str(args.checkpoint), **result.as_dict()}, indent=2))
        print(f"scores written to {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_files

    records = predict_files(
        args.checkpoint, args.inputs, args.out, timesteps=args.timesteps, device=args.device,
    )
    for r in records:
        top = sorted(r["classes"].items(), key=lambda kv: -kv[1])[:4]
        print(f"{r['input']} -> {r['pair']}  ({', '.join(f'{k} {v:.0%}' for k, v in top)})")
    print(f"{len(records)} prediction(s) written to {args.out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import ConversionConfig, convert_checkpoint, layer_threshold_summary

    cfg = ConversionConfig(
        method=args.method, percentile=args.percentile, source=args.source,
        calibration_images=args.calibration_images,
        calibration_timesteps=args.calibration_timesteps, timesteps=args.timesteps,
        encoding=args.encoding,
    )
    (weights, _), snn = convert_checkpoint(
        args.checkpoint, args.out, cfg, data_root=args.data_root, device=args.device,
        seed=args.seed, progress=not args.no_progress,
    )
    rows = [(r["layer"], r["thresholds"], r["min"], r["median"], r["max"])
            for r in layer_threshold_summary(snn)]
    print(format_table(rows, ["layer", "thresholds", "min θ", "median θ", "max θ"]))
    print(f"\nconverted ({cfg.method}-wise, percentile {cfg.percentile:g}, source {cfg.source}, "
          f"{cfg.calibration_images} calibration images) -> {weights}")
    print(f"evaluate at any T: spikeseg sweep --checkpoint {weights} --timesteps 10,100,1000 "
          "--out sweep/")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .analysis.sweeps import sweep_checkpoints

    labels = args.label or None
    r = sweep_checkpoints(
        args.checkpoint, [int(t) for t in _floats(args.timesteps)], args.out, labels,
        split=args.split, batch_size=args.batch_size, max_batches=args.max_batches,
        device=args.device, data_root=args.data_root, seed=args.seed,
        progress=not args.no_progress,
    )
    marks = r["timesteps"]
    rows = [[label] + [p["miou"] for p in pts] for label, pts in r["curves"].items()]
    rows += [[f"{label} (ANN)"] + [miou] * len(marks) for label, miou in r["ann"].items()]
    print(format_table(rows, ["model \\ T"] + [str(t) for t in marks]))
    print(f"\nmIoU per T written to {', '.join(r['files'])}")
    return 0


def cmd_activations(args: argparse.Namespace) -> int:
    from .analysis.activations import write_activation_report

    r = write_activation_report(
        args.checkpoint, args.out, split=args.split, batch_size=args.batch_size,
        max_batches=args.max_batches, device=args.device, data_root=args.data_root,
        progress=not args.no_progress,
    )
    rows = [(s["layer"], s["layer_max"], s["channel_median"], s["channel_below_0.1"],
             s["position_median"], s["position_below_0.1"]) for s in r["layers"]]
    print(format_table(rows, ["layer", "max activation", "channel median", "channels < 0.1",
                              "position median", "positions < 0.1"]))
    print("\n(per-channel / per-position maxima divided by the layer maximum)")
    print(f"written to {', '.join(r['files'])}")
    return 0


def _yaml_options(pairs: Sequence[str]) -> dict:
    import yaml

    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpikesegError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise SpikesegError(f"--option {item!r}: not a YAML value ({e})") from None
    return out


def cmd_data_info(args: argparse.Namespace) -> int:
    from .data.info import dataset_summary

    size = [int(v) for v in _floats(args.image_size)]
    r = dataset_summary(
        args.dataset, args.root, splits=args.split or ("train", "val"),
        image_size=size if len(size) == 2 else size[0], timesteps=args.timesteps,
        options=_yaml_options(args.option), max_samples=None if args.all else args.max_samples,
        progress=not args.no_progress,
    )
    print(f"{r['dataset']} at {r['root'] or '(default location)'}: {r['num_classes']} classes, "
          f"{r['in_channels']} input channels" + (", time series" if r["temporal"] else ""))
    rows = [(s["split"], s["size"], s["scanned"], "x".join(map(str, s["input_shape"])),
             s["input_dtype"], f"{s['input_range'][0]:.3g}..{s['input_range'][1]:.3g}",
             "x".join(map(str, s["label_shape"])), s["ignored_pixels"]) for s in r["splits"]]
    print(format_table(rows, ["split", "samples", "scanned", "input shape", "dtype", "range",
                              "label shape", "ignored px"]))
    print()
    hist = [[name] + [f"{s['class_fraction'][name]:.2%}" for s in r["splits"]]
            for name in r["class_names"]]
    print(format_table(hist, ["class"] + [f"{s['split']} pixels" for s in r["splits"]]))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=2))
        print(f"\nwritten to {out}")
    return 0


def cmd_data_make_mnist_cifar(args: argparse.Namespace) -> int:
    from .data.mnist_cifar import make_mnist_cifar

    out = make_mnist_cifar(
        args.mnist, args.cifar, args.out, num_train=args.num_train, num_test=args.num_test,
        labels=args.labels, seed=args.seed, progress=not args.no_progress,
    )
    print(f"MNIST-on-CIFAR10 written to {out}; train with --set data.dataset=mnist_cifar "
          f"--set data.root={out}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import count_parameters, create, list_models, model_entry

    rows = []
    for name in list_models():
        e = model_entry(name)
        m = create(name, args.num_classes, args.in_channels, timesteps=args.timesteps,
                   width=args.width)
        rows.append((name, "yes" if e.spiking else "no", f"{count_parameters(m) / 1e6:.2f} M",
                     e.description))
    print(format_table(rows, ["model", "spiking", "parameters", "description"]))
    print(f"\n(parameters for {args.num_classes} classes, {args.in_channels} input channels, "
          f"width {args.width})")
    return 0


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spikeseg",
        description="Semantic segmentation with spiking neural networks.",
    )
    p.add_argument("--version", action="version", version=f"spikeseg {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("--config", help="YAML config (see configs/); defaults are the paper's")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.001 (repeatable)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in out_dir/name from its last completed epoch")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on its dataset")
    e.add_argument("--checkpoint", required=True, help="checkpoint (.safetensors or .json)")
    e.add_argument("--timesteps", type=int, help="T at inference (default: as trained)")
    e.add_argument("--split", default="val")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--device", default="auto")
    e.add_argument("--data-root", help="dataset folder, if not where it was during training")
    e.add_argument("--max-batches", type=int, help="evaluate on the first N batches only")
    e.add_argument("--out", help="write the scores to this JSON file")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("predict", help="segment image files and write PNG masks and pictures")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image files")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--timesteps", type=int)
    r.add_argument("--device", default="auto")
    r.set_defaults(func=cmd_predict)

    a = sub.add_parser("report", help="analyses of a spiking checkpoint: report.md/html/json + PNGs")
    a.add_argument("--checkpoint", required=True, help="the spiking model's checkpoint")
    a.add_argument("--ann-checkpoint", help="its ANN twin, for energy/robustness comparison")
    a.add_argument("--out", required=True, help="output folder")
    a.add_argument("--sigmas", default="0,0.05,0.1,0.2,0.3", help="Gaussian noise levels")
    a.add_argument("--timesteps", help="inference T of the sweep, e.g. 5,10,20,40 "
                   "(default T/4, T/2, T, 2T, 4T)")
    a.add_argument("--pictures", type=int, default=6, help="prediction triplets to draw")
    a.add_argument("--batch-size", type=int, default=16)
    a.add_argument("--max-batches", type=int, help="limit every evaluation (quick looks)")
    a.add_argument("--energy-model", default="45nm_fp32",
                   help="45nm_fp32 (the paper's table 5), 45nm_fp16, 45nm_int32, 45nm_int8")
    a.add_argument("--first-layer", default="mac", choices=["mac", "ac"],
                   help="price the first layer as MACs (real-valued input) or ACs (spikes)")
    a.add_argument("--device", default="auto")
    a.add_argument("--data-root", help="dataset folder, if not where it was during training")
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(func=cmd_report)

    c = sub.add_parser("convert", help="convert a trained ANN checkpoint into an SNN")
    c.add_argument("--checkpoint", required=True, help="the ANN's checkpoint (deeplab or fcn)")
    c.add_argument("--out", required=True, help="checkpoint to write (name or .safetensors)")
    c.add_argument("--method", default="layer", choices=["layer", "channel"],
                   help="one threshold per layer (Sengupta et al.) or per channel (Spiking-YOLO)")
    c.add_argument("--percentile", type=float, default=100.0,
                   help="percentile of the per-neuron maxima (100 = max; 99.9 is robust)")
    c.add_argument("--source", default="snn", choices=["snn", "ann"],
                   help="statistics of spiking input currents (layer by layer) or ANN activations")
    c.add_argument("--calibration-images", type=int, default=64)
    c.add_argument("--calibration-timesteps", type=int, default=64)
    c.add_argument("--timesteps", type=int, default=1000, help="default inference T")
    c.add_argument("--encoding", default="poisson", choices=["poisson", "direct"],
                   help="coding of static images in the converted SNN")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="auto")
    c.add_argument("--data-root", help="dataset folder, if not where it was during training")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_convert)

    w = sub.add_parser("sweep", help="mIoU against inference timesteps (CSV, JSON, plot)")
    w.add_argument("--checkpoint", required=True, action="append",
                   help="a checkpoint (repeat to compare several in one plot)")
    w.add_argument("--label", action="append", help="legend label per --checkpoint")
    w.add_argument("--timesteps", default="5,10,20,50,100,250,500,1000",
                   help="comma-separated T values (one streaming pass to the largest)")
    w.add_argument("--out", required=True, help="output folder")
    w.add_argument("--split", default="val")
    w.add_argument("--batch-size", type=int, default=16)
    w.add_argument("--max-batches", type=int, help="only the first N batches")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--device", default="auto")
    w.add_argument("--data-root")
    w.add_argument("--no-progress", action="store_true")
    w.set_defaults(func=cmd_sweep)

    v = sub.add_parser("activations",
                       help="per-channel / per-position activation spread of an ANN (figure 4)")
    v.add_argument("--checkpoint", required=True, help="the ANN's checkpoint")
    v.add_argument("--out", required=True, help="output folder")
    v.add_argument("--split", default="train")
    v.add_argument("--batch-size", type=int, default=16)
    v.add_argument("--max-batches", type=int)
    v.add_argument("--device", default="auto")
    v.add_argument("--data-root")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=cmd_activations)

    d = sub.add_parser("data", help="dataset tools: info, make-mnist-cifar")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("info", help="split sizes, class histogram and sample shapes")
    di.add_argument("--dataset", required=True, help="builtin, builtin_events, voc, "
                    "mnist_cifar, ddd17, dsec")
    di.add_argument("--root", help="the dataset's folder")
    di.add_argument("--split", action="append", help="only this split (repeatable)")
    di.add_argument("--image-size", default="64", help="H or H,W as in data.image_size")
    di.add_argument("--timesteps", type=int, help="frames per sample (event datasets)")
    di.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a dataset option, as in data.options (repeatable)")
    di.add_argument("--max-samples", type=int, default=200,
                    help="labels scanned per split for the histogram")
    di.add_argument("--all", action="store_true", help="scan every sample")
    di.add_argument("--out", help="also write the summary as JSON")
    di.add_argument("--no-progress", action="store_true")
    di.set_defaults(func=cmd_data_info)
    dm = dsub.add_parser("make-mnist-cifar",
                         help="generate the MNIST-on-CIFAR10 set from local MNIST and CIFAR-10")
    dm.add_argument("--mnist", required=True, help="folder with the MNIST IDX files")
    dm.add_argument("--cifar", required=True, help="folder with cifar-10-batches-py")
    dm.add_argument("--out", required=True, help="output folder")
    dm.add_argument("--num-train", type=int, default=48000)
    dm.add_argument("--num-test", type=int, default=12000)
    dm.add_argument("--labels", default="binary", choices=["binary", "digits"])
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--no-progress", action="store_true")
    dm.set_defaults(func=cmd_data_make_mnist_cifar)

    m = sub.add_parser("models", help="list the available models")
    m.add_argument("--num-classes", type=int, default=21)
    m.add_argument("--in-channels", type=int, default=3)
    m.add_argument("--timesteps", type=int, default=20)
    m.add_argument("--width", type=float, default=1.0)
    m.set_defaults(func=cmd_models)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spikeseg`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpikesegError as e:
        print(f"spikeseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikeseg: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
