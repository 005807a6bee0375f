"""Datasets: digits split, synthetic shapes, and the CIFAR-10 reader's checks on fake official archives."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import add_member, write_fake_cifar

from resnet_jax import data as datasets
from resnet_jax.config import Cifar10Data, DigitsData, SyntheticData
from resnet_jax.data import digits
from resnet_jax.data.augment import pad_crop_flip
from resnet_jax.data.dataset import hold_out
from resnet_jax.data.safe_pickle import UnsafePickleError, safe_loads
from resnet_jax.errors import ConfigError, DatasetError


def test_digits_is_a_fixed_stratified_normalised_split() -> None:
    a, b = datasets.load(DigitsData()), datasets.load(DigitsData())
    assert a.x_train.shape == (1437, 8, 8, 1) and a.x_test.shape == (360, 8, 8, 1)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert abs(float(a.x_train.mean())) < 1e-5 and abs(float(a.x_train.std()) - 1) < 1e-4
    assert sorted(np.bincount(a.y_test))[0] >= 35  # stratified: every class ~36 times
    other = datasets.load(DigitsData(split_seed=1))
    assert not np.array_equal(a.y_test, other.y_test)


def test_synthetic_has_the_requested_shape() -> None:
    ds = datasets.load(SyntheticData(image_size=5, channels=2, num_classes=3, train_size=7))
    assert ds.x_train.shape == (7, 5, 5, 2) and ds.num_classes == 3
    assert set(np.unique(ds.y_test)) <= {0, 1, 2}


def cifar_cfg(root: Path, md5: str, **kwargs) -> Cifar10Data:
    return Cifar10Data(root=str(root), md5=md5, **kwargs)


def test_cifar10_reads_the_official_format(fake_cifar: tuple[Path, str]) -> None:
    root, md5 = fake_cifar
    ds = datasets.load(cifar_cfg(root, md5, normalize="per_pixel_mean"))
    assert ds.x_train.shape == (50, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
    # per-pixel mean subtraction: the mean training image is zero everywhere
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-6)
    # data_batch_1's first row, CHW -> HWC, scaled to [0, 1], minus the mean training image
    with tarfile.open(root / "cifar-10-python.tar.gz") as archive:
        members = [archive.extractfile(f"cifar-10-batches-py/data_batch_{i}").read() for i in range(1, 6)]
    raws = [pickle.loads(member) for member in members]
    images = np.concatenate([r[b"data"] for r in raws]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
    np.testing.assert_allclose(ds.x_train[0], images[0] - images.mean(axis=0), atol=1e-5)
    assert list(ds.y_train[:10]) == raws[0][b"labels"]
    standardised = datasets.load(cifar_cfg(root, md5, normalize="per_channel"))
    np.testing.assert_allclose(standardised.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)


def test_cifar10_missing_archive_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"not found at .*cifar-10-python.tar.gz.*data.download=true"):
        datasets.load(cifar_cfg(tmp_path / "nowhere", "0" * 32))


def test_cifar10_md5_mismatch_is_refused_before_reading(fake_cifar: tuple[Path, str]) -> None:
    root, _ = fake_cifar
    with pytest.raises(DatasetError, match="MD5 .* does not match data.md5="):
        datasets.load(cifar_cfg(root, "c58f30108f718f92721af3b95e74349a"))


def test_cifar10_truncated_archive(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_fake_cifar(root)
    path = root / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[:-2000])
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        datasets.load(cifar_cfg(root, md5))


def test_cifar10_rejects_path_traversal_members(tmp_path: Path) -> None:
    root = tmp_path / "c"
    md5 = write_fake_cifar(root, extra={"../../evil.txt": b"owned"})
    with pytest.raises(DatasetError, match="unsafe member name '../../evil.txt'"):
        datasets.load(cifar_cfg(root, md5))
    assert not (tmp_path / "evil.txt").exists() and not Path("evil.txt").exists()


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/resnet_jax_pwned",))


def test_restricted_unpickler_refuses_os_system_without_running_it(tmp_path: Path) -> None:
    marker = Path("/tmp/resnet_jax_pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(UnsafePickleError, match="system"):
        safe_loads(pickle.dumps(_Exploit()))
    assert not marker.exists()
    root = tmp_path / "c"
    root.mkdir()
    path = root / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        add_member(tar, "cifar-10-batches-py/data_batch_1", pickle.dumps(_Exploit()))
    with pytest.raises(DatasetError, match="refused to read a batch"):
        datasets.load(cifar_cfg(root, hashlib.md5(path.read_bytes()).hexdigest()))
    assert not marker.exists()


def test_safe_loads_round_trips_numpy_arrays() -> None:
    payload = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2, 3]}
    out = safe_loads(pickle.dumps(payload, protocol=2))
    np.testing.assert_array_equal(out[b"data"], payload[b"data"])
    assert out[b"labels"] == [1, 2, 3]


def test_pad_crop_flip_keeps_shape_and_content() -> None:
    images = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1) + 1
    out = jax.jit(pad_crop_flip)(jax.random.key(0), images)
    assert out.shape == images.shape
    # each output is a shifted (maybe flipped) window: its non-zero values come from its own image
    for i in range(2):
        values = set(np.asarray(out[i]).ravel()) - {0.0}
        assert values <= set(np.asarray(images[i]).ravel())
    outs = [pad_crop_flip(jax.random.key(k), images) for k in range(5)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_cifar10_download_fetches_verifies_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.download=true: the archive is fetched (here from a local file:// URL), then MD5-checked."""
    from resnet_jax.data import cifar10

    source = tmp_path / "mirror"
    md5 = write_fake_cifar(source)
    monkeypatch.setattr(cifar10, "URL", (source / "cifar-10-python.tar.gz").as_uri())
    root = tmp_path / "cache"
    ds = datasets.load(cifar_cfg(root, md5, download=True))
    assert ds.x_train.shape == (50, 32, 32, 3)
    assert (root / "cifar-10-python.tar.gz").read_bytes() == (source / "cifar-10-python.tar.gz").read_bytes()
    assert not list(root.glob("*.part"))  # no partial file left behind


