"""Datasets as host numpy arrays (NHWC float32 images, int32 labels); `load` picks one by name."""

from __future__ import annotations

import math

from resnet_jax.config import DataConfig
from resnet_jax.data.dataset import Dataset

DIGITS_IMAGES = 1797
CIFAR10_TRAIN_IMAGES = 50_000


def train_size(cfg: DataConfig) -> int:
    """Training-split size, known without loading (for validating the batch size up front)."""
    if cfg.name == "digits":
        return DIGITS_IMAGES - math.ceil(cfg.test_fraction * DIGITS_IMAGES)  # as train_test_split
    if cfg.name == "cifar10":
        return CIFAR10_TRAIN_IMAGES
    return cfg.train_size


def check_available(cfg: DataConfig) -> None:
    """Fail before anything starts if the data cannot be had (CIFAR-10 missing and no download)."""
    if cfg.name == "cifar10":
        from resnet_jax.data.cifar10 import require_archive

        require_archive(cfg)


def load(cfg: DataConfig) -> Dataset:
    """Load the dataset named by `cfg.name`, normalised as configured."""
    if cfg.name == "digits":
        from resnet_jax.data.digits import load_digits

        return load_digits(cfg)
    if cfg.name == "cifar10":
        from resnet_jax.data.cifar10 import load_cifar10

        return load_cifar10(cfg)
    from resnet_jax.data.synthetic import load_synthetic

    return load_synthetic(cfg)


__all__ = ["Dataset", "check_available", "load", "train_size"]
