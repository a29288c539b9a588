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
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import SpikesegError
from .runtime import configure_allocator

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


# -- argument types: a bad value is one line naming the flag ----------------------------


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an int >= {lo}, got {v}")
        return v

    parse.__doc__ = f"An int >= {lo}."
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def _number_list(text: str, *, kind: type, lo: float, what: str) -> list:
    try:
        vals = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {what}, got {text!r}") from None
    if not vals or any(not math.isfinite(v) or v < lo for v in vals):
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
    return vals


def timestep_list(text: str) -> list[int]:
    """Comma-separated ints >= 1 (e.g. ``5,10,20``)."""
    return _number_list(text, kind=int, lo=1, what="timesteps (ints >= 1)")


def level_list(text: str) -> list[float]:
    """Comma-separated numbers >= 0 (e.g. ``0,0.1,0.2``)."""
    return _number_list(text, kind=float, lo=0.0, what="numbers >= 0")


def optional_level_list(text: str) -> list[float]:
    """Like :func:`level_list`; an empty string means none (skip the analysis)."""
    return [] if not text.strip() else level_list(text)


def percentile(text: str) -> float:
    """A number in (0, 100]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 100], got {text!r}") from None
    if not (0 < v <= 100):
        raise argparse.ArgumentTypeError(f"expected a number in (0, 100], got {v:g}")
    return v


def output_file(text: str) -> str:
    """A file to write: not an existing folder, inside a folder that is not a file."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{parent} is a file, not a folder")
            break
    return text


