"""scikit-learn's real 8x8 handwritten digits (1797 images, shipped with the library: no download)."""

from __future__ import annotations

import functools

import numpy as np

from resnet_jax import rules
from resnet_jax.config import DigitsData
from resnet_jax.data.dataset import Dataset, Shape


def check(cfg: DigitsData) -> None:
    rules.in_interval("data.test_fraction", cfg.test_fraction, 0, 1, include_low=False)
    rules.seed("data.split_seed", cfg.split_seed)


@functools.cache
def _split(test_fraction: float, split_seed: int) -> tuple[np.ndarray, ...]:
    """A fixed, seeded, stratified train/test split (1437/360 at the default 20 %)."""
    # imported here: scikit-learn takes a second to import, which a refused command should not wait for
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    labels = bunch.target.astype(np.int32)
    return tuple(
        train_test_split(images, labels, test_size=test_fraction, random_state=split_seed, stratify=labels)
    )


def train_size(cfg: DigitsData) -> int:
    return len(_split(cfg.test_fraction, cfg.split_seed)[0])


def shape(cfg: DigitsData) -> Shape:
    x_train, x_test, _, _ = _split(cfg.test_fraction, cfg.split_seed)
    return Shape(len(x_train), len(x_test), tuple(x_train.shape[1:]), 10)


def load(cfg: DigitsData) -> Dataset:
    x_train, x_test, y_train, y_test = _split(cfg.test_fraction, cfg.split_seed)
    return Dataset("digits", x_train, y_train, x_test, y_test, num_classes=10)
