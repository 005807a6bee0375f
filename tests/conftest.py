"""Shared fixtures: W&B off unless a test turns it on, one XLA compilation cache and one project cache for
the suite's processes, a tiny fake CIFAR-10 archive in the official format."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import jax
import pytest
from helpers import SHORT_RUN, write_fake_cifar

from resnet_jax.composition import compose
from resnet_jax.runner import run

# The tests' commands must meet Ctrl-C as a terminal delivers it (tests/test_interrupts.py), also when the
# suite itself runs in the background, where the shell starts it with SIGINT ignored, which children inherit.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# JAX's persistent compilation cache (its public settings, as environment variables for the commands): most
# tests compile the same few tiny programs in a fresh process, and compiling is much of their time.
# Entries are keyed by the program, its options and XLA's flags, so a hit runs exactly what compiling would
# give; the size limit turns on the cache's file lock, which the suite's concurrent processes need.
COMPILATION_CACHE = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(4 << 30),
}


@pytest.fixture(scope="session", autouse=True)
def _shared_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One compilation cache and one project cache (`resnet_jax.data.array_cache`: the digits split) for the
    session, shared by its xdist workers (their base folders' parent) and commands, apart from the user's."""
    base = tmp_path_factory.getbasetemp()
    folder = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    settings = {**COMPILATION_CACHE, "JAX_COMPILATION_CACHE_DIR": str(folder / "xla-cache")}
    os.environ.update(settings)
    os.environ["XDG_CACHE_HOME"] = str(folder / "cache")
    for name, value in settings.items():
        jax.config.update(name.lower(), value if name.endswith("_DIR") else int(value))


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
