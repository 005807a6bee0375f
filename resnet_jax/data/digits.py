"""scikit-learn's real 8x8 handwritten digits (1797 images, shipped with the library: no download)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata

import numpy as np

from resnet_jax import rules
from resnet_jax.config import DigitsData
from resnet_jax.data import array_cache
from resnet_jax.data.dataset import Dataset, Shape


def check(cfg: DigitsData) -> None:
    rules.in_interval("data.test_fraction", cfg.test_fraction, 0, 1, include_low=False)
    rules.seed("data.split_seed", cfg.split_seed)


SPLIT = ("x_train", "x_test", "y_train", "y_test")  # train_test_split's order
IMAGES = 1797


@functools.cache
def _split(test_fraction: float, split_seed: int) -> tuple[np.ndarray, ...]:
    """A fixed, seeded, stratified train/test split (1437/360 at the default 20 %), built once per
    scikit-learn version and kept in the local cache (`array_cache`): scikit-learn takes 1 s to import."""
    source = f"scikit-learn {importlib.metadata.version('scikit-learn')} digits"
    source += f", test_fraction={test_fraction!r}, split_seed={split_seed}"
    path = array_cache.folder() / "digits" / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.npz"
    arrays = array_cache.cached(
        path,
        lambda: {**_built(test_fraction, split_seed), "source": np.array(source)},
        lambda stored: str(stored.get("source")) == source and _is_a_split(stored),
    )
    return tuple(arrays[key] for key in SPLIT)


def _built(test_fraction: float, split_seed: int) -> array_cache.Arrays:
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    labels = bunch.target.astype(np.int32)
    split = train_test_split(
        images, labels, test_size=test_fraction, random_state=split_seed, stratify=labels
    )
    return dict(zip(SPLIT, split, strict=True))


def _is_a_split(arrays: array_cache.Arrays) -> bool:
    """Whether cached arrays have a digits split's names, types, shapes and value ranges."""
    if not set(SPLIT) <= set(arrays):
        return False
    x_train, x_test, y_train, y_test = (arrays[key] for key in SPLIT)
    images, labels = (x_train, x_test), (y_train, y_test)
    return (
        all(x.dtype == np.float32 and x.shape[1:] == (8, 8, 1) for x in images)
        and all(y.dtype == np.int32 and y.ndim == 1 for y in labels)
        and [len(x) for x in images] == [len(y) for y in labels]
        and len(x_train) + len(x_test) == IMAGES
        and all(x.size and x.min() >= 0 and x.max() <= 1 for x in images)
        and all(y.size and y.min() >= 0 and y.max() < 10 for y in labels)
    )


def train_size(cfg: DigitsData) -> int:
    return len(_split(cfg.test_fraction, cfg.split_seed)[0])


def shape(cfg: DigitsData) -> Shape:
    x_train, x_test, _, _ = _split(cfg.test_fraction, cfg.split_seed)
    return Shape(len(x_train), len(x_test), tuple(x_train.shape[1:]), 10)


def load(cfg: DigitsData) -> Dataset:
    x_train, x_test, y_train, y_test = _split(cfg.test_fraction, cfg.split_seed)
    return Dataset("digits", x_train, y_train, x_test, y_test, num_classes=10)
