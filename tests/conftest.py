"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

import pytest
import torch

from spikeseg.config import Config, load_config


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _temporary_caches(tmp_path_factory):
    """Nothing the tests generate lands in the user's ~/.cache (subprocesses inherit this)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SPIKESEG_CACHE", str(tmp_path_factory.mktemp("spikeseg-cache")))
    mp.setenv("MPLCONFIGDIR", str(tmp_path_factory.mktemp("matplotlib")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    """One built-in-dataset cache folder for the whole session."""
    return tmp_path_factory.mktemp("builtin-cache")


def tiny_overrides(out_dir, data_cache, model="spiking_deeplab"):
    return [
        f"model.name={model}",
        "model.width=0.125",
        "model.timesteps=2",
        f"data.root={data_cache}",
        "data.image_size=32",
        "data.options={num_train: 32, num_val: 16}",
        "train.epochs=2",
        "train.batch_size=8",
        f"train.out_dir={out_dir}",
        "train.name=tiny",
    ]


@pytest.fixture
def tiny_config(tmp_path, data_cache) -> Config:
    return load_config(None, tiny_overrides(tmp_path / "runs", data_cache))


def sets(overrides):
    """``["--set", o1, "--set", o2, ...]`` for the command line."""
    out = []
    for o in overrides:
        out += ["--set", o]
    return out