def output_dir(text: str) -> str:
    """A folder to write into: not an existing file."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{parent} is a file, not a folder")
            break
    return text


def existing_file(text: str) -> str:
    """A file that exists."""
    p = Path(text)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text} not found")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file")
    return text



class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``spikeseg: error: ...``) and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        print(f"spikeseg: error: {sub + ': ' if sub else ''}{message}", file=sys.stderr)
        raise SystemExit(2)


class _Help(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless it states its default itself (or has
    none worth showing: required options, flags, None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.required or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS
                or not action.option_strings):
            return text
        default = action.default
        if isinstance(default, list):
            default = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        return f"{text} (default: {default})"


# -- subcommands ----------------------------------------------------------------------------


def _resume_config(args: argparse.Namespace):
    """The config of ``train``: with ``--resume`` and no ``--config``, the run's own
    config.yaml with the ``--set`` overrides on top (what the run was, plus what changes)."""
    from .config import load_config

    if not args.resume or args.config:
        return load_config(args.config, args.set)
    probe = load_config(None, args.set)
    name = probe.train.name or f"{probe.model.name}-{probe.data.dataset}"
    saved = Path(probe.train.out_dir) / name / "config.yaml"
    return load_config(saved if saved.is_file() else None, args.set)


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.evaluate import baseline_scores, build_split, data_timesteps
    from .engine.train import train

    cfg = _resume_config(args)
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports
    if result.interrupted:
        print(f"stopped by SIGTERM; state saved in {result.run_dir} (continue with "
              f"--set train.name={result.run_dir.name} --resume)")
        return 0
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
            f"σ={p['sigma']:g} mIoU {_num(p['miou'], 3)} ({_num(p['drop_percent'], 1)}% drop)"
            for p in pts))
    for c in (r.get("corruptions") or {}).values():
        for name, pts in c["curves"].items():
            print(f"{c['title']} {name}: " + ", ".join(
                f"{c['symbol']}={p['level']:g} mIoU {_num(p['miou'], 3)} "
                f"({_num(p['drop_percent'], 1)}% drop)" for p in pts))
    print("mIoU vs T: " + ", ".join(f"T={p['timesteps']} {_num(p['miou'], 3)}"
                                   for p in r["timestep_sweep"]))


def _num(v: float | None, digits: int) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def cmd_report(args: argparse.Namespace) -> int:
    from .analysis.report import write_report

    r = write_report(
        args.checkpoint, args.out, ann_checkpoint=args.ann_checkpoint,
        sigmas=args.sigmas, blur_sigmas=args.blur_sigmas, salt_pepper=args.salt_pepper,
        timesteps=args.timesteps, num_pictures=args.pictures, seed=args.seed,
        batch_size=args.batch_size, max_batches=args.max_batches,
        energy_model=args.energy_model, first_layer=args.first_layer, device=args.device,
        data_root=args.data_root, progress=not args.no_progress,
    )
    snn = r["snn"]
    print(f"{r['model']['name']}: mIoU {snn['miou']:.4f} (T={snn['timesteps']})"
          + (f", ANN twin {r['ann']['miou']:.4f}" if r["ann"] else ""))
    _print_report_summary(r)
    print(f"report written to {Path(args.out) / 'report.md'} (and report.html, report.json, PNGs)")
    return 0


def _write_json(path: str, data: dict) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate_checkpoint

    result, meta = evaluate_checkpoint(
        args.checkpoint, timesteps=args.timesteps, split=args.split, batch_size=args.batch_size,
        device=args.device, data_root=args.data_root, max_batches=args.max_batches,
        progress=not args.no_progress, seed=args.seed,
    )
    print(f"{meta['model']['name']} on {meta.get('dataset', {}).get('name', '?')} ({args.split})")
    print(_scores_table(result))
    if args.out:
        _write_json(args.out, {"checkpoint": str(args.checkpoint), **result.as_dict()})
        print(f"scores written to {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import format_summary, predict_files

    records = predict_files(
        args.checkpoint, args.inputs, args.out, timesteps=args.timesteps, device=args.device,
    )
    for r in records:
        print(f"{r['input']} -> {r['pair']}  ({format_summary(r['classes'], top=4)})")
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
        args.checkpoint, args.timesteps, args.out, labels,
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


def _image_size(text: str) -> int | list[int]:
    try:
        size = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H or H,W, got {text!r}") from None
    if len(size) not in (1, 2) or min(size) < 4:
        raise argparse.ArgumentTypeError(f"expected H or H,W (each >= 4), got {text!r}")
    return size if len(size) == 2 else size[0]


def cmd_data_info(args: argparse.Namespace) -> int:
    from .data.info import dataset_summary

    r = dataset_summary(
        args.dataset, args.root, splits=args.split or ("train", "val"),
        image_size=args.image_size, timesteps=args.timesteps,
        options=_yaml_options(args.option), max_samples=None if args.all else args.max_samples,
        progress=not args.no_progress,
    )
    where = r["root"] or "the default location"
    if not r["root"] and r.get("resolved_root"):
        where = f"{r['resolved_root']} (the default location)"
    print(f"{r['dataset']} at {where}: {r['num_classes']} classes, "
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
        _write_json(args.out, r)
        print(f"\nwritten to {args.out}")
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


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_checkpoint

    options = {"timesteps": args.timesteps, "input_size": args.input_size}
    if args.format == "nir":
        options.update(dt=args.dt, pool=args.pool)
    else:
        options.update(batch_size=args.batch_size, opset=args.opset,
                       verify=not args.no_verify, dynamo=not args.legacy_exporter)
    r = export_checkpoint(args.checkpoint, args.format, args.out, **options)
    print(f"{r.get('model', '?')} -> {r.get('path', args.out)} ({args.format})")
    shape = r.get("input") or ({"input": r["input_shape"]} if r.get("input_shape") else {})
    for label, value in (("input", shape), ("output", r.get("output") or r.get("outputs"))):
        if value:
            print(f"{label}: {_describe(value)}")
    if r.get("parameter_mapping"):
        print("neurons: " + "; ".join(_describe(m) for m in r["parameter_mapping"]))
    for key in ("folded", "kept", "left_out", "notes"):
        lines = r.get(key) or []
        for line in [lines] if isinstance(lines, str) else lines:
            print(f"{key.replace('_', ' ')}: {line}")
    if r.get("verified"):
        print(f"checked with ONNX Runtime on batch {r.get('verified_batch')}: largest difference "
              f"{r.get('max_abs_diff', float('nan')):.2e}, predicted classes agree on "
              f"{r.get('label_agreement', float('nan')):.2%} of pixels")
    return 0


def _describe(v: object) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {val}" for k, val in v.items())
    return str(v)


def cmd_import_original(args: argparse.Namespace) -> int:
    from .export.original import import_original

    r = import_original(
        args.checkpoint, args.out, model_name=args.model,
        scaling_factor=args.scaling_factor, thresholds=args.thresholds,
        threshold_timesteps=args.threshold_timesteps, timesteps=args.timesteps,
    )
    print(f"{r['architecture']} ({r['model_type']}) -> {r['model']}, kind {r['kind']}, "
          f"{r['num_classes']} classes, T={r['timesteps']}, epoch {r['epoch']}, "
          f"max mIoU {_num(r['max_miou'], 4)}")
    for line in r.get("notes") or []:
        print(f"note: {line}")
    print(f"written to {r['checkpoint']} (and {Path(r['metadata']).name}); evaluate with "
          f"spikeseg evaluate --checkpoint {r['checkpoint']} --data-root DIR")
    return 0


# -- parser ---------------------------------------------------------------------------------

SPLITS = ("train", "val")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def _common(p: argparse.ArgumentParser, *, data: bool = True, batch: bool = True,
            split: str | None = None, progress: bool = True) -> None:
    """Options many subcommands share."""
    if split is not None:
        p.add_argument("--split", default=split, choices=SPLITS,
                       help="the dataset split to read")
    if batch:
        p.add_argument("--batch-size", type=positive_int, default=16,
                       help="images per forward pass")
        p.add_argument("--max-batches", type=positive_int, default=None,
                       help="read only the first N batches (quick looks; default: all)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda or cuda:N")
    if data:
        p.add_argument("--data-root", default=None,
                       help="the dataset's folder, if it moved since training "
                            "(default: where the checkpoint says)")
    if progress:
        p.add_argument("--no-progress", action="store_true",
                       help="no progress display (a bar on a terminal, plain lines otherwise)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="spikeseg", formatter_class=_Help,
        description="Semantic segmentation with spiking neural networks.",
    )
    p.add_argument("--version", action="version", version=f"spikeseg {__version__}",
                   help="print the version and exit")
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an unexpected internal error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser,
                           metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_Help)

    t = add("train", "train a model from a YAML config")
    t.add_argument("--config", default=None,
                   help="YAML config (see configs/); default: the paper's settings, or with "
                        "--resume the run's own config.yaml")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.001 (repeatable)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run out_dir/name from its last saved state; epochs, "
                        "the LR schedule and evaluation settings may change (recorded), "
                        "anything else is refused")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress display (a bar on a terminal, plain lines otherwise)")
    t.set_defaults(func=cmd_train)

    e = add("evaluate", "evaluate a checkpoint on its dataset")
    e.add_argument("--checkpoint", required=True,
                   help="checkpoint: NAME.safetensors, NAME.json or NAME")
    e.add_argument("--timesteps", type=positive_int, default=None,
                   help="T at inference (default: as trained)")
    e.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed of the Poisson spike streams (default: the run's training seed)")
    e.add_argument("--out", type=output_file, default=None,
                   help="also write the scores to this JSON file (default: print only)")
    _common(e, split="val")
    e.set_defaults(func=cmd_evaluate)

    r = add("predict", "segment image files and write PNG masks and pictures")
    r.add_argument("--checkpoint", required=True,
                   help="checkpoint: NAME.safetensors, NAME.json or NAME")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (PNG, JPEG, ...)")
    r.add_argument("--out", required=True, type=output_dir, help="output folder")
    r.add_argument("--timesteps", type=positive_int, default=None,
                   help="T at inference (default: as trained)")
    _common(r, data=False, batch=False, progress=False)
    r.set_defaults(func=cmd_predict)

    a = add("report", "analyses of a spiking checkpoint: report.md/html/json + PNGs")
    a.add_argument("--checkpoint", required=True, help="the spiking model's checkpoint")
    a.add_argument("--ann-checkpoint", default=None,
                   help="its ANN twin, for the energy, robustness and accuracy comparison "
                        "(default: none, the SNN alone)")
    a.add_argument("--out", required=True, type=output_dir, help="output folder")
    a.add_argument("--sigmas", type=level_list, default=[0.0, 0.05, 0.1, 0.2, 0.3],
                   help="Gaussian noise levels σ, comma-separated")
    a.add_argument("--blur-sigmas", type=optional_level_list, default=[0.0, 0.5, 1.0, 2.0],
                   help="Gaussian blur σ in pixels of the model input, comma-separated; "
                        "'' to skip")
    a.add_argument("--salt-pepper", type=optional_level_list, default=[0.0, 0.01, 0.05, 0.1],
                   help="fractions of pixels set to 0/1 (dead/hot pixels on event input), "
                        "comma-separated; '' to skip")
    a.add_argument("--timesteps", type=timestep_list, default=None,
                   help="inference T of the sweep, e.g. 5,10,20,40 (default T/4, T/2, T, 2T, 4T)")
    a.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed of the spike streams and corruptions (default: the run's "
                        "training seed)")
    a.add_argument("--pictures", type=non_negative_int, default=6,
                   help="prediction triplets to draw")
    a.add_argument("--energy-model", default="45nm_fp32",
                   choices=["45nm_fp32", "45nm_fp16", "45nm_int32", "45nm_int8"],
                   help="energy per operation (45nm_fp32 is the paper's table 5)")
    a.add_argument("--first-layer", default="mac", choices=["mac", "ac"],
                   help="price the first layer as MACs (real-valued input) or ACs (spikes)")
    _common(a)
    a.set_defaults(func=cmd_report)

    c = add("convert", "convert a trained ANN checkpoint into an SNN")
    c.add_argument("--checkpoint", required=True, help="the ANN's checkpoint (deeplab or fcn)")
    c.add_argument("--out", required=True, type=output_file,
                   help="checkpoint to write (NAME or NAME.safetensors)")
    c.add_argument("--method", default="layer", choices=["layer", "channel", "neuron"],
                   help="one threshold per layer (Sengupta et al.), per channel (Spiking-YOLO) "
                        "or per neuron (the original code's third type)")
    c.add_argument("--percentile", type=percentile, default=100.0,
                   help="percentile of the per-neuron maxima (100 = max; 99.9 is robust)")
    c.add_argument("--source", default="snn", choices=["snn", "ann"],
                   help="statistics of spiking input currents (layer by layer) or ANN activations")
    c.add_argument("--calibration-images", type=positive_int, default=64,
                   help="training images used to find the thresholds")
    c.add_argument("--calibration-timesteps", type=positive_int, default=64,
                   help="timesteps per calibration run (source snn)")
    c.add_argument("--timesteps", type=positive_int, default=1000,
                   help="default inference T of the converted model")
    c.add_argument("--encoding", default="poisson", choices=["poisson", "direct"],
                   help="coding of static images in the converted SNN")
    c.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the calibration images' choice and spikes")
    _common(c, batch=False)
    c.set_defaults(func=cmd_convert)

    w = add("sweep", "mIoU against inference timesteps (CSV, JSON, plot)")
    w.add_argument("--checkpoint", required=True, action="append",
                   help="a checkpoint (repeat to compare several in one plot)")
    w.add_argument("--label", action="append", default=None,
                   help="legend label per --checkpoint (default: from the checkpoint)")
    w.add_argument("--timesteps", type=timestep_list, default=[5, 10, 20, 50, 100, 250, 500, 1000],
                   help="comma-separated T values (one streaming pass to the largest)")
    w.add_argument("--out", required=True, type=output_dir, help="output folder")
    w.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed of the Poisson spike streams (default: each run's training seed)")
    _common(w, split="val")
    w.set_defaults(func=cmd_sweep)

    v = add("activations", "per-channel / per-position activation spread of an ANN (figure 4)")
    v.add_argument("--checkpoint", required=True, help="the ANN's checkpoint")
    v.add_argument("--out", required=True, type=output_dir, help="output folder")
    _common(v, split="train")
    v.set_defaults(func=cmd_activations)

    d = add("data", "dataset tools: info, make-mnist-cifar")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser,
                            metavar="TOOL")
    di = dsub.add_parser("info", help="split sizes, class histogram and sample shapes",
                         description="split sizes, class histogram and sample shapes",
                         formatter_class=_Help)
    di.add_argument("--dataset", required=True,
                    help="builtin, builtin_events, voc, mnist_cifar, ddd17 or dsec")
    di.add_argument("--root", default=None,
                    help="the dataset's folder (default: the dataset's default location)")
    di.add_argument("--split", action="append", choices=SPLITS, default=None,
                    help="only this split (repeatable; default: train and val)")
    di.add_argument("--image-size", type=_image_size, default=64,
                    help="H or H,W as in data.image_size")
    di.add_argument("--timesteps", type=positive_int, default=None,
                    help="frames per sample (event datasets; default: the dataset's)")
    di.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a dataset option, as in data.options (repeatable)")
    di.add_argument("--max-samples", type=positive_int, default=200,
                    help="labels scanned per split for the histogram")
    di.add_argument("--all", action="store_true", help="scan every sample")
    di.add_argument("--out", type=output_file, default=None,
                    help="also write the summary as JSON (default: print only)")
    di.add_argument("--no-progress", action="store_true", help="no progress display")
    di.set_defaults(func=cmd_data_info)
    dm = dsub.add_parser("make-mnist-cifar",
                         help="generate the MNIST-on-CIFAR10 set from local MNIST and CIFAR-10",
                         description="generate the MNIST-on-CIFAR10 set from local MNIST and "
                                     "CIFAR-10", formatter_class=_Help)
    dm.add_argument("--mnist", required=True, help="folder with the MNIST IDX files")
    dm.add_argument("--cifar", required=True, help="folder with cifar-10-batches-py")
    dm.add_argument("--out", required=True, type=output_dir, help="output folder")
    dm.add_argument("--num-train", type=positive_int, default=48000,
                    help="training samples to generate")
    dm.add_argument("--num-test", type=positive_int, default=12000,
                    help="test samples to generate")
    dm.add_argument("--labels", default="binary", choices=["binary", "digits"],
                    help="binary masks (the paper) or 11 classes (background + digits)")
    dm.add_argument("--seed", type=non_negative_int, default=0, help="generation seed")
    dm.add_argument("--no-progress", action="store_true", help="no progress display")
    dm.set_defaults(func=cmd_data_make_mnist_cifar)

    x = add("export", "export a checkpoint: NIR (spiking) or ONNX (any model)")
    x.add_argument("--checkpoint", required=True,
                   help="checkpoint: NAME.safetensors, NAME.json or NAME")
    x.add_argument("--format", required=True, choices=["nir", "onnx"],
                   help="nir: the spiking graph for neuromorphic simulators and chips (hard "
                        "reset, norm bn|tdbn|none); onnx: any model, unrolled over T")
    x.add_argument("--out", required=True, type=output_file, help="file to write")
    x.add_argument("--timesteps", type=positive_int, default=None,
                   help="T the graph is unrolled over (ONNX) or recorded (NIR) (default: as "
                        "trained)")
    x.add_argument("--input-size", type=_image_size, default=None,
                   help="H or H,W of the input (default: the training size in the checkpoint)")
    x.add_argument("--dt", type=_positive_float, default=None,
                   help="NIR: the reader's time step in seconds (default 1e-4, snnTorch's)")
    x.add_argument("--pool", default=None, choices=["avg", "sum"],
                   help="NIR: pools as AvgPool2d, or SumPool2d + Scale (default avg)")
    x.add_argument("--batch-size", type=positive_int, default=None,
                   help="ONNX: the batch size traced (the batch axis stays dynamic; default 1)")
    x.add_argument("--opset", type=positive_int, default=None,
                   help="ONNX: opset version (default: the exporter's)")
    x.add_argument("--no-verify", action="store_true",
                   help="ONNX: skip the check of ONNX Runtime against PyTorch")
    x.add_argument("--legacy-exporter", action="store_true",
                   help="ONNX: torch.onnx's TorchScript exporter instead of torch.export")
    x.set_defaults(func=cmd_export)

    o = add("import-original",
            "import a checkpoint of the paper's original code (SNN-Segmentation)")
    o.add_argument("--checkpoint", required=True, type=existing_file,
                   help="the original code's .pth file")
    o.add_argument("--out", required=True, type=output_file,
                   help="spikeseg checkpoint to write (NAME or NAME.safetensors)")
    o.add_argument("--scaling-factor", type=_positive_float, default=0.7,
                   help="converted ANNs: the factor the original code multiplies its "
                        "thresholds by at use (not stored in the file)")
    o.add_argument("--thresholds", default="auto",
                   choices=["auto", "none", "layer", "channel", "neuron"],
                   help="ANN files: the file's thresholds if it has one type (auto), the plain "
                        "ANN (none), or a type (a converted SNN)")
    o.add_argument("--threshold-timesteps", type=positive_int, default=None,
                   help="which thresholds[type][T] to use (default: the only one)")
    o.add_argument("--timesteps", type=positive_int, default=None,
                   help="default T of a converted model (default: that of its thresholds)")
    o.add_argument("--model", default=None,
                   help="spikeseg model to import as (default: from the file's model_type and "
                        "architecture)")
    o.set_defaults(func=cmd_import_original)

    m = add("models", "list the available models with their parameter counts")
    m.add_argument("--num-classes", type=positive_int, default=21,
                   help="classes the counts are for")
    m.add_argument("--in-channels", type=positive_int, default=3,
                   help="input channels the counts are for")
    m.add_argument("--timesteps", type=positive_int, default=20, help="T of spiking models")
    m.add_argument("--width", type=_positive_float, default=1.0,
                   help="channel multiplier (1.0 = Table 1)")
    m.set_defaults(func=cmd_models)
    return p


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spikeseg`` command.

    Exit status: 0 done; 2 a problem with the input (one line ``spikeseg: error: ...``);
    1 an unexpected internal error (one line; ``--debug`` shows the traceback); 130 Ctrl-C.
    """
    try:  # reuse freed activation memory instead of refaulting it each step (train may change it)
        configure_allocator()
    except SpikesegError as e:  # a bad SPIKESEG_MALLOC
        print(f"spikeseg: error: {e}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad argument (already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    debug = args.debug or os.environ.get("SPIKESEG_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except SpikesegError as e:
        print(f"spikeseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikeseg: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130
    except OSError as e:
        if debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"spikeseg: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line of defence
        if debug:
            raise
        if _out_of_memory(e):
            print("spikeseg: error: out of memory; lower train.batch_size, model.timesteps, "
                  "data.image_size or model.width (or --batch-size)", file=sys.stderr)
            return 2
        first = (str(e).splitlines() or [""])[0]
        print(f"spikeseg: internal error: {type(e).__name__}: {first} (a bug in spikeseg; "
              "rerun with --debug for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
