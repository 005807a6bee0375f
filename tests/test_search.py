"""Hydra's sweepers search with the task: its objective returned through every launcher's `JobReturn`, a
failed trial reported as failed, a search continued after a kill, and the pre-flight's checks of a search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SEARCH, report, search_best, search_trials, train

# the learning rate searched up to where some trials diverge (no clipping): seeded, the same ones each time
DIVERGING = ("optim.lr=tag(log, interval(0.1, 1e6))", "optim.clip_norm=0")
POPULATION = ("launcher=population",)
RECORD = ("+hydra.callbacks.record._target_=recorded_jobs.RecordJobs",)


def search(sweep: Path, *extra: str, env: dict[str, str] | None = None):
    return train("-m", *SEARCH, f"hydra.sweep.dir={sweep}", *extra, cwd=sweep.parent, env=env)


@pytest.fixture(scope="module")
def basic_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded search with Hydra's basic launcher, run once: the record two tests compare with."""
    sweep = tmp_path_factory.mktemp("basic") / "search"
    out = search(sweep)
    assert out.returncode == 0, out.stderr[-3000:]
    return sweep


@pytest.mark.parametrize(
    "launcher",
    [(), POPULATION, ("launcher=joblib",), ("launcher=submitit_local",)],
    ids=["basic", "population", "joblib", "submitit_local"],
)
def test_a_search_finds_the_best_trial_its_run_directories_record(
    basic_search: Path, tmp_path: Path, launcher: tuple[str, ...]
) -> None:
    sweep = basic_search
    if launcher:  # the basic launcher's is the module's search
        sweep = tmp_path / "search"
        out = search(sweep, *launcher)
        assert out.returncode == 0, out.stderr[-3000:]
    found = search_trials(sweep)
    assert len(found) == 4 and {s["status"] for s in found.values()} == {"completed"}
    params, value = search_best(sweep)
    assert value == found[params]["final"]["val/error"]  # the objective: the held-out split's error
    assert value == min(s["final"]["val/error"] for s in found.values())
    for run_dir in (d for d in sweep.iterdir() if (d / "config.yaml").exists()):
        named = dict(item.split("=") for item in run_dir.name.split(","))  # readably: 6 significant digits
        assert all(len(named[key]) <= 11 for key in ("optim.lr", "optim.l2"))
    assert_report_ranks(sweep, params, value)


def assert_report_ranks(sweep: Path, params: tuple[float, float], value: float) -> None:
    """The report ranks the trials by the objective and gives the best one's command line."""
    assert report(str(sweep)).returncode == 0
    text = (sweep / "report.md").read_text()
    ranking = text.split("## Search: runs ranked by the objective (val/error, lower is better)")[1]
    first = ranking.split("| 1 | ")[1].splitlines()[0]
    assert f" {value:.4g} | " in first
    command = ranking.split("```bash\n")[1].splitlines()[0]
    assert f"optim.lr={params[0]!r}" in command and f"optim.l2={params[1]!r}" in command
    assert {"objective_vs_optim.lr.png", "objective_vs_optim.l2.png"} <= {
        p.name for p in (sweep / "figures").iterdir()
    }


@pytest.mark.parametrize("launcher", [(), POPULATION], ids=["basic", "population"])
def test_a_diverged_trial_is_a_failed_trial_and_the_search_goes_on(tmp_path: Path, launcher) -> None:
    """Each job reaches Hydra's callbacks with a complete JobReturn: a diverged one returns no value."""
    sweep, log = tmp_path / "search", tmp_path / "jobs.jsonl"
    env = {"PYTHONPATH": str(REPO / "tests")}
    out = search(sweep, *DIVERGING, *launcher, *RECORD, f"+hydra.callbacks.record.path={log}", env=env)
    assert out.returncode == 0, out.stderr[-3000:]  # the sweeper finished: its failed trials are its record
    # Optuna's word for a trial that returned no value
    assert (out.stdout + out.stderr).count("Failed experiment") == 3
    found = search_trials(sweep)
    assert sorted(s["status"] for s in found.values()) == ["completed"] + ["diverged"] * 3
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(e["event"] for e in events) == ["end"] * 4 + ["start"] * 4
    for end in (e for e in events if e["event"] == "end"):
        run_dir = Path(end["output_dir"])
        summary = json.loads((run_dir / "summary.json").read_text())
        assert end["status"] == "COMPLETED" and end["working_dir"] and end["seed"] == 0
        assert end["value"] == (summary["final"]["val/error"] if summary["status"] == "completed" else None)
    params, value = search_best(sweep)
    assert found[params]["status"] == "completed" and value == found[params]["final"]["val/error"]


def test_a_search_killed_midway_continues_as_if_never_stopped(basic_search: Path, tmp_path: Path) -> None:
    """Run again, a seeded search proposes the same trials: the finished ones are read from their run
    directories (not retrained), the killed one resumes, and it goes on to the same answer."""
    whole = basic_search
    sweep = tmp_path / "search"
    assert search(sweep, "hydra.sweeper.n_trials=2").returncode == 0
    done = {d: (d / "summary.json").stat().st_mtime_ns for d in sweep.iterdir() if d.is_dir()}
    # the third trial is killed once its final checkpoint is written, before its summary says completed
    fault = {"RESNET_JAX_FAULT": "after_final_checkpoint:kill", "RESNET_JAX_FAULT_ONCE": str(tmp_path / "x")}
    assert search(sweep, env=fault).returncode != 0
    again = search(sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    # the two finished trials, and the killed one from its final checkpoint: the fourth alone trains
    assert again.stderr.count("already completed") == 3
    assert all((d / "summary.json").stat().st_mtime_ns == t for d, t in done.items())
    finals = [{p: s["final"] for p, s in search_trials(d).items()} for d in (sweep, whole)]
    assert finals[0] == finals[1]
    assert search_best(sweep) == search_best(whole)


def test_a_search_range_outside_the_allowed_values_is_one_line(tmp_path: Path) -> None:
    out = search(tmp_path / "search", "optim.lr=interval(-1, 1)")
    assert out.returncode == 2 and "error: optim.lr=-1" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "search").exists()


def test_an_objective_that_a_run_does_not_report_is_one_line(tmp_path: Path) -> None:
    out = search(tmp_path / "search", "data.validation=0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: optimized_metric='val/error' is not allowed; choose one of: train/error" in out.stderr


def test_a_config_directory_given_with_cd_is_searched(tmp_path: Path) -> None:
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text("# @package _global_\nname: mine\nseed: 7\n")
    out = train("-cd", str(tmp_path / "conf"), "experiment=mine", *SEARCH[1:11], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "mine").iterdir()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 7
