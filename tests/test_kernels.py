"""Kernel selection (`resnet_jax.ops.kernels`): what `auto` picks, the fallbacks, one-line errors for an
explicit oneDNN that cannot run, a verified kernel cache, and data parallelism of the custom calls."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest
from helpers import LINUX_X86_64, REPO, train

from resnet_jax import models
from resnet_jax.config import CifarModel, MlpModel
from resnet_jax.errors import ConfigError
from resnet_jax.ops import kernels, onednn
from resnet_jax.population import population_model, resolve_layout

pytestmark = pytest.mark.skipif(not LINUX_X86_64, reason="the onednn-cpu-gomp wheels are Linux x86-64 only")

OPS = {"conv": ("model.conv_impl", "shifted"), "dense": ("model.dense_impl", "xla")}


@pytest.mark.parametrize("op", OPS)
def test_auto_is_onednn_on_cpu_where_built_else_the_fallback(op: str, monkeypatch) -> None:
    assert onednn.available() and onednn.library_path().is_file()
    assert kernels.select(op, "auto") == "onednn"
    assert kernels.select(op, "auto", dtype=jnp.bfloat16) == OPS[op][1]  # oneDNN computes float32 only
    monkeypatch.setattr(onednn, "available", lambda: False)
    assert kernels.select(op, "auto") == OPS[op][1]


def test_a_population_computes_with_the_layout_and_kernels_fastest_per_platform(monkeypatch) -> None:
    """`auto` for a population: on CPU members in turn, each with a single run's kernels; on GPU/TPU members
    side by side (vmap) with the shifted conv (faster than XLA's under vmap on an H200) and XLA's dense. A
    named layout or kernel stays as named, and the members' recorded config is not changed."""
    assert resolve_layout("auto") == "in_turn" and resolve_layout("vmap") == "vmap"
    cifar, mlp = CifarModel(), MlpModel()
    for backend in ("cpu", "gpu"):
        monkeypatch.setattr(kernels.jax, "default_backend", lambda backend=backend: backend)
        assert population_model(cifar, "in_turn") == cifar and population_model(mlp, "in_turn") == mlp
    assert resolve_layout("auto") == "vmap" and resolve_layout("in_turn") == "in_turn"
    assert population_model(cifar, "vmap").conv_impl == "shifted"
    assert population_model(mlp, "vmap").dense_impl == "xla"
    assert population_model(CifarModel(conv_impl="xla"), "vmap").conv_impl == "xla"
    monkeypatch.setattr(kernels.jax, "default_backend", lambda: "cpu")  # vmapped on CPU: select decides
    assert (
        population_model(cifar, "vmap").conv_impl == "auto"
        and population_model(mlp, "vmap").dense_impl == "auto"
    )
    assert cifar.conv_impl == "auto" and mlp.dense_impl == "auto"


def test_the_mlp_takes_the_scan_for_probes_remat_and_bfloat16() -> None:
    def mlp(**kwargs):
        return models.build(MlpModel(depth=10, width=16, **kwargs), (8, 8, 1), 10, 0)

    assert mlp().runs_fused() and mlp(dense_impl="onednn").runs_fused()
    assert not mlp(dense_impl="xla").runs_fused()
    assert not mlp(remat=True).runs_fused()  # asked for remat: the rematerialised scan
    assert not mlp().runs_fused(probe=True)  # probes need every block's pre-activations
    model = mlp()
    assert not model.runs_fused(jnp.bfloat16)
    assert model(jnp.ones((4, 8, 8, 1), jnp.bfloat16), True).dtype == jnp.bfloat16


@pytest.mark.parametrize("op", OPS)
def test_explicit_onednn_that_cannot_run_is_a_config_error(op: str, monkeypatch) -> None:
    monkeypatch.setattr(onednn, "unavailable_reason", lambda: "no C++ compiler")
    key, fallback = OPS[op]
    with pytest.raises(ConfigError, match=f"^{key}=onednn cannot run here: no C\\+\\+ compiler; use auto"):
        kernels.check(op, "onednn")
    kernels.check(op, fallback)  # the others need nothing built
    with pytest.raises(ConfigError, match=f"^{key}='fast' is not allowed; choose one of: auto, xla"):
        kernels.check(op, "fast")


def test_unavailable_onednn_is_said_once_in_the_log(monkeypatch, caplog) -> None:
    monkeypatch.setattr(onednn, "unavailable_reason", lambda: "no C++ compiler")
    assert onednn.available.__wrapped__() is False  # the uncached check; `available` caches it per process
    assert (
        "oneDNN kernels unavailable (no C++ compiler); CPU runs use the slower shifted conv and XLA's dense"
        in caplog.text
    )


EXPLICIT = [
    (("model.conv_impl=onednn",), "model.conv_impl"),
    (("model=mlp", "model.dense_impl=onednn"), "model.dense_impl"),
]


@pytest.mark.parametrize(("args", "key"), EXPLICIT)
def test_cli_explicit_onednn_without_a_build_is_one_line_before_any_run_dir(
    args: tuple[str, ...], key: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    out = train(*args, f"hydra.run.dir={run_dir}", env={LIBRARY_OVERRIDE: str(tmp_path / "absent.so")})
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith(
        f"error: {key}=onednn cannot run here: the oneDNN kernels are not built (reinstall the package to "
        "build them: make install, or pip install -e .)"
    )
    assert not run_dir.exists()


LIBRARY_OVERRIDE = "RESNET_JAX_ONEDNN_LIBRARY"
KERNEL_PROBE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
import jax.numpy as jnp
from resnet_jax import models
from resnet_jax.config import CifarModel
from resnet_jax.ops import kernels
model = models.build(CifarModel(depth=8), (8, 8, 1), 10, 0)
print("logits", model(jnp.ones((2, 8, 8, 1)), True).shape, "conv", kernels.select("conv", "auto"))
"""


def _kernel_probe(library: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, LIBRARY_OVERRIDE: str(library)}
    return subprocess.run(
        [sys.executable, "-c", KERNEL_PROBE], cwd=REPO, env=env, capture_output=True, text=True
    )


def _damage(library: Path, damage: str) -> None:
    digests = library.with_suffix(".sha256")
    if damage == "absent":
        library.unlink()
    elif damage == "truncated":  # a copy cut short (full disk, killed copy): mapping it could die of SIGBUS
        library.write_bytes(library.read_bytes()[: library.stat().st_size // 3])
    elif damage == "foreign":  # another file at the library's name
        library.write_bytes(b"\x7fELF" + os.urandom(4096))
    else:  # built from other sources than the package's (an editable install whose .cc changed since)
        digests.write_text(digests.read_text().replace("sources ", "sources 0"))


DAMAGES = {
    "absent": "the oneDNN kernels are not built",
    "truncated": "damaged or not this build's (checksum mismatch)",
    "foreign": "damaged or not this build's (checksum mismatch)",
    "stale": "were built from other sources",
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_missing_damaged_or_stale_library_warns_once_and_runs_on_the_fallback(
    damage: str, tmp_path: Path
) -> None:
    built = onednn.library_path()
    library = tmp_path / built.name
    for path in (built, built.with_suffix(".sha256")):
        shutil.copy2(path, tmp_path / path.name)
    assert "conv onednn" in _kernel_probe(library).stdout  # the sound copy loads
    _damage(library, damage)
    out = _kernel_probe(library)
    assert out.returncode == 0, out.stderr[-2000:]  # no signal death
    assert "logits (2, 10) conv shifted" in out.stdout
    warnings = [line for line in out.stderr.splitlines() if "oneDNN kernels unavailable" in line]
    assert len(warnings) == 1 and DAMAGES[damage] in warnings[0], out.stderr
    assert "make install, or pip install -e ." in warnings[0]


SHARDED_STEP = """
import json, re, sys, jax, numpy as np
from resnet_jax import composition, models
from resnet_jax.engine import Engine
overrides, impl_key = sys.argv[1:-1], sys.argv[-1]
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, 64).astype(np.int32)
def engine(impl):
    cfg = composition.compose(*overrides, f"{impl_key}={impl}")
    model = models.build(cfg.model, (8, 8, 3), 10, 0)
    return Engine(model, cfg.optim, 10, x_train=x, y_train=y, augment=False, dtype=np.float32, seed=0)
fused, reference = engine("onednn"), engine("xla")
steps = rng.integers(0, 64, size=(3, 16)).astype(np.int32)
hlo = fused.compiled_chunk.lower(fused.initial_state(), *fused.chunk_arguments(steps)).compile().as_text()
calls = {}
for line in hlo.splitlines():
    target = re.search(r'custom_call_target="resnet_jax_onednn_(\\w+)"', line)
    if target:
        calls.setdefault(target.group(1), set()).update(re.findall(r"f32\\[([\\d,]+)\\]", line))
(a, _), (b, _) = (e.train_chunk(e.initial_state(), steps) for e in (fused, reference))
diff = max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
           for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))
