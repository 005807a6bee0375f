"""The oneDNN convolution (CPU default): same numbers as XLA's convolution, in and out of loops; the build
of the kernels and its cache."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LINUX_X86_64

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


def test_build_without_a_compiler_says_what_is_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RESNET_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(onednn.OneDnnUnavailable, match="no C\\+\\+ compiler"):
        onednn.build()
    assert list(tmp_path.iterdir()) == []  # nothing half-built is left behind


def test_a_new_build_replaces_this_environments_older_builds(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("RESNET_JAX_CACHE", str(tmp_path))
    target = onednn.library_path()
    env = target.name.split("-")[1]
    older = tmp_path / f"onednn-{env}-000000000000.so"
    other_env = tmp_path / "onednn-ffffffff-000000000000.so"
    for path in (older, other_env):
        path.write_bytes(b"an earlier build")
    assert onednn.build() == target and target.stat().st_size > 10_000
    digest = target.with_suffix(".sha256")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, digest.name, other_env.name])
    assert "compiler warnings" not in caplog.text  # built with -Wall -Wextra: none
    assert onednn.build() == target  # cached: nothing rebuilt or removed
    assert other_env.exists()


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
