"""Shared fixtures: offline W&B, a tiny fake CIFAR-10 archive in the official format."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from resnet_jax.config import Config, DataConfig, LoggerConfig, ModelConfig, ProbeConfig, TrainerConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


def cifar_batch(n: int, seed: int) -> dict:
    """One batch as the official archive pickles it (bytes keys, uint8 (n, 3072), list of labels)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake batch",
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_fake_cifar(root: Path, per_batch: int = 10, extra: dict[str, bytes] | None = None) -> str:
    """Write `cifar-10-python.tar.gz` under root; returns its MD5."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            add_member(
                tar,
                f"cifar-10-batches-py/data_batch_{i}",
                pickle.dumps(cifar_batch(per_batch, i), protocol=2),
            )
        add_member(
            tar, "cifar-10-batches-py/test_batch", pickle.dumps(cifar_batch(per_batch, 99), protocol=2)
        )
        add_member(tar, "cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": [b"x"] * 10}))
        for name, payload in (extra or {}).items():
            add_member(tar, name, payload)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_cifar(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "cifar"
    return root, write_fake_cifar(root)


def tiny_config(**model_kwargs) -> Config:
    """A config that trains in seconds on digits, without W&B or a progress bar."""
    return Config(
        model=ModelConfig(**model_kwargs),
        data=DataConfig(),
        logger=LoggerConfig(name="none"),
        trainer=TrainerConfig(steps=20, batch_size=32, eval_every=10, log_every=10, progress=False),
        probe=ProbeConfig(every=10, batch_size=16),
    )