print(json.dumps({"calls": {k: sorted(v) for k, v in calls.items()}, "all_gathers": hlo.count("all-gather("),
                  "devices": fused.devices, "max_param_diff": diff}))
"""

SHARDED = {
    # 16 examples over 8 devices: every batched call sees its device's 2, the kernel gradient is whole
    "conv": (("model.depth=8",), "model.conv_impl", 1e-4),
    # 5 blocks of width 24: activations [2, 24] and [5, 2, 24] per device, parameters whole
    "dense": (("model=mlp", "model.depth=12", "model.width=24"), "model.dense_impl", 1e-5),
}


@pytest.mark.parametrize("op", SHARDED)
def test_on_eight_devices_each_device_runs_its_shard_and_training_matches_xla(op: str) -> None:
    """Data parallelism holds for the custom calls (else XLA gathers the whole batch onto every device), and
    three steps on 8 devices give XLA's parameters (the parameter gradients summed over the shards)."""
    overrides, key, tolerance = SHARDED[op]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run(
        [sys.executable, "-c", SHARDED_STEP, *overrides, key],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["devices"] == 8 and found["all_gathers"] == 0
    assert found["max_param_diff"] < tolerance
    calls = found["calls"]
    if op == "conv":
        assert set(calls) == {"ConvForward", "ConvInputGrad", "ConvKernelGrad"}
        batched = calls["ConvForward"] + calls["ConvInputGrad"]
        activations = [s for s in batched if s.count(",") == 3 and not s.startswith("3,3,")]
        assert activations and {s.split(",")[0] for s in activations} == {"2"}
    else:
        assert set(calls) == {"DenseStackForward", "DenseStackBackward"}  # one call each way
        assert sorted(set(calls["DenseStackForward"]) | set(calls["DenseStackBackward"])) == [
            "2,24",
            "5,2,24",
            "5,24",
            "5,24,24",
        ]
