"""Shared fixtures: W&B off unless a test turns it on, a tiny fake CIFAR-10 archive in the official format."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SHORT_RUN, write_fake_cifar

from resnet_jax.composition import compose
from resnet_jax.runner import run


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture
def fake_cifar(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "cifar"
    return root, write_fake_cifar(root)


@pytest.fixture(scope="session")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`helpers.SHORT_RUN` trained uninterrupted through the Python API: the record others must equal."""
    run_dir = tmp_path_factory.mktemp("short-run") / "run"
    run(compose(*SHORT_RUN), run_dir)
    return run_dir
