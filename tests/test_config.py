"""Typed configs: YAML, dotted overrides, clear errors, and every shipped preset is valid."""

from pathlib import Path

import pytest

from spikeseg.config import Config, load_config
from spikeseg.data import list_datasets
from spikeseg.errors import SpikesegError
from spikeseg.models import list_models, model_entry

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("**/*.yaml"))


def test_defaults_are_the_paper():
    c = Config()
    assert (c.train.optimizer, c.train.lr, c.train.batch_size, c.train.epochs) == ("adam", 3e-3, 16, 60)
    assert (c.train.lr_milestones, c.train.lr_gamma) == ([0.5], 0.1)
    assert (c.model.timesteps, c.model.leak, c.model.threshold, c.model.reset) == (20, 0.99, 1.0, "soft")
    assert c.model.surrogate == "pwl"


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {name: spiking_fcn, width: 0.5}\ntrain: {epochs: 3}\n")
    c = load_config(p, ["train.lr=1e-4", "model.timesteps=10", "data.image_size=[48, 64]",
                        "model.surrogate_options={gamma: 0.3}", "train.lr_milestones=[0.5, 0.8]"])
    assert c.model.name == "spiking_fcn" and c.model.width == 0.5 and c.train.epochs == 3
    assert c.train.lr == 1e-4 and c.model.timesteps == 10 and c.data.image_size == [48, 64]
    assert c.model.surrogate_options == {"gamma": 0.3}
    assert c.train.lr_milestones == [0.5, 0.8]
    assert isinstance(load_config(None, ["train.lr=1"]).train.lr, float)


@pytest.mark.parametrize("override,message", [
    ("train.lrr=0.1", r"unknown key 'train.lrr' \(valid keys at train: epochs"),
    ("modle.name=x", "unknown key 'modle'"),
    ("train.epochs=many", "'train.epochs' must be int"),
    ("train.epochs", "section.key=value"),
    ("model=3", "'model' must be a mapping"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(SpikesegError, match=message):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(SpikesegError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(SpikesegError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("train:\n  batch: 4\n")
    with pytest.raises(SpikesegError, match=r"bad.yaml: unknown key 'train.batch'"):
        load_config(bad)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    c = load_config(path)
    assert c.model.name in list_models()
    assert c.data.dataset in list_datasets()
    entry = model_entry(c.model.name)
    from spikeseg.models import create

    create(c.model.name, 11, timesteps=c.model.timesteps, **c.model.model_options(entry.spiking))
    from spikeseg.data import dataset_accepts

    for key in c.data.options:  # every dataset option is one its builder takes
        assert dataset_accepts(c.data.dataset, key), (path.name, key)


def test_presets_exist():
    names = {p.name for p in CONFIGS}
    assert {"builtin_cpu.yaml", "paper_spiking_deeplab.yaml"} <= names


def test_a_key_below_a_mapping_changes_one_entry():
    path = Path(__file__).parent.parent / "configs" / "builtin_events_cpu.yaml"
    c = load_config(path, ["data.options.representation=voxel", "model.surrogate_options.gamma=0.3"])
    assert c.data.options["representation"] == "voxel"
    assert c.data.options["num_train"] == 2000  # the other options are kept
    assert c.model.surrogate_options == {"gamma": 0.3}
    assert load_config(path, ["data.options={num_val: 5}"]).data.options == {"num_val": 5}
