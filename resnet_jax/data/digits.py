"""scikit-learn's real 8x8 handwritten digits (1797 images, shipped with the library: no download)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits as sklearn_digits
from sklearn.model_selection import train_test_split

from resnet_jax.config import DataConfig
from resnet_jax.data.dataset import Dataset, normalize


def load_digits(cfg: DataConfig) -> Dataset:
    """A fixed, seeded, stratified train/test split (1437/360 at the default 20 %)."""
    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    labels = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=cfg.test_fraction, random_state=cfg.split_seed, stratify=labels
    )
    x_train, x_test = normalize(x_train, x_test, cfg.normalize)
    return Dataset("digits", x_train, y_train, x_test, y_test, num_classes=10)
