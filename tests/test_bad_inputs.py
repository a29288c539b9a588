"""Every bad input through the CLI is one line, ``spikeseg: error: ...``, naming the problem.

Each case is built by the test in a temporary folder; the table lists the command, what the
message must contain, and the exit status (2: bad input). The should-work variants at the end
(greyscale, RGBA and 16-bit images, an empty YAML file with overrides, an empty section) must
work.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spikeseg.cli import main

from .conftest import sets as _sets
from .conftest import tiny_overrides


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny trained run: its folder and best checkpoint."""
    root = tmp_path_factory.mktemp("bad-inputs")
    cache = tmp_path_factory.getbasetemp() / "builtin-cache-bad"
    argv = ["train", "--no-progress", *_sets(tiny_overrides(root / "runs", cache)),
            "--set", "train.epochs=1"]
    assert main(argv) == 0
    return root, cache, root / "runs" / "tiny"


# (id, argv builder(tmp, run) -> argv, message fragment)
CONFIG_CASES = [
    ("lr-negative", ["train.lr=-0.1"], "'train.lr' must be a finite number > 0, got -0.1"),
    ("lr-nan", ["train.lr=.nan"], "'train.lr' must be a finite number > 0, got nan"),
    ("lr-inf", ["train.lr=.inf"], "'train.lr' must be a finite number > 0"),
    ("lr-text", ["train.lr=fast"], "'train.lr' must be float"),
    ("weight-decay", ["train.weight_decay=-1"], "'train.weight_decay' must be a finite number >= 0"),
    ("batch-size-0", ["train.batch_size=0"], "'train.batch_size' must be an int >= 1, got 0"),
    ("workers", ["data.num_workers=-1"], "'data.num_workers' must be an int >= 0, got -1"),
    ("threads-neg", ["train.threads=-2"], "'train.threads' must be an int >= 1 or null"),
    ("threads-0", ["train.threads=0"], "'train.threads' must be an int >= 1 or null, got 0"),
    ("eval-every", ["train.eval_every=0"], "'train.eval_every' must be an int >= 1, got 0"),
    ("milestone-text", ["train.lr_milestones=[0.5, x]"], "'train.lr_milestones' must be a list"),
    ("milestone-neg", ["train.lr_milestones=[-0.5]"], "fractions of the epochs in (0, 1]"),
    ("milestone-big", ["train.lr_milestones=[1.5]"], "fractions of the epochs in (0, 1]"),
    ("milestone-scalar", ["train.lr_milestones=0.5"], "'train.lr_milestones' must be list"),
    ("size-text", ["data.image_size=big"], "'data.image_size' must be an int >= 4"),
    ("size-tiny", ["data.image_size=2"], "'data.image_size' must be an int >= 4"),
    ("size-one", ["data.image_size=[32]"], "[height, width]"),
    ("surrogate-option", ["model.surrogate_options={bogus: 1}"],
     "the pwl surrogate has no option 'bogus'; valid options: gamma"),
    ("surrogate-name", ["model.surrogate=magic"], "unknown surrogate 'magic'"),
    ("epochs-0", ["train.epochs=0"], "'train.epochs' must be an int >= 1, got 0"),
    ("epochs-neg", ["train.epochs=-1"], "'train.epochs' must be an int >= 1, got -1"),
    ("timesteps-0", ["model.timesteps=0"], "'model.timesteps' must be an int >= 1, got 0"),
    ("leak-0", ["model.leak=0"], "'model.leak' must be a finite number in (0, 1], got 0"),
    ("leak-big", ["model.leak=1.5"], "'model.leak' must be a finite number in (0, 1]"),
    ("threshold-0", ["model.threshold=0"], "'model.threshold' must be a finite number > 0"),
    ("threshold-neg", ["model.threshold=-1"], "'model.threshold' must be a finite number > 0"),
    ("reset", ["model.reset=medium"], "'model.reset' must be one of soft, hard"),
    ("encoding", ["model.encoding=rate"], "'model.encoding' must be one of poisson"),
    ("step-mode", ["model.step_mode=fast"], "'model.step_mode' must be one of auto, step, fold"),
    ("norm", ["model.norm=layer"], "'model.norm' must be one of bntt, bn, tdbn, none"),
    ("norm-ann", ["model.name=deeplab", "model.norm=bntt"], "norm of an ANN model must be"),
    ("width-0", ["model.width=0"], "'model.width' must be a finite number > 0"),
    ("optimizer", ["train.optimizer=rmsprop"], "'train.optimizer' must be one of adam, sgd"),
    ("gamma-0", ["train.lr_gamma=0"], "'train.lr_gamma' must be a finite number > 0"),
    ("device", ["train.device=gpu"], "'train.device' must be auto, cpu, cuda, cuda:N or mps"),
    ("run-name", ["train.name=a/b"], "'train.name' must be null or a folder name"),
    ("eval-timesteps", ["train.eval_timesteps=0"], "'train.eval_timesteps' must be an int >= 1"),
    ("max-steps", ["train.max_steps_per_epoch=0"], "'train.max_steps_per_epoch' must be an int"),
    ("max-val", ["train.max_val_batches=0"], "'train.max_val_batches' must be an int >= 1"),
    ("grad-clip", ["train.grad_clip=0"], "'train.grad_clip' must be a finite number > 0"),
    ("seed", ["train.seed=-1"], "'train.seed' must be an int >= 0, got -1"),
    ("propagation", ["model.propagation_steps=-1"], "'model.propagation_steps' must be an int"),
    ("input-mean", ["model.input_mean=[x]"], "'model.input_mean' must be null or a list"),
    ("input-mean-poisson", ["model.input_mean=[0.5, 0.5, 0.5]"],
     "input_mean does not apply to poisson coding"),
    ("activation", ["model.activation=tanh"], "'model.activation' must be one of relu, leaky_relu"),
    ("model-name", ["model.name=unet"], "unknown model 'unet'"),
    ("dataset", ["data.dataset=coco"], "unknown dataset 'coco'"),
    ("dataset-option", ["data.options={num_trian: 3}"], "dataset 'builtin' has no option 'num_trian'"),
    ("unknown-key", ["train.lrr=1"], "unknown key 'train.lrr'"),
    ("wrong-type", ["train.epochs=many"], "'train.epochs' must be int, got 'many'"),
    ("no-equals", ["train"], "must look like section.key=value"),
    ("section-scalar", ["model=3"], "'model' must be a mapping"),
]


