"""A model family and a dataset added from this file alone (`models.register`, `data.register`): composed,
checked, trained as a single run and as a population, and swept from the command line's entry point."""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import TINY, metric_rows
from hydra.core.config_store import ConfigStore

from resnet_jax import data, models, rules, train
from resnet_jax.composition import compose
from resnet_jax.config import FAMILY_RECIPES, GROUP_OPTIONS, DataConfig, ModelConfig
from resnet_jax.data import Dataset, Shape
from resnet_jax.errors import ConfigError
from resnet_jax.lifecycle import train_population
from resnet_jax.population import MemberJob
from resnet_jax.runner import run


@dataclass
class ToyModel(ModelConfig):
    """One hidden layer on flattened images, with a skip connection when residual."""

    name: str = "toy"
    depth: int = 2
    width: int = 16


class ToyNet(nnx.Module):
    def __init__(self, features: int, width: int, classes: int, residual: bool, rngs: nnx.Rngs):
        self.into = nnx.Linear(features, width, rngs=rngs)
        self.hidden = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, classes, rngs=rngs)
        self.residual = residual

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        h = jax.nn.relu(self.into(x.reshape(x.shape[0], -1)))
        branch = self.hidden(h)
        return self.out(jax.nn.relu(branch + h if self.residual else branch))


class ToyFamily:
    probes = False

    def check(self, cfg: ToyModel) -> None:
        rules.positive("model.width", cfg.width)

    def build(self, cfg: ToyModel, input_shape: tuple[int, ...], num_classes: int, rngs: nnx.Rngs) -> ToyNet:
        return ToyNet(math.prod(input_shape), cfg.width, num_classes, cfg.residual, rngs)


@dataclass
class ToyData(DataConfig):
    """Two Gaussian blobs per class in 4x4 single-channel images."""

    name: str = "toy"
    train_size: int = 256


class ToySource:
    def check(self, cfg: ToyData) -> None:
        rules.positive("data.train_size", cfg.train_size)

    def train_size(self, cfg: ToyData) -> int:
        return cfg.train_size

    def shape(self, cfg: ToyData) -> Shape:
        return Shape(cfg.train_size, 64, (4, 4, 1), 2)

    def load(self, cfg: ToyData) -> Dataset:
        rng = np.random.default_rng(0)

        def split(size: int) -> tuple[np.ndarray, np.ndarray]:
            labels = rng.integers(0, 2, size=size).astype(np.int32)
            images = rng.normal(size=(size, 4, 4, 1)).astype(np.float32) + 2.0 * labels[:, None, None, None]
            return images, labels

        return Dataset("toy", *split(cfg.train_size), *split(64), num_classes=2)


TOY = (*TINY, "model=toy", "data=toy", "probe.every=0", "trainer.steps=30", "trainer.eval_every=30")


@pytest.fixture(autouse=True)
def toy_registered():
    """The toy family and dataset registered as a module defining them would, for this file's tests only (the
    other tests' options stay the built-in ones)."""
    registries = (
        GROUP_OPTIONS["model"],
        GROUP_OPTIONS["data"],
        FAMILY_RECIPES,
        models.FAMILIES,
        data.SOURCES,
    )
    saved = [dict(registry) for registry in registries]
    models.register("toy", ToyModel, ToyFamily(), recipe={"sgd_lr": 0.05, "clip_norm": 0.0})
    data.register("toy", ToyData, ToySource())
    yield
    for registry, before in zip(registries, saved, strict=True):
        registry.clear()
        registry.update(before)
    for group in ("model", "data"):  # what composing put in Hydra's store
        ConfigStore.instance().repo[group].pop("toy.yaml", None)


def test_a_registered_family_and_dataset_compose_check_and_train(tmp_path: Path) -> None:
    cfg = compose(*TOY, "model.width=8")
    assert isinstance(cfg.model, ToyModel) and isinstance(cfg.data, ToyData)
    assert cfg.optim.lr == 0.05 and cfg.optim.clip_norm == 0.0  # the family's recipe
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["params"] == 16 * 8 + 8 + 8 * 8 + 8 + 8 * 2 + 2
    assert summary["final"]["test/error"] < 20.0  # the blobs are easy: it learned
    with pytest.raises(ConfigError, match=r"^model.width=0 is not allowed"):
        run(compose(*TOY, "model.width=0"), tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"model=toy takes no per-layer probes: set probe.every=0"):
        run(compose(*TOY, "probe.every=10"), tmp_path / "probed")


def test_a_registered_family_trains_as_a_population_of_single_runs(tmp_path: Path) -> None:
    configs = [compose(*TOY, f"seed={seed}") for seed in (0, 1)]
    jobs = [MemberJob(cfg, tmp_path / f"member{k}") for k, cfg in enumerate(configs)]
    assert [s["status"] for s in train_population(jobs, layout="in_turn")] == ["completed"] * 2
    for k, cfg in enumerate(configs):
        run(cfg, tmp_path / f"single{k}")
        assert metric_rows(tmp_path / f"member{k}") == metric_rows(tmp_path / f"single{k}")


@pytest.fixture
def entry_point_in_this_process(monkeypatch: pytest.MonkeyPatch):
    """What the command line's entry point changes in its process, undone for the tests after this one: the
    root logger (Hydra's job logging) and the interrupt handler's state."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(train.INTERRUPTS, "begun", False)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("launcher", ["basic", "population"])
@pytest.mark.usefixtures("entry_point_in_this_process")
def test_a_registered_family_is_swept_from_the_command_line(
    launcher: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m resnet_jax.train -m model=toy data=toy ...`, in this process (where the family is known)."""
    sweep = tmp_path / "sweep"
    chosen = [] if launcher == "basic" else ["launcher=population"]
    argv = ["-m", *chosen, *TOY, "model.residual=true,false", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    monkeypatch.setattr(sys, "argv", ["resnet_jax.train", *argv])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as ended:
        train.main()
    assert ended.value.code == 0
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 4
    assert all(json.loads(path.read_text())["status"] == "completed" for path in summaries)
