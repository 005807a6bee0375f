"""The wheelhouse for an offline GPU machine: exactly the wheels its image lacks, pinned to this environment.

    python benchmarks/gpu_wheels.py --list                 # name==version, one per line
    python benchmarks/gpu_wheels.py --download .gpu/wheels  # CPython 3.12, manylinux x86-64 (make gpu-wheels)
    python benchmarks/gpu_wheels.py --check-site DIR        # every dependency is on the image or under DIR
    python benchmarks/gpu_wheels.py --download .gpu/wheels-dry-run --python-version 3.11   # the CPU dry run

The GPU image (Python 3.12, jax with CUDA, flax, optax, orbax, torch, scikit-learn, ...) is described by
`gpu_image_packages.txt` beside this file. The project's dependency closure is walked through the installed
distributions' metadata, evaluated for that machine (Linux x86-64, CPython 3.12); a package the image has
ends the walk there, since its own dependencies come with it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

IMAGE_PACKAGES = Path(__file__).with_name("gpu_image_packages.txt")
PROJECT = "resnet_jax"
# the GPU machine: what pip and the requirement markers are evaluated for
TARGET_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "extra": "",
}
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# the CPU kernels' library: on a GPU every op runs XLA's kernels (ops/kernels.py), so it is not carried
NOT_NEEDED_ON_GPU = {"onednn-cpu-gomp", "onednn-devel-cpu-gomp"}


def image_packages() -> set[str]:
    lines = IMAGE_PACKAGES.read_text().splitlines()
    return {canonicalize_name(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()}


def missing_on_image() -> dict[str, str]:
    """{name: version installed here} for every dependency of the project that the GPU image lacks."""
    have, missing = image_packages(), {}
    todo = [Requirement(r) for r in distribution(PROJECT).requires or []]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate(TARGET_MARKERS):
            continue
        if name in have or name in missing or name in NOT_NEEDED_ON_GPU:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            sys.exit(f"error: {name} (needed by {PROJECT}) is not installed here; run `make install` first")
        missing[name] = dist.version
        todo.extend(Requirement(r) for r in dist.requires or [])
    return dict(sorted(missing.items()))


def download(dest: Path, python_version: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pins = missing_on_image()
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip, cpython = [sys.executable, "-m", "pip"], "cp" + python_version.replace(".", "")
    for name, version in pins.items():
        got = subprocess.run(
            [
                *pip,
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                python_version,
                "--implementation",
                "cp",
                *platforms,
                "-d",
                str(dest),
                f"{name}=={version}",
            ],
            capture_output=True,
            text=True,
        )
        if got.returncode != 0:  # published as source only (antlr4-python3-runtime 4.9.3): build its wheel
            subprocess.run(
                [*pip, "wheel", "-q", "--no-deps", "-w", str(dest), f"{name}=={version}"], check=True
            )
    for wheel in dest.glob("*.whl"):  # an older pin's wheel would make pip see two versions
        name, version, *_, abi, platform = wheel.stem.split("-")
        if pins.get(canonicalize_name(name)) != version or name == PROJECT:
            wheel.unlink()
        elif platform != "any" and (abi not in (cpython, "abi3", "none") or "manylinux" not in platform):
            sys.exit(f"error: {wheel.name} is not for CPython {python_version}")
    # the project itself, built here by its build backend (the image has no scikit-build-core)
    root = Path(__file__).resolve().parents[1]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(dest), str(root)], check=True)
    size = sum(w.stat().st_size for w in dest.glob("*.whl"))
    print(f"{len(pins)} dependencies and {PROJECT}, {size / 2**20:.1f} MiB in {dest}")


def check_site(site: Path) -> None:
    """Exit non-zero unless each dependency the image lacks was installed under `site` (the dry run's proof
    that the wheelhouse is complete, run with `site` first on the path)."""
    wrong, carried = [], missing_on_image()
    for name in carried:
        located = Path(distribution(name).locate_file("")).resolve()
        if not located.is_relative_to(site.resolve()):
            wrong.append(f"{name} (from {located})")
    if wrong:
        sys.exit(f"error: not installed from the wheelhouse: {', '.join(wrong)}")
    print(f"all {len(carried)} packages the GPU image lacks came from the wheelhouse")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--list", action="store_true")
    group.add_argument("--download", type=Path, metavar="DIR")
    group.add_argument("--check-site", type=Path, metavar="DIR")
    parser.add_argument("--python-version", default="3.12", help="of the wheels (the dry run: this Python's)")
    args = parser.parse_args()
    if args.list:
        print("\n".join(f"{name}=={version}" for name, version in missing_on_image().items()))
    elif args.download:
        download(args.download, args.python_version)
    else:
        check_site(args.check_site)


if __name__ == "__main__":
    main()
