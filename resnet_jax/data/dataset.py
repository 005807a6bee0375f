"""The one shape every dataset is handed to the trainer in."""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


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


def normalize(x_train: np.ndarray, x_test: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Statistics come from the training split only, and are applied to both splits.

    `per_pixel_mean`: subtract the mean training image (He et al. 2015). `per_channel`: standardise
    each channel to zero mean and unit variance.
    """
    if mode == "per_pixel_mean":
        mean = x_train.mean(axis=0, keepdims=True)
        return (x_train - mean).astype(np.float32), (x_test - mean).astype(np.float32)
    mean = x_train.mean(axis=(0, 1, 2), keepdims=True)
    std = x_train.std(axis=(0, 1, 2), keepdims=True) + 1e-8
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)
