"""Datasets as host numpy arrays (NHWC float32 images, int32 labels); each module owns its rules and sizes."""

from __future__ import annotations

import dataclasses
from types import ModuleType

from resnet_jax import rules
from resnet_jax.config import Cifar10Data, DataConfig, DigitsData, FashionMnistData, MnistData, SyntheticData
from resnet_jax.data import cifar10, digits, idx, synthetic
from resnet_jax.data.dataset import NORMALIZATIONS, Dataset, Shape, normalize

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


def train_size(cfg: DataConfig) -> int:
    """The training split's size, known before loading (to check the batch size up front)."""
    return _module(cfg).train_size(cfg)


def shape(cfg: DataConfig) -> Shape:
    """The dataset's sizes and image shape, known before loading (to check that a run fits in memory)."""
    return _module(cfg).shape(cfg)


def load(cfg: DataConfig) -> Dataset:
    """The dataset `cfg` describes, normalised as configured with its training split's statistics."""
    raw = _module(cfg).load(cfg)
    x_train, x_test = normalize(raw.x_train, raw.x_test, cfg.normalize)
    return dataclasses.replace(raw, x_train=x_train, x_test=x_test)


__all__ = ["Dataset", "Shape", "check", "load", "shape", "train_size"]
