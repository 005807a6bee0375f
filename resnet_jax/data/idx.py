"""MNIST and Fashion-MNIST: the four IDX files of the original distribution (gzipped or not), read from
`data.root` and checked before use: the magic numbers, the image shape, the counts (60,000 / 10,000) and, for
Fashion-MNIST, the published checksums. Nothing is downloaded.

Fashion-MNIST comes with Debian (`apt-get install dataset-fashion-mnist`, files in
/usr/share/datasets/fashion-mnist). Debian's package recompressed the `.gz` files, so their MD5s differ from
the published ones while the IDX bytes inside are the same: a file passes with the published MD5 of its `.gz`
or with the SHA-256 of the IDX bytes it holds.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_jax.config import IdxData
from resnet_jax.data.dataset import Dataset, Shape
from resnet_jax.errors import DatasetError

IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 and 1 dimensions
SIDE, CLASSES = 28, 10
COUNTS = {"train": 60_000, "t10k": 10_000}


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from and how a user gets them."""

    title: str
    get_it: str
    # per file name: (the published MD5 of the .gz, the SHA-256 of the IDX bytes); none: not checked
    checksums: dict[str, tuple[str, str]]


SOURCES = {
    "fashion_mnist": Source(
        "Fashion-MNIST",
        "apt-get install dataset-fashion-mnist (Debian, Ubuntu), or put the four files from "
        "github.com/zalandoresearch/fashion-mnist (data/fashion) there and set data.root",
        {
            "train-images-idx3-ubyte": (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "train-labels-idx1-ubyte": (
                "25c81989df183df01b3e8a0aad5dffbe",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            "t10k-images-idx3-ubyte": (
                "bef4ecab320f06d8554ea6380940ec79",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            "t10k-labels-idx1-ubyte": (
                "bb300cfdad3c16e7a12a480ee83cd310",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
    ),
    "mnist": Source(
        "MNIST", "put the four files of the MNIST distribution there (or set data.root to their folder)", {}
    ),
}


def files(split: str) -> tuple[str, str]:
    """The images' and labels' file names of a split (`train` or `t10k`), without `.gz`."""
    return f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"


def _find(root: Path, name: str) -> Path | None:
    """`name.gz` or `name` under `root`."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def _missing(cfg: IdxData) -> list[str]:
    root = Path(cfg.root).expanduser()
    return [name for split in COUNTS for name in files(split) if _find(root, name) is None]


def check(cfg: IdxData) -> None:
    """The four files are there (their contents are checked when they are read)."""
    missing = _missing(cfg)
    if missing:
        source, root = SOURCES[cfg.name], Path(cfg.root).expanduser()
        raise DatasetError(
            f"{source.title} not found: no {', '.join(missing)} (.gz or not) in {root}; {source.get_it}"
        )


def _read(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc}); the file is truncated or not gzip") from None


def _verify(path: Path, data: bytes, name: str, source: Source) -> None:
    """The published checksum of the .gz, or the SHA-256 of the IDX bytes (Debian's recompressed copies)."""
    if name not in source.checksums:
        return
    md5, sha256 = source.checksums[name]
    if hashlib.sha256(data).hexdigest() == sha256:
        return
    if path.suffix == ".gz" and hashlib.md5(path.read_bytes()).hexdigest() == md5:
        return
    raise DatasetError(
        f"{path}: its contents do not match the published {source.title} checksum; the file is damaged or "
        f"not {source.title}'s: {source.get_it}"
    )


def _parse(path: Path, data: bytes, magic: int, count: int) -> np.ndarray:
    """The IDX array in `data`, with its header checked: magic number, dimensions and count."""
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(data) < header:
        raise DatasetError(f"{path}: truncated: {len(data)} bytes, shorter than an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetError(f"{path}: not an IDX file of this kind (magic {found:#010x}, not {magic:#010x})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    wanted = (count, SIDE, SIDE)[:dims]
    if shape != wanted:
        raise DatasetError(f"{path}: holds an array of shape {shape}, not {wanted}")
    body = np.frombuffer(data, np.uint8, offset=header)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: truncated: {body.size} of {int(np.prod(shape))} values")
    return body.reshape(shape)


def _split(cfg: IdxData, split: str) -> tuple[np.ndarray, np.ndarray]:
    root, source = Path(cfg.root).expanduser(), SOURCES[cfg.name]
    arrays = []
    for name, magic in zip(files(split), (IMAGE_MAGIC, LABEL_MAGIC), strict=True):
        path = _find(root, name)
        data = _read(path)
        _verify(path, data, name, source)
        arrays.append(_parse(path, data, magic, COUNTS[split]))
    images, labels = arrays
    if labels.max() >= CLASSES:
        raise DatasetError(f"{_find(root, files(split)[1])}: labels outside 0..{CLASSES - 1}")
    return (images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32)


def train_size(_cfg: IdxData) -> int:
    return COUNTS["train"]


def shape(_cfg: IdxData) -> Shape:
    return Shape(COUNTS["train"], COUNTS["t10k"], (SIDE, SIDE, 1), CLASSES)


def load(cfg: IdxData) -> Dataset:
    """The official 60,000 / 10,000 split, as (N, 28, 28, 1) float32 images in [0, 1]."""
    check(cfg)
    x_train, y_train = _split(cfg, "train")
    x_test, y_test = _split(cfg, "t10k")
    return Dataset(cfg.name, x_train, y_train, x_test, y_test, num_classes=CLASSES)