def test_a_validation_split_is_held_out_the_same_for_every_run() -> None:
    whole, held = datasets.load(DigitsData()), datasets.load(DigitsData(validation=300))
    assert held.x_train.shape[0] == 1137 and held.x_val.shape == (300, 8, 8, 1) and whole.x_val is None
    assert datasets.train_size(DigitsData(validation=300)) == 1137
    np.testing.assert_array_equal(held.y_val, datasets.load(DigitsData(validation=300)).y_val)
    assert set(held.evaluated_splits()) == {"test", "val"} and set(whole.evaluated_splits()) == {"test"}
    # normalised with the statistics of the images it trains on, the held-out ones excluded
    assert abs(float(held.x_train.mean())) < 1e-5 and abs(float(held.x_train.std()) - 1) < 1e-4
    raw = digits.load(DigitsData())
    split = hold_out(raw, 300)  # every training image in exactly one of the two
    rows = lambda x: sorted(image.tobytes() for image in x)  # noqa: E731
    assert rows(np.concatenate([split.x_train, split.x_val])) == rows(raw.x_train)
    np.testing.assert_array_equal(split.x_test, raw.x_test)


@pytest.mark.parametrize("validation", [-1, 1437, 10**9])
def test_a_validation_split_out_of_range_is_one_line(validation: int) -> None:
    said = (
        rf"^data.validation={validation} is not allowed; it holds out that many of the 1437 training images"
    )
    with pytest.raises(ConfigError, match=said + r" of data=digits: choose 0..1436$"):
        datasets.check(DigitsData(validation=validation))


@pytest.fixture
def digits_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty cache folder for the digits split, and no split remembered by this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    digits._split.cache_clear()
    yield tmp_path / "cache" / "resnet_jax" / "digits"
    digits._split.cache_clear()


def assert_is_scikit_learns_split(arrays: tuple[np.ndarray, ...], test_fraction: float, seed: int) -> None:
    built = digits._built(test_fraction, seed)
    for name, array in zip(digits.SPLIT, arrays, strict=True):
        assert array.dtype == built[name].dtype and array.shape == built[name].shape, name
        np.testing.assert_array_equal(array, built[name], err_msg=name)


def test_a_cached_digits_split_is_scikit_learns_without_importing_it(
    digits_cache: Path, tmp_path: Path
) -> None:
    assert_is_scikit_learns_split(digits._split(0.25, 3), 0.25, 3)  # built, then stored
    (entry,) = digits_cache.glob("*.npz")
    with np.load(entry) as stored:
        assert str(stored["source"]).endswith(" digits, test_fraction=0.25, split_seed=3")
    script = (
        "import sys, numpy as np; from resnet_jax.data import digits; arrays = digits._split(0.25, 3);"
        f"np.savez({str(tmp_path / 'read.npz')!r}, *arrays); print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]  # read from the cache: scikit-learn not even imported
    with np.load(tmp_path / "read.npz") as read:
        assert_is_scikit_learns_split(tuple(read[f"arr_{k}"] for k in range(4)), 0.25, 3)
    assert not list(digits_cache.glob(".*"))  # no temporary file left


def entry_of_split(folder: Path, test_fraction: float, seed: int) -> Path:
    """The cache entry `digits._split(test_fraction, seed)` reads (and writes when it is not there)."""
    digits._split.cache_clear()
    before = set(folder.glob("*.npz"))
    digits._split(test_fraction, seed)
    digits._split.cache_clear()
    (entry,) = set(folder.glob("*.npz")) - before or before
    return entry


DAMAGE = {
    "empty": lambda entry, other: b"",
    "truncated": lambda entry, other: entry[: len(entry) // 2],
    "a flipped byte": lambda entry, other: entry[:5000] + bytes([entry[5000] ^ 1]) + entry[5001:],
    "not a zip": lambda entry, other: b"PK\x03\x04 no archive" * 10,
    "another split's entry": lambda entry, other: other,
}


@pytest.mark.parametrize("damage", DAMAGE.keys())
def test_a_damaged_digits_cache_entry_is_rebuilt_from_scikit_learn(digits_cache: Path, damage: str) -> None:
    other = entry_of_split(digits_cache, 0.2, 1).read_bytes()
    entry = entry_of_split(digits_cache, 0.2, 0)
    entry.write_bytes(DAMAGE[damage](entry.read_bytes(), other))
    assert_is_scikit_learns_split(digits._split(0.2, 0), 0.2, 0)
    with np.load(entry) as rebuilt:  # stored again, whole
        assert_is_scikit_learns_split(tuple(rebuilt[name] for name in digits.SPLIT), 0.2, 0)


def test_digits_train_where_the_cache_cannot_be_written(digits_cache: Path) -> None:
    digits_cache.parent.parent.mkdir()
    digits_cache.parent.write_text("a file where the cache folder would be")
    assert_is_scikit_learns_split(digits._split(0.2, 0), 0.2, 0)
    assert digits_cache.parent.read_text() == "a file where the cache folder would be"