@pytest.mark.parametrize("overrides,message", [(o, m) for _, o, m in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_values(overrides, message, tmp_path, capsys):
    base = [f"train.out_dir={tmp_path / 'runs'}", f"data.root={tmp_path / 'cache'}",
            "data.image_size=16", "data.options={num_train: 16, num_val: 8}"]
    _expect_error(["train", "--no-progress", *_sets(base + overrides)], message, capsys)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _expect_error(argv, message, capsys, code=2):
    assert main([str(a) for a in argv]) == code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    # Progress lines may come before it; the error is the last line, and the only one.
    lines = captured.err.strip().splitlines()
    err = lines[-1] if lines else ""
    assert err.startswith("spikeseg: error: "), captured.err
    assert sum(line.startswith("spikeseg:") for line in lines) == 1, captured.err
    assert message in err, err


def _png_bomb(path: Path, side: int = 40_000) -> None:
    """A tiny PNG that claims 40,000 x 40,000 pixels (Pillow refuses it as a bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def _copy_run(run_dir: Path, tmp: Path) -> Path:
    dst = tmp / "runs" / "tiny"
    shutil.copytree(run_dir, dst)
    return dst


def _resume_argv(tmp: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", "--resume", "--no-progress", "--set", f"train.out_dir={tmp / 'runs'}",
            "--set", "train.name=tiny", "--set", f"data.root={cache}", *extra]


def _case_files(tmp: Path, run_root: Path, cache: Path, run_dir: Path) -> dict[str, tuple]:
    """Cases that need files: (argv, message)."""
    ck = run_dir / "checkpoints" / "best.safetensors"
    binary = tmp / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    list_yaml = tmp / "list.yaml"
    list_yaml.write_text("- 1\n- 2\n")
    a_file = tmp / "plain.txt"
    a_file.write_text("not a folder")
    notes = tmp / "notes.txt"
    notes.write_text("my notes")
    bomb = tmp / "bomb.png"
    _png_bomb(bomb)
    photo = tmp / "photo.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(photo)
    out_dir = tmp / "outdir"
    out_dir.mkdir()
    cases = {
        "config-binary": (["train", "--config", binary], "is not a text file (expected YAML)"),
        "config-missing": (["train", "--config", tmp / "nope.yaml"], "not found"),
        "config-invalid": (["train", "--config", bad_yaml], "is not valid YAML"),
        "config-list": (["train", "--config", list_yaml], "expected a mapping"),
        "out-dir-is-file": (["train", "--no-progress", "--set", f"train.out_dir={a_file}",
                             "--set", f"data.root={cache}", "--set", "data.image_size=16",
                             "--set", "data.options={num_train: 16, num_val: 8}"],
                            "is a file, not a folder"),
        "resume-missing": (_resume_argv(tmp / "elsewhere", cache), "nothing to resume"),
        "eval-timesteps-neg": (["evaluate", "--checkpoint", ck, "--timesteps", "-3"],
                               "argument --timesteps: expected an int >= 1, got -3"),
        "eval-timesteps-0": (["evaluate", "--checkpoint", ck, "--timesteps", "0"],
                             "expected an int >= 1, got 0"),
        "eval-batch-0": (["evaluate", "--checkpoint", ck, "--batch-size", "0"],
                         "argument --batch-size: expected an int >= 1"),
        "eval-max-batches-0": (["evaluate", "--checkpoint", ck, "--max-batches", "0"],
                               "argument --max-batches: expected an int >= 1"),
        "eval-out-folder": (["evaluate", "--checkpoint", ck, "--out", out_dir],
                            f"{out_dir} is a folder; give a file name"),
        "eval-out-under-file": (["evaluate", "--checkpoint", ck, "--out", a_file / "x.json"],
                                "is a file, not a folder"),
        "eval-notes": (["evaluate", "--checkpoint", notes], "is not a spikeseg checkpoint"),
        "eval-folder": (["evaluate", "--checkpoint", run_dir], "is a folder (did you mean"),
        "eval-missing": (["evaluate", "--checkpoint", tmp / "gone.safetensors"], "not found"),
        "eval-split": (["evaluate", "--checkpoint", ck, "--split", "test"], "invalid choice"),
        "predict-timesteps": (["predict", "--checkpoint", ck, photo, "--out", tmp / "p",
                               "--timesteps", "-3"], "expected an int >= 1"),
        "predict-bomb": (["predict", "--checkpoint", ck, bomb, "--out", tmp / "p"],
                         "bomb.png is unreadable"),
        "predict-out-file": (["predict", "--checkpoint", ck, photo, "--out", a_file],
                             "is a file; give a folder"),
        "predict-missing-image": (["predict", "--checkpoint", ck, tmp / "no.png", "--out",
                                   tmp / "p"], "not found"),
        "report-sigmas-text": (["report", "--checkpoint", ck, "--out", tmp / "r",
                                "--sigmas", "x"], "argument --sigmas"),
        "report-sigmas-neg": (["report", "--checkpoint", ck, "--out", tmp / "r",
                               "--sigmas", "-1"], "numbers >= 0"),
        "report-ann-is-snn": (["report", "--checkpoint", ck, "--out", tmp / "r",
                               "--ann-checkpoint", ck], "is a spiking model"),
        "sweep-timesteps": (["sweep", "--checkpoint", ck, "--out", tmp / "s",
                             "--timesteps", "0,5"], "ints >= 1"),
        "convert-snn": (["convert", "--checkpoint", ck, "--out", tmp / "c"], "ANN"),
        "convert-percentile-0": (["convert", "--checkpoint", ck, "--out", tmp / "c",
                                  "--percentile", "0"], "expected a number in (0, 100]"),
        "convert-percentile-big": (["convert", "--checkpoint", ck, "--out", tmp / "c",
                                    "--percentile", "101"], "expected a number in (0, 100]"),
        "models-width": (["models", "--width", "0"], "expected a number > 0"),
        "unknown-command": (["fly"], "invalid choice: 'fly'"),
        "unknown-flag": (["evaluate", "--checkpoint", ck, "--fast"], "unrecognized arguments"),
        "missing-flag": (["evaluate"], "the following arguments are required: --checkpoint"),
        "info-size": (["data", "info", "--dataset", "builtin", "--image-size", "2"],
                      "expected H or H,W (each >= 4)"),
        "info-dataset": (["data", "info", "--dataset", "nope"], "unknown dataset 'nope'"),
        "info-option": (["data", "info", "--dataset", "builtin", "--option", "novalue"],
                        "--option expects KEY=VALUE"),
    }
    return cases


FILE_CASES = [
    "config-binary", "config-missing", "config-invalid", "config-list", "out-dir-is-file",
    "resume-missing", "eval-timesteps-neg", "eval-timesteps-0", "eval-batch-0",
    "eval-max-batches-0", "eval-out-folder", "eval-out-under-file", "eval-notes", "eval-folder",
    "eval-missing", "eval-split", "predict-timesteps", "predict-bomb", "predict-out-file",
    "predict-missing-image", "report-sigmas-text", "report-sigmas-neg", "report-ann-is-snn",
    "sweep-timesteps", "convert-snn", "convert-percentile-0", "convert-percentile-big",
    "models-width", "unknown-command", "unknown-flag", "missing-flag", "info-size",
    "info-dataset", "info-option",
]


@pytest.mark.parametrize("case", FILE_CASES)
def test_bad_files_and_flags(case, run, tmp_path, capsys):
    run_root, cache, run_dir = run
    argv, message = _case_files(tmp_path, run_root, cache, run_dir)[case]
    _expect_error(argv, message, capsys)


def _resume_cases(tmp: Path, cache: Path, run_dir: Path) -> dict[str, tuple]:
    state = run_dir / "checkpoints" / "train_state.safetensors"
    return {
        "garbage": (lambda p: p.write_bytes(b"garbage"), "is not a spikeseg training state"),
        "truncated": (lambda p: p.write_bytes(state.read_bytes()[: state.stat().st_size // 2]),
                      "is not a spikeseg training state or is damaged"),
        "empty": (lambda p: p.write_bytes(b""), "is not a spikeseg training state"),
        "pickle": (lambda p: p.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."),
                   "is not a spikeseg training state"),
        "other-format": (lambda p: _safetensors_with(p, {"format": "something-else"}),
                         "format 'something-else'"),
    }


def _safetensors_with(path: Path, metadata: dict) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(path), metadata=metadata)


@pytest.mark.parametrize("case", ["garbage", "truncated", "empty", "pickle", "other-format"])
def test_bad_resume_state(case, run, tmp_path, capsys):
    _, cache, run_dir = run
    dst = _copy_run(run_dir, tmp_path)
    damage, message = _resume_cases(tmp_path, cache, run_dir)[case]
    damage(dst / "checkpoints" / "train_state.safetensors")
    _expect_error(_resume_argv(tmp_path, cache), message, capsys)


def test_resume_refuses_changed_settings_and_applies_safe_ones(run, tmp_path, capsys):
    _, cache, run_dir = run
    dst = _copy_run(run_dir, tmp_path)
    _expect_error(_resume_argv(tmp_path, cache, "--set", "model.width=0.5", "--set",
                               "train.seed=3"),
                  "cannot resume", capsys)
    err_lines = (dst / "resumes.jsonl")
    assert not err_lines.exists()
    # Safe: more epochs and another learning rate, recorded in the run directory.
    assert main(_resume_argv(tmp_path, cache, "--set", "train.epochs=2", "--set",
                             "train.lr=0.001")) == 0
    out = capsys.readouterr().out
    assert "validation mIoU" in out
    import json

    import yaml

    record = json.loads((dst / "resumes.jsonl").read_text().splitlines()[-1])
    assert record["changes"]["train.epochs"] == [1, 2]
    assert record["changes"]["train.lr"] == [0.003, 0.001]
    saved = yaml.safe_load((dst / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["train"]["lr"] == 0.001  # what ran
    rows = (dst / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert float(rows[2].split(",")[1]) == pytest.approx(0.001 * 0.1)  # epoch 2 after 50%


def test_checkpoint_of_another_model_and_corrupt_weights(run, tmp_path, capsys):
    _, _, run_dir = run
    src = run_dir / "checkpoints"
    shutil.copy(src / "best.safetensors", tmp_path / "x.safetensors")
    meta = (src / "best.json").read_text().replace('"width": 0.125', '"width": 0.25')
    (tmp_path / "x.json").write_text(meta)
    _expect_error(["evaluate", "--checkpoint", tmp_path / "x.safetensors"],
                  "does not fit this model", capsys)
    (tmp_path / "x.json").write_text((src / "best.json").read_text())
    (tmp_path / "x.safetensors").write_bytes(b"\x00" * 10)
    _expect_error(["evaluate", "--checkpoint", tmp_path / "x.safetensors"], "unreadable", capsys)


def test_a_pickle_in_the_run_directory_executes_nothing(run, tmp_path, capsys):
    """A pickle whose loading runs code, planted under every name a run directory has, is
    never unpickled by --resume."""
    _, cache, run_dir = run
    dst = _copy_run(run_dir, tmp_path)
    marker = tmp_path / "pwned"
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    for name in ("checkpoints/train_state.pt", "checkpoints/last.pt", "optimizer.pt",
                 "checkpoints/rng.pkl", "state.pkl"):
        (dst / name).write_bytes(payload)
    assert main(_resume_argv(tmp_path, cache, "--set", "train.epochs=2")) == 0
    capsys.readouterr()
    assert not marker.exists()
    (dst / "checkpoints" / "train_state.safetensors").write_bytes(payload)
    _expect_error(_resume_argv(tmp_path, cache, "--set", "train.epochs=3"),
                  "is not a spikeseg training state", capsys)
    assert not marker.exists()


# -- should-work variants -------------------------------------------------------------------


def test_images_of_every_kind_work_with_predict(run, tmp_path, capsys):
    _, _, run_dir = run
    ck = run_dir / "checkpoints" / "best.safetensors"
    rng = np.random.default_rng(0)
    grey = tmp_path / "grey.png"
    Image.fromarray((rng.random((30, 40)) * 255).astype(np.uint8), mode="L").save(grey)
    rgba = tmp_path / "rgba.png"
    Image.fromarray((rng.random((30, 40, 4)) * 255).astype(np.uint8), mode="RGBA").save(rgba)
    deep = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(0, 61380, 40).astype(np.uint16), (30, 1))
    Image.fromarray(ramp).save(deep)  # 16-bit greyscale
    jpg = tmp_path / "photo.jpg"
    Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(jpg)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ck), str(grey), str(rgba), str(deep), str(jpg),
                 "--out", str(out)]) == 0
    assert "4 prediction(s) written" in capsys.readouterr().out
    for name in ("grey", "rgba", "deep", "photo"):
        assert (out / f"{name}_mask.png").is_file()


def test_empty_yaml_and_empty_sections_with_overrides(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    sections = tmp_path / "sections.yaml"
    sections.write_text("model:\ndata:\ntrain:\n")
    for i, cfg in enumerate((empty, sections)):
        argv = ["train", "--config", str(cfg), "--no-progress",
                *_sets(tiny_overrides(tmp_path / "runs", tmp_path / "cache")),
                "--set", "train.epochs=1", "--set", f"train.name=ok{i}"]
        assert main(argv) == 0
    assert "validation mIoU" in capsys.readouterr().out


def test_no_traceback_for_bad_input_from_the_real_command(tmp_path):
    for argv in (["train", "--set", "train.lr=-1"], ["evaluate", "--checkpoint", "x",
                                                      "--timesteps", "-3"]):
        r = subprocess.run([sys.executable, "-m", "spikeseg", *argv], capture_output=True,
                           text=True, cwd=tmp_path)
        assert r.returncode == 2
        assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("spikeseg: error:")


def test_count_of_cases():
    """The issue asks for at least 60 bad inputs."""
    assert len(CONFIG_CASES) + len(FILE_CASES) + 5 + 3 >= 60
