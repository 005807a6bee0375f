"""The benchmark's closing table: our rows next to PyTorch's, and the ratios (numbers: `make bench`)."""

from __future__ import annotations

import sys

from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from table import summary_table  # noqa: E402

CIFAR, FASHION = [3, 32, 32], [1, 28, 28]  # (channels, height, width), as the PyTorch reference reports it


def test_summary_table_pairs_each_measurement_with_pytorch_and_the_ratio() -> None:
    rows = [
        {
            "framework": "resnet_jax",
            "bench": "cifar_train",
            "depth": 20,
            "batch": 128,
            "image": CIFAR,
            "images_per_s": 600.0,
        },
        {"framework": "torch", "depth": 20, "channels_last": True, "image": CIFAR, "images_per_s": 500.0},
        {"framework": "resnet_jax", "bench": "ratio_cifar", "depth": 20, "image": CIFAR, "ratio": 1.2},
        {
            "framework": "resnet_jax",
            "bench": "cifar_train",
            "depth": 20,
            "batch": 128,
            "image": FASHION,
            "images_per_s": 800.0,
        },
        {"framework": "torch", "depth": 20, "channels_last": True, "image": FASHION, "images_per_s": 640.0},
        {"framework": "resnet_jax", "bench": "ratio_cifar", "depth": 20, "image": FASHION, "ratio": 1.25},
        {"framework": "torch", "depth": 56, "channels_last": True, "image": FASHION, "images_per_s": 150.0},
        {
            "framework": "resnet_jax",
            "bench": "cifar_train",
            "depth": 56,
            "batch": 128,
            "image": CIFAR,
            "images_per_s": 200.0,
        },
        {"framework": "resnet_jax", "bench": "mlp_train", "depth": 50, "steps_per_s": 630.0},
        {
            "framework": "resnet_jax",
            "bench": "ratio_mlp",
            "depth": 50,
            "torch_median_steps_per_s": 170.0,
            "ratio": 3.706,
        },
        {"framework": "resnet_jax", "bench": "compile", "depth": 1202, "compile_s": 3.4},
        {
            "framework": "resnet_jax",
            "bench": "memory",
            "depth": 1202,
            "variant": "scanned_remat",
            "temp_gib": 2.9,
        },
    ]
    table = summary_table(rows)
    assert table[:2] == ["| measurement | resnet_jax | PyTorch | ratio |", "| --- | --- | --- | --- |"]
    assert "| ResNet-20 training, batch 128, 32×32×3 (images/s) | 600.0 | 500.0 | 1.2 |" in table
    assert "| ResNet-20 training, batch 128, 28×28×1 (images/s) | 800.0 | 640.0 | 1.25 |" in table
    # no reference ran at this shape (one at the other shape is not its reference)
    assert "| ResNet-56 training, batch 128, 32×32×3 (images/s) | 200.0 | - | - |" in table
    mlp = "| MLP depth 50, width 64, batch 128 (steps/s; PyTorch: median of 3) | 630.0 | 170.0 | 3.706 |"
    assert mlp in table
    assert "| compile time, depth 1202 (s) | 3.4 | | |" in table
    assert "| temporary memory, depth 1202, scanned_remat (GiB) | 2.9 | | |" in table
    assert len(table) == 2 + 6  # one row per measurement
