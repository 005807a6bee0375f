"""The docs lead somewhere true: every relative link and anchor resolves, every `conf/` file they name
exists, the README stays short, and every training command the README shows passes the pre-flight as
written (composes and is checked, every job of a sweep included)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from helpers import REPO, planned_jobs

from resnet_jax import preflight

DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted(REPO.glob("experiments/*/README.md")),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CONF_PATH = re.compile(r"\bconf/[A-Za-z0-9_./-]+")
README_LINES_MAX = 200


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_conf_path_the_docs_name_exists(page: Path) -> None:
    for named in CONF_PATH.findall(page.read_text()):
        assert (REPO / named.rstrip(".")).exists(), f"{page.name}: {named}"


def test_the_readme_is_short() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= README_LINES_MAX


def readme_commands() -> list[list[str]]:
    """The arguments of each `python -m resnet_jax.train ...` in the README's code blocks (continuation lines
    joined, comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    prefix = "python -m resnet_jax.train "
    return [shlex.split(line.split("#")[0])[3:] for line in lines if line.startswith(prefix)]


def test_the_readme_shows_the_tour() -> None:
    assert len(readme_commands()) >= 8


@pytest.mark.parametrize("arguments", readme_commands(), ids=" ".join)
def test_every_readme_training_command_passes_the_preflight(arguments: list[str]) -> None:
    multirun = "-m" in arguments
    jobs = planned_jobs(*(a for a in arguments if a != "-m"), multirun=multirun)
    assert jobs
    preflight.check(jobs)
