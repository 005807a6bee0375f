"""Shared fixtures: W&B off unless a test turns it on, a tiny fake CIFAR-10 archive in the official format."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_fake_cifar


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture
def fake_cifar(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "cifar"
    return root, write_fake_cifar(root)
