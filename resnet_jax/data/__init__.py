"""Datasets as host numpy arrays (NHWC float32 images, int32 labels); `load` picks one by name."""

from __future__ import annotations

from resnet_jax.config import DataConfig
from resnet_jax.data.dataset import Dataset


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


__all__ = ["Dataset", "load"]
