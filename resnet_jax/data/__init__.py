"""Datasets as host numpy arrays (NHWC float32 images, int32 labels); each source owns its rules and sizes.

A dataset is a `Source` registered with its config schema (`register`); the built-in ones are modules of this
package. Held-out validation images and normalisation are the same for every dataset (`load`)."""

from __future__ import annotations

from typing import Protocol

from resnet_jax import rules
from resnet_jax.config import (
    Cifar10Data,
    DataConfig,
    DigitsData,
    FashionMnistData,
    MnistData,
    SyntheticData,
    add_option,
)
from resnet_jax.data import cifar10, digits, idx, synthetic
from resnet_jax.data.dataset import NORMALIZATIONS, Dataset, Shape, hold_out, normalize
from resnet_jax.errors import ConfigError


class Source(Protocol):
    """Where a dataset's images come from: its config's rules (and whether it can be had), its sizes known
    before loading, and the raw splits (`Dataset`, not yet normalised). A module of these functions is one."""

    def check(self, cfg: DataConfig) -> None: ...

    def train_size(self, cfg: DataConfig) -> int: ...

    def shape(self, cfg: DataConfig) -> Shape: ...

    def load(self, cfg: DataConfig) -> Dataset: ...


# each dataset's source by its config schema (the schemas of the built-in ones are in resnet_jax.config)
SOURCES: dict[type, Source] = {
    DigitsData: digits,
    FashionMnistData: idx,
    MnistData: idx,
    Cifar10Data: cifar10,
    SyntheticData: synthetic,
}


def register(name: str, schema: type[DataConfig], source: Source) -> None:
    """Add a dataset: `data=<name>` composes `schema` (its keys and defaults) and trains on `source`'s
    images."""
    add_option("data", name, schema)
    SOURCES[schema] = source


def _source(cfg: DataConfig) -> Source:
    return SOURCES[type(cfg)]


def check(cfg: DataConfig) -> None:
    """The dataset's own rules, and whether it can be had (CIFAR-10 missing and no download: an error)."""
    rules.one_of("data.normalize", cfg.normalize, NORMALIZATIONS)
    _source(cfg).check(cfg)
    images = _source(cfg).train_size(cfg)
    if not (isinstance(cfg.validation, int) and 0 <= cfg.validation < images):
        raise ConfigError(
            f"data.validation={cfg.validation} is not allowed; it holds out that many of the {images} "
            f"training images of data={cfg.name}: choose 0..{images - 1}"
        )


def train_size(cfg: DataConfig) -> int:
    """The training split's size, known before loading (to check the batch size up front): the dataset's
    training images less those held out for validation."""
    return _source(cfg).train_size(cfg) - cfg.validation


def shape(cfg: DataConfig) -> Shape:
    """The dataset's sizes and image shape, known before loading (to check that a run fits in memory)."""
    return _source(cfg).shape(cfg)


def load(cfg: DataConfig) -> Dataset:
    """The dataset `cfg` describes, its validation images held out, normalised as configured with the
    statistics of the images it trains on."""
    return normalize(hold_out(_source(cfg).load(cfg), cfg.validation), cfg.normalize)


__all__ = ["Dataset", "Shape", "Source", "check", "load", "register", "shape", "train_size"]
