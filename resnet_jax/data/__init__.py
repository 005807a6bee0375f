"""Datasets as host numpy arrays (NHWC float32 images, int32 labels); each module owns its rules and sizes."""

from __future__ import annotations

from types import ModuleType

from resnet_jax import rules
from resnet_jax.config import Cifar10Data, DataConfig, DigitsData, FashionMnistData, MnistData, SyntheticData
from resnet_jax.data import cifar10, digits, idx, synthetic
from resnet_jax.data.dataset import NORMALIZATIONS, Dataset, Shape, hold_out, normalize
from resnet_jax.errors import ConfigError

_MODULES: dict[type, ModuleType] = {
    DigitsData: digits,
    FashionMnistData: idx,
    MnistData: idx,
    Cifar10Data: cifar10,
    SyntheticData: synthetic,
}


def _module(cfg: DataConfig) -> ModuleType:
    return _MODULES[type(cfg)]


def check(cfg: DataConfig) -> None:
    """The dataset's own rules, and whether it can be had (CIFAR-10 missing and no download: an error)."""
    rules.one_of("data.normalize", cfg.normalize, NORMALIZATIONS)
    _module(cfg).check(cfg)
    images = _module(cfg).train_size(cfg)
    if not (isinstance(cfg.validation, int) and 0 <= cfg.validation < images):
        raise ConfigError(
            f"data.validation={cfg.validation} is not allowed; it holds out that many of the {images} "
            f"training images of data={cfg.name}: choose 0..{images - 1}"
        )


def train_size(cfg: DataConfig) -> int:
    """The training split's size, known before loading (to check the batch size up front): the dataset's
    training images less those held out for validation."""
    return _module(cfg).train_size(cfg) - cfg.validation


def shape(cfg: DataConfig) -> Shape:
    """The dataset's sizes and image shape, known before loading (to check that a run fits in memory)."""
    return _module(cfg).shape(cfg)


def load(cfg: DataConfig) -> Dataset:
    """The dataset `cfg` describes, its validation images held out, normalised as configured with the
    statistics of the images it trains on."""
    return normalize(hold_out(_module(cfg).load(cfg), cfg.validation), cfg.normalize)


__all__ = ["Dataset", "Shape", "check", "load", "shape", "train_size"]
