"""Learnable random images of any shape and class count, for tests and speed runs."""

from __future__ import annotations

import numpy as np

from resnet_jax import rules
from resnet_jax.config import SyntheticData
from resnet_jax.data.dataset import Dataset, Shape


def check(cfg: SyntheticData) -> None:
    for key in ("image_size", "channels", "num_classes", "train_size", "test_size"):
        rules.positive(f"data.{key}", getattr(cfg, key))
    rules.seed("data.split_seed", cfg.split_seed)


def train_size(cfg: SyntheticData) -> int:
    return cfg.train_size


def shape(cfg: SyntheticData) -> Shape:
    image = (cfg.image_size, cfg.image_size, cfg.channels)
    return Shape(cfg.train_size, cfg.test_size, image, cfg.num_classes)


def load(cfg: SyntheticData) -> Dataset:
    """Each class has a fixed random prototype image; samples are prototype + unit Gaussian noise."""
    rng = np.random.default_rng(cfg.split_seed)
    shape = (cfg.image_size, cfg.image_size, cfg.channels)
    prototypes = rng.normal(size=(cfg.num_classes, *shape)).astype(np.float32)

    def split(size: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, cfg.num_classes, size=size).astype(np.int32)
        images = prototypes[labels] + rng.normal(size=(size, *shape)).astype(np.float32)
        return images, labels

    x_train, y_train = split(cfg.train_size)
    x_test, y_test = split(cfg.test_size)
    return Dataset("synthetic", x_train, y_train, x_test, y_test, num_classes=cfg.num_classes)
