"""CIFAR-10 from the official `cifar-10-python.tar.gz`.

Safety: the archive's MD5 is verified before anything is read; members are read in memory by their
exact expected names (nothing is extracted, so a path-traversal name cannot write anywhere, and an
archive that holds one is rejected); batches are unpickled with an allow-list of numpy and builtins.
"""

from __future__ import annotations

import hashlib
import posixpath
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from resnet_jax import rules
from resnet_jax.config import Cifar10Data
from resnet_jax.data.dataset import Dataset, Shape
from resnet_jax.data.safe_pickle import safe_loads
from resnet_jax.errors import DatasetError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_IMAGES = 50_000
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
IMAGES_PER_BATCH_MAX = 10_000
MEMBER_BYTES_MAX = 64 * 2**20  # an official batch is ~31 MB


def archive_path(cfg: Cifar10Data) -> Path:
    return Path(cfg.root).expanduser() / ARCHIVE


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(path: Path) -> None:
    """Fetch the official archive with a progress bar; it appears at `path` only once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as tmp:
        try:
            with urllib.request.urlopen(URL, timeout=60) as response:
                total = int(response.headers.get("Content-Length", 0)) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {ARCHIVE}") as bar:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        tmp.write(chunk)
                        bar.update(len(chunk))
        except OSError as exc:
            Path(tmp.name).unlink(missing_ok=True)
            raise DatasetError(f"data.download=true: could not download {URL}: {exc}") from None
    shutil.move(tmp.name, path)


def _read_batches(path: Path) -> dict[str, dict]:
    """Read the expected members of a verified archive, rejecting anything unsafe or malformed."""
    wanted = {f"{FOLDER}/{name}": name for name in (*TRAIN_BATCHES, TEST_BATCH)}
    batches: dict[str, dict] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = posixpath.normpath(member.name)
                if name.startswith(("/", "..")) or "/../" in f"/{member.name}/":
                    raise DatasetError(f"{path}: unsafe member name {member.name!r} in archive; refusing it")
                if member.name not in wanted:
                    continue
                if not member.isfile() or member.size > MEMBER_BYTES_MAX:
                    raise DatasetError(f"{path}: member {member.name!r} is not a regular file of sane size")
                batch = safe_loads(tar.extractfile(member).read())
                batches[wanted[member.name]] = batch
    except DatasetError:
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(
            f"{path}: archive is truncated or corrupt ({exc}); delete it and download again"
        ) from None
    except Exception as exc:  # the restricted unpickler, or a malformed pickle
        raise DatasetError(f"{path}: refused to read a batch: {exc}") from None
    missing = sorted(set(wanted.values()) - set(batches))
    if missing:
        raise DatasetError(f"{path}: archive lacks {', '.join(missing)}; is it the CIFAR-10 python version?")
    return batches


def _to_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise DatasetError(f"batch {name} is malformed: expected b'data' (N, 3072) uint8 and b'labels'")
    if len(labels) != data.shape[0] or data.shape[0] > IMAGES_PER_BATCH_MAX:
        raise DatasetError(f"batch {name} is malformed: {data.shape[0]} images, {len(labels)} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    labels = np.asarray(labels, dtype=np.int32)
    if labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"batch {name} is malformed: labels outside 0..9")
    return images, labels


def check(cfg: Cifar10Data) -> None:
    """Its rules, and a missing archive is an error unless `data.download=true`."""
    rules.pattern("data.md5", cfg.md5, "[0-9a-f]{32}", "an MD5 digest: 32 lowercase hex digits")
    path = archive_path(cfg)
    if not path.is_file() and not cfg.download:
        raise DatasetError(
            f"CIFAR-10 archive not found at {path}; run with data.download=true to fetch it from {URL}, "
            f"or place {ARCHIVE} there (or set data.root)"
        )


def train_size(_cfg: Cifar10Data) -> int:
    return TRAIN_IMAGES


def shape(_cfg: Cifar10Data) -> Shape:
    return Shape(TRAIN_IMAGES, IMAGES_PER_BATCH_MAX, (32, 32, 3), 10)


def load(cfg: Cifar10Data) -> Dataset:
    """The 50,000/10,000 official split."""
    check(cfg)
    path = archive_path(cfg)
    if not path.is_file():
        download(path)
    actual = md5sum(path)
    if actual != cfg.md5:
        raise DatasetError(
            f"{path}: MD5 {actual} does not match data.md5={cfg.md5}; the file is corrupt or not the "
            "official archive: delete it and download again"
        )
    batches = _read_batches(path)
    train = [_to_arrays(batches[name], name) for name in TRAIN_BATCHES]
    x_test, y_test = _to_arrays(batches[TEST_BATCH], TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return Dataset("cifar10", x_train, y_train, x_test, y_test, num_classes=10)
