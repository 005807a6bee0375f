"""MNIST and Fashion-MNIST from their IDX files: the real Fashion-MNIST files (Debian's
dataset-fashion-mnist, which `make test` and CI install) trained on, and every way the files can be wrong
tried on small IDX files written here: one line naming the file and what is wrong."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY, final_arrays, train

from resnet_jax import data as datasets
from resnet_jax.config import FashionMnistData, MnistData
from resnet_jax.data import idx
from resnet_jax.errors import DatasetError


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """`array` (uint8) as an IDX file: the magic number, each dimension, then the values."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(root: Path, gz: bool = True, seed: int = 0, **replace: bytes) -> Path:
    """The four files of a (random) MNIST-format dataset under `root`; `replace` swaps a file's bytes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in idx.COUNTS.items():
        images_name, labels_name = idx.files(split)
        contents = {
            images_name: idx_bytes(rng.integers(0, 256, (count, 28, 28)), idx.IMAGE_MAGIC),
            labels_name: idx_bytes(rng.integers(0, 10, count), idx.LABEL_MAGIC),
        }
        for name, data in contents.items():
            data = replace.get(name.replace("-", "_"), data)
            path = root / (f"{name}.gz" if gz else name)
            path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return root


FOUR = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_idx(tmp_path_factory.mktemp("mnist"))


def test_the_real_fashion_mnist_files_load_as_the_published_split() -> None:
    ds = datasets.load(FashionMnistData())
    assert ds.x_train.shape == (60_000, 28, 28, 1) and ds.x_test.shape == (10_000, 28, 28, 1)
    assert (
        np.bincount(ds.y_train).tolist() == [6_000] * 10 and np.bincount(ds.y_test).tolist() == [1_000] * 10
    )
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-3  # per channel


def test_mnist_format_files_load_gzipped_or_not(fake_root: Path, tmp_path: Path) -> None:
    plain = write_idx(tmp_path / "plain", gz=False)
    a, b = datasets.load(MnistData(root=str(fake_root))), datasets.load(MnistData(root=str(plain)))
    assert a.x_train.shape == (60_000, 28, 28, 1) and a.num_classes == 10
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)


def test_missing_files_say_where_they_were_looked_for_and_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as raised:
        datasets.check(FashionMnistData(root=str(tmp_path)))
    assert str(raised.value) == (
        f"Fashion-MNIST not found: no {FOUR} (.gz or not) in {tmp_path}; apt-get install "
        "dataset-fashion-mnist (Debian, Ubuntu), or put the four files from "
        "github.com/zalandoresearch/fashion-mnist (data/fashion) there and set data.root"
    )


def test_files_that_are_not_fashion_mnist_fail_its_checksum(fake_root: Path) -> None:
    mismatch = r"train-images-idx3-ubyte.gz: its contents do not match the published Fashion-MNIST checksum"
    with pytest.raises(DatasetError, match=mismatch):
        datasets.load(FashionMnistData(root=str(fake_root)))


def _labels(count: int, top: int = 10) -> np.ndarray:
    return np.arange(count) % top


DAMAGE = [
    ("train_images_idx3_ubyte", b"\x00\x00\x08", "truncated: 3 bytes, shorter than an IDX header"),
    (
        "train_labels_idx1_ubyte",
        idx_bytes(_labels(60_000), 0x00000803)[:8],
        "not an IDX file of this kind (magic 0x00000803, not 0x00000801)",
    ),
    (
        "t10k_images_idx3_ubyte",
        idx_bytes(np.zeros((10_000, 32, 32)), idx.IMAGE_MAGIC),
        "holds an array of shape (10000, 32, 32), not (10000, 28, 28)",
    ),
    ("t10k_labels_idx1_ubyte", idx_bytes(_labels(9_999), idx.LABEL_MAGIC), "shape (9999,), not (10000,)"),
    (
        "t10k_labels_idx1_ubyte",
        idx_bytes(_labels(10_000), idx.LABEL_MAGIC)[:-100],
        "truncated: 9900 of 10000 values",
    ),
    ("t10k_labels_idx1_ubyte", idx_bytes(_labels(10_000, 12), idx.LABEL_MAGIC), "labels outside 0..9"),
]


@pytest.mark.parametrize(("name", "content", "says"), DAMAGE)
def test_a_damaged_file_is_one_line_naming_it(name: str, content: bytes, says: str, tmp_path: Path) -> None:
    root = write_idx(tmp_path, gz=False, **{name: content})
    with pytest.raises(DatasetError) as raised:
        datasets.load(MnistData(root=str(root)))
    assert str(raised.value).startswith(str(root / name.replace("_", "-"))) and says in str(raised.value)


def test_a_truncated_gzip_is_one_line(fake_root: Path, tmp_path: Path) -> None:
    root = write_idx(tmp_path)
    path = root / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(
        DatasetError, match=r"train-labels-idx1-ubyte.gz: cannot be read .* truncated or not gzip"
    ):
        datasets.load(MnistData(root=str(root)))


def test_the_command_line_says_a_missing_dataset_in_one_line(tmp_path: Path) -> None:
    out = train(*TINY, "data=mnist", f"data.root={tmp_path / 'none'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: MNIST not found: no {FOUR} (.gz or not) in {tmp_path / 'none'}; put the four files of the "
        "MNIST distribution there (or set data.root to their folder)"
    ]
    assert not (tmp_path / "run").exists()


def test_a_resnet_trains_on_the_real_fashion_mnist_files(tmp_path: Path) -> None:
    """28x28x1 images through the CIFAR family (stages at 28/14/7), augmented on device, probed."""
    run_dir = tmp_path / "run"
    # evaluated once, at the end: each evaluation passes the 10,000 test images
    out = train(
        *TINY, "data=fashion_mnist", "model.depth=8", "trainer.eval_every=20", f"hydra.run.dir={run_dir}"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final"]["test/error"] < 90.0  # better than chance
    stems = [a for name, a in final_arrays(run_dir).items() if name.startswith("params/stem/")]
    assert [a.shape for a in stems if a.ndim == 4] == [(3, 3, 1, 16)]  # the first convolution takes 1 channel
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["augment"] is True
