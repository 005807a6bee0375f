"""A run directory's identity is what its checkpoints were trained with: a config.yaml edited by hand cannot
pass another configuration off as the run, a directory moved elsewhere resumes and says where it is now, and
every result-neutral key may change between attempts without moving the run or changing its results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import SHORT_RUN, assert_same_record, planned_jobs, train, write_fake_cifar

from resnet_jax import faults
from resnet_jax.composition import compose
from resnet_jax.config import RESULT_NEUTRAL, as_dict
from resnet_jax.identity import differences
from resnet_jax.runner import run
from resnet_jax.runs import load_run


def stop_after_checkpoint(cfg, run_dir: Path, step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `cfg` in `run_dir` until just after its checkpoint at `step`, as a preempted job stops there."""

    def preempted(name: str, at: int | None = None) -> None:
        if name == "after_checkpoint" and at == step:
            raise KeyboardInterrupt("preempted")

    with monkeypatch.context() as patch:
        patch.setattr(faults, "point", preempted)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, run_dir)


def test_an_edited_config_yaml_cannot_pass_another_configuration_off_as_the_run(
    short_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(short_run, run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["optim"]["lr"] = 0.05  # trained at 0.01
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    damage = load_run(run_dir).damage
    assert damage and "config.yaml does not say what the run was trained with" in damage

    claimed = train(*SHORT_RUN, "optim.lr=0.05", f"hydra.run.dir={run_dir}")
    assert claimed.returncode == 2
    assert claimed.stderr.strip().splitlines() == [
        f"error: {run_dir} holds a run of another configuration (optim.lr: 0.01 -> 0.05); run it "
        "elsewhere with hydra.run.dir=... (hydra.sweep.dir=... with -m) or another name=..., or rerun with "
        "the recorded values"
    ]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"

    own = train(*SHORT_RUN, f"hydra.run.dir={run_dir}")
    assert own.returncode == 0, own.stderr[-2000:]
    assert "config.yaml does not say what the run was trained with; rebuilt from the checkpoint" in own.stderr
    assert (run_dir / "config.yaml").read_text() == (short_run / "config.yaml").read_text()
    assert load_run(run_dir).damage is None


def test_a_moved_run_directory_resumes_and_says_where_it_lives(
    short_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose(*SHORT_RUN)
    first, moved = tmp_path / "disk-a" / "run", tmp_path / "disk-b" / "archive" / "run"
    stop_after_checkpoint(cfg, first, 20, monkeypatch)
    wandb_id = json.loads((first / "summary.json").read_text())["wandb_id"]
    moved.parent.mkdir(parents=True)
    shutil.move(first, moved)
    summary = run(cfg, moved)
    assert summary["status"] == "completed" and summary["wandb_id"] == wandb_id  # the same W&B run goes on
    assert_same_record(short_run, moved)
    for name in ("summary.json", "metrics.jsonl", "config.yaml", "overrides.yaml"):
        assert str(first) not in (moved / name).read_text(), name
    assert load_run(moved).damage is None
    archived = tmp_path / "disk-c" / "run"  # a completed run copied again: reported, not retrained
    shutil.copytree(moved, archived)
    assert run(cfg, archived)["final"] == summary["final"]
    assert str(moved) not in (archived / "summary.json").read_text()


# each result-neutral key (config.RESULT_NEUTRAL) changed between two attempts of one run: (the prefix it
# tests, the first attempt's overrides, the second's)
NEUTRAL_CHANGES = [
    ("name", (), ("name=elsewhere",)),
    ("optimized_metric", (), ("optimized_metric=train/loss",)),
    ("logger", (), ("logger=wandb", "logger.tags=[a,b]", "logger.project=other", "logger.mode=disabled")),
    ("trainer.progress", (), ("trainer.progress=true",)),
    ("trainer.checkpoint_every", (), ("trainer.checkpoint_every=20",)),
    ("trainer.checkpoint_every", (), ("trainer.checkpoint_every=0",)),
    ("trainer.checkpoint_every", (), ("trainer.checkpoint_every=7",)),  # not a multiple of trainer.log_every
    ("trainer.keep_checkpoints", (), ("trainer.keep_checkpoints=5",)),
    ("data.root", ("data.root={a}",), ("data.root={b}",)),
    ("data.download", ("data.root={a}",), ("data.root={a}", "data.download=true")),
]


def test_every_result_neutral_key_is_tested() -> None:
    assert {prefix for prefix, _, _ in NEUTRAL_CHANGES} == set(RESULT_NEUTRAL)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two folders holding the same (fake) CIFAR-10 archive, and its MD5."""
    root = tmp_path_factory.mktemp("cifar")
    md5 = write_fake_cifar(root / "a")
    shutil.copytree(root / "a", root / "b")
    return {"a": str(root / "a"), "b": str(root / "b"), "md5": md5}


@pytest.fixture(scope="module")
def cifar_reference(tmp_path_factory: pytest.TempPathFactory, archives: dict[str, str]) -> Path:
    run_dir = tmp_path_factory.mktemp("cifar-reference") / "run"
    run(
        compose(*SHORT_RUN, "data=cifar10", f"data.md5={archives['md5']}", f"data.root={archives['a']}"),
        run_dir,
    )
    return run_dir


@pytest.mark.parametrize(("prefix", "before", "after"), NEUTRAL_CHANGES)
def test_a_result_neutral_key_changed_between_attempts_keeps_the_results(
    prefix: str,
    before: tuple[str, ...],
    after: tuple[str, ...],
    archives: dict[str, str],
    request,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_cifar = prefix.startswith("data.")
    base = ("data=cifar10", f"data.md5={archives['md5']}") if on_cifar else ()
    before, after = ([o.format(**archives) for o in overrides] for overrides in (before, after))
    reference = request.getfixturevalue("cifar_reference" if on_cifar else "short_run")
    run_dir = tmp_path / "run"
    stop_after_checkpoint(compose(*SHORT_RUN, *base, *before), run_dir, 20, monkeypatch)
    run(compose(*SHORT_RUN, *base, *after), run_dir)
    assert_same_record(reference, run_dir)

    def placed(*overrides: str) -> Path:
        return planned_jobs(*SHORT_RUN, *base, *overrides)[0].run_dir

    # the sweep's name places the sweep; within it, the run's own directory keeps its name
    same = (lambda p: p.name) if prefix == "name" else (lambda p: p)
    assert same(placed(*before)) == same(placed(*after))


def test_a_result_affecting_key_names_the_directory_and_is_refused_on_resume(tmp_path: Path) -> None:
    plain, other = (planned_jobs(*SHORT_RUN, *extra)[0].run_dir for extra in ((), ("seed=1",)))
    assert plain != other
    run_dir = tmp_path / "run"
    run(compose(*SHORT_RUN), run_dir)
    with pytest.raises(Exception, match=r"model.unroll: None -> True"):
        run(compose(*SHORT_RUN, "model.unroll=true"), run_dir)


def test_a_run_recorded_before_a_key_existed_is_the_same_run_at_its_default() -> None:
    """Runs written before `data.validation` existed resume: a key is added with the old behaviour as its
    default, so its absence from a record matches that default, and only that."""
    wanted = as_dict(compose(*SHORT_RUN))
    older = {**wanted, "data": {k: v for k, v in wanted["data"].items() if k != "validation"}}
    assert differences(older, wanted) == []
    held_out = as_dict(compose(*SHORT_RUN, "data.validation=100"))
    assert differences(older, held_out) == ["data.validation: (absent) -> 100"]
    assert differences(wanted, older) == ["data.validation: 0 -> (absent)"]  # a key removed is a change
