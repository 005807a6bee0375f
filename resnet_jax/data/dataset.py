"""The one shape every dataset is handed to the trainer in."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

NORMALIZATIONS = ("per_channel", "per_pixel_mean")


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (N, H, W, C) float32 (normalised by data.load)
    y_train: np.ndarray  # (N,) int32
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    x_val: np.ndarray | None = None  # held out of the training images (`data.validation`)
    y_val: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def evaluated_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The splits evaluated at the evaluation cadence, by the prefix of their metrics (`test/error`)."""
        splits = {"test": (self.x_test, self.y_test)}
        if self.x_val is not None:
            splits["val"] = (self.x_val, self.y_val)
        return splits


@dataclass(frozen=True)
class Shape:
    """A dataset's sizes, known from its config before anything is read (to check a run fits in memory)."""

    train_size: int
    test_size: int
    image_shape: tuple[int, int, int]
    num_classes: int

    @property
    def image_bytes(self) -> int:
        """Both splits' images as float32."""
        height, width, channels = self.image_shape
        return 4 * (self.train_size + self.test_size) * height * width * channels


# the held-out validation images: the first `data.validation` of this fixed permutation of the training split
VALIDATION_SEED = 20251207


def hold_out(raw: Dataset, count: int) -> Dataset:
    """`count` training images moved to a validation split, the same ones for every run of the dataset."""
    if not count:
        return raw
    order = np.random.default_rng(VALIDATION_SEED).permutation(len(raw.y_train))
    held, kept = np.sort(order[:count]), np.sort(order[count:])
    train, val = (raw.x_train[kept], raw.y_train[kept]), (raw.x_train[held], raw.y_train[held])
    return replace(raw, x_train=train[0], y_train=train[1], x_val=val[0], y_val=val[1])


def normalize(raw: Dataset, mode: str) -> Dataset:
    """Statistics come from the training split only, and are applied to every split.

    `per_pixel_mean`: subtract the mean training image (He et al. 2015). `per_channel`: standardise
    each channel to zero mean and unit variance.
    """
    if mode == "per_pixel_mean":
        mean, scale = raw.x_train.mean(axis=0, keepdims=True), 1.0
    else:
        mean = raw.x_train.mean(axis=(0, 1, 2), keepdims=True)
        scale = raw.x_train.std(axis=(0, 1, 2), keepdims=True) + 1e-8

    def apply(x: np.ndarray | None) -> np.ndarray | None:
        if x is None:
            return None
        return ((x - mean) / scale).astype(np.float32)  # a scale of 1.0 changes no bit

    return replace(raw, x_train=apply(raw.x_train), x_test=apply(raw.x_test), x_val=apply(raw.x_val))
