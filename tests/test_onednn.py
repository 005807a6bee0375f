"""The oneDNN convolution (CPU default): same numbers as XLA's convolution, in and out of loops; the kernels
built by the package's build backend into the wheel with their checksums, or left out where they cannot be."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LINUX_X86_64, REPO

from resnet_jax.ops import onednn
from resnet_jax.ops.conv import conv2d, conv_shifted, conv_xla

pytestmark = pytest.mark.skipif(not LINUX_X86_64, reason="the onednn-cpu-gomp wheels are Linux x86-64 only")


def _loss(impl):
    return lambda x, k, stride: jnp.sum(jnp.sin(impl(x, k, stride)))


@pytest.mark.parametrize(
    ("shape", "kernel", "cout", "stride"),
    [
        ((4, 8, 8, 16), 3, 16, 1),  # a stage's 3x3 conv
        ((4, 8, 8, 16), 3, 32, 2),  # the downsampling conv
        ((3, 7, 5, 3), 3, 16, 1),  # the stem: 3 input channels, odd sizes
        ((3, 7, 5, 4), 3, 8, 2),  # odd size, stride 2: output ceil(size / 2)
        ((4, 8, 8, 16), 1, 32, 2),  # option-B projection
    ],
)
def test_onednn_conv_and_its_gradients_equal_xla(shape, kernel, cout, stride) -> None:
    kx, kk, ky = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, shape)
    k = jax.random.normal(kk, (kernel, kernel, shape[-1], cout)) * 0.2
    ours, ref = onednn.conv_onednn(x, k, stride), conv_xla(x, k, stride)
    assert ours.shape == ref.shape == (shape[0], -(-shape[1] // stride), -(-shape[2] // stride), cout)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(_loss(onednn.conv_onednn), argnums=(0, 1))(x, k, stride)
    g_ref = jax.grad(_loss(conv_xla), argnums=(0, 1))(x, k, stride)
    for a, b in zip(g_ours, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_onednn_conv_inside_a_rematerialised_scan_equals_xla() -> None:
    """The point of a custom call: it stays fast (and right) inside `lax.scan` and `jax.checkpoint`."""
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 8))
    kernels = jax.random.normal(jax.random.key(2), (3, 3, 3, 8, 8)) * 0.2

    def net(impl):
        def loss(x, kernels):
            body = jax.checkpoint(lambda h, k: (jax.nn.relu(impl(h, k, 1)) + h, None))
            return jnp.sum(jax.lax.scan(body, x, kernels)[0] ** 2)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    (v1, g1), (v2, g2) = net(onednn.conv_onednn)(x, kernels), net(conv_xla)(x, kernels)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_onednn_conv_under_vmap_equals_xla() -> None:
    """vmap over activations folds into the batch; over kernels (ensembles) or per-example gradients, each
    member is its own call: all equal XLA's conv."""
    x = jax.random.normal(jax.random.key(3), (3, 2, 5, 5, 4))
    k = jax.random.normal(jax.random.key(4), (3, 3, 3, 4, 4)) * 0.3
    np.testing.assert_allclose(
        jax.vmap(lambda xi: onednn.conv_onednn(xi, k[0], 1))(x),
        jax.vmap(lambda xi: conv_xla(xi, k[0], 1))(x),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        jax.vmap(lambda xi, ki: onednn.conv_onednn(xi, ki, 2))(x, k),
        jax.vmap(lambda xi, ki: conv_xla(xi, ki, 2))(x, k),
        rtol=1e-5,
        atol=1e-5,
    )
    per_example = jax.vmap(jax.grad(_loss(onednn.conv_onednn), argnums=(0, 1)), in_axes=(0, None, None))
    reference = jax.vmap(jax.grad(_loss(conv_xla), argnums=(0, 1)), in_axes=(0, None, None))
    for a, b in zip(per_example(x, k[0], 1), reference(x, k[0], 1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_falls_back_to_the_shifted_conv() -> None:
    x = jax.random.normal(jax.random.key(5), (2, 6, 6, 8)).astype(jnp.bfloat16)
    k = (jax.random.normal(jax.random.key(6), (3, 3, 8, 8)) * 0.2).astype(jnp.bfloat16)
    out = conv2d(x, k, 1, "onednn")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(out, conv_shifted(x, k, 1))


def _wheel(out: Path, **env: str) -> tuple[subprocess.CompletedProcess, zipfile.ZipFile | None]:
    """The package built as a wheel by its build backend, in this environment (no downloads)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-v",
            "-w",
            str(out),
            ".",
        ],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    wheels = list(out.glob("resnet_jax-*.whl"))
    return done, zipfile.ZipFile(wheels[0]) if wheels else None


def test_the_package_build_carries_the_kernels_and_their_checksums(tmp_path: Path) -> None:
    done, wheel = _wheel(tmp_path / "wheel")
    assert done.returncode == 0 and wheel is not None, done.stderr[-3000:]
    library = f"resnet_jax/ops/{onednn.LIBRARY}"
    names = set(wheel.namelist())
    assert {library, library.replace(".so", ".sha256"), "resnet_jax/conf/config.yaml"} <= names
    assert "hydra_plugins/resnet_jax_launchers/__init__.py" in names
    log = done.stdout + done.stderr
    assert "Linking CXX shared library" in log and " warning: " not in log  # -Wall -Wextra: no warnings
    wheel.extractall(tmp_path / "site")
    built = tmp_path / "site" / library
    digests = dict(line.split() for line in built.with_suffix(".sha256").read_text().splitlines())
    assert digests == {
        "library": hashlib.sha256(built.read_bytes()).hexdigest(),
        "sources": onednn.sources_digest(),
    }
    # the wheel's library computes: a convolution through it equals XLA's
    out = subprocess.run(
        [sys.executable, "-c", CONV_PROBE],
        cwd=REPO,
        env={**os.environ, "RESNET_JAX_ONEDNN_LIBRARY": str(built)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stdout.split()[-1] == "equal", out.stderr[-2000:]


CONV_PROBE = """
import jax, numpy as np
from resnet_jax.ops import onednn
x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
k = jax.random.normal(jax.random.key(1), (3, 3, 4, 5))
ref = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
same = np.allclose(onednn.conv_onednn(x, k, 1), ref, atol=1e-4)
print(onednn.library_path(), "equal" if same else "differ")
"""


def test_without_a_compiler_the_package_builds_without_the_kernels(tmp_path: Path) -> None:
    done, wheel = _wheel(tmp_path / "wheel", CXX="/nonexistent/c++")
    assert done.returncode == 0 and wheel is not None, done.stderr[-3000:]
    assert not any(name.startswith("resnet_jax/ops/lib") for name in wheel.namelist())
    assert "resnet_jax/train.py" in wheel.namelist()
    assert "no C++ compiler: resnet_jax installs without its oneDNN kernels" in done.stdout + done.stderr


def test_inconsistent_shapes_are_an_error_not_a_crash() -> None:
    """The handlers check their shapes: a bad call raises in Python instead of reading out of bounds."""
    x, k = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 5, 8))  # the kernel expects 5 input channels
    with pytest.raises(jax.errors.JaxRuntimeError, match="oneDNN convolution: expected NHWC activations"):
        jax.block_until_ready(onednn.conv_onednn(x, k, 1))
    dy = jnp.ones((2, 5, 5, 8))  # not the output shape of a 6x6 input
    with pytest.raises(jax.errors.JaxRuntimeError, match="output \\(gradient\\) shape does not match"):
        jax.block_until_ready(
            onednn._call("ConvKernelGrad", (3, 3, 4, 8), jnp.ones((2, 6, 6, 4)), dy, stride=1)
        )
