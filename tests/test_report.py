"""The report on a generated sweep directory: files exist and the numbers are the inputs' numbers."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml
from wandb_records import history, run_record

from resnet_jax import report
from resnet_jax.runs import find_runs, load_run


def write_run(
    root: Path, depth: int, residual: bool, seed: int, l2: float, status: str = "completed"
) -> dict:
    """A run directory as train.py writes it, with made-up but deterministic numbers."""
    path = root / f"model.depth={depth},model.residual={str(residual).lower()},optim.l2={l2},seed={seed}"
    path.mkdir(parents=True)
    config = {
        "model": {"name": "cifar", "depth": depth, "residual": residual},
        "optim": {"l2": l2},
        "seed": seed,
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    layers, blocks = depth - 1, (depth - 2) // 2
    final_train = (depth / 10 if not residual else 1.0) + seed
    rows = [
        {
            "step": 0,
            "probe/grad_norm": [1.0] * depth,
            "probe/response_std": [1.0] * layers,
            "probe/branch_ratio": [0.5] * blocks,
            "probe/weight_norm": [2.0] * depth,
        }
    ]
    steps = 2 if status == "completed" else 1
    for step in range(1, steps + 1):
        rows.append(
            {
                "step": 10 * step,
                "train/loss": 1.0 / step,
                "train/error": final_train * (3 - step),
                "test/loss": 1.0,
                "test/error": final_train + 5,
                "lr": 0.1,
                "probe/grad_norm": [0.1 * (i + 1) for i in range(depth)],
                "probe/response_std": [0.5] * layers,
                "probe/weight_norm": [2.0] * depth,
                "probe/branch_ratio": [l2 * 100 + 0.1] * blocks,
            }
        )
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    last = rows[-1]
    summary = {
        "status": status,
        "step": last["step"],
        "params": 1000 + depth,
        "final": {k: last[k] for k in ("train/error", "test/error")},
        "best": {"test/error": last["test/error"]},
        "steps_per_s": 3.0,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for depth in (8, 20):
        for residual in (False, True):
            for seed in (0, 1):
                write_run(root, depth, residual, seed, l2=1e-4)
    write_run(root, 20, True, 0, l2=1e-3)
    write_run(root, 20, False, 2, l2=1e-3, status="diverged")
    return root


def test_report_writes_markdown_csv_and_five_figures(sweep: Path) -> None:
    path = report.build_report(sweep)
    assert path == sweep / "report.md"
    for name in report.FIGURES:
        figure = sweep / "figures" / name
        assert figure.stat().st_size > 10_000, name  # a real PNG with content
        assert f"](figures/{name})" in path.read_text()


def test_csv_holds_every_run_with_its_numbers(sweep: Path) -> None:
    report.build_report(sweep)
    with (sweep / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10
    plain20 = next(
        r for r in rows if r["run"] == "model.depth=20,model.residual=false,optim.l2=0.0001,seed=1"
    )
    assert float(plain20["final_train_error"]) == pytest.approx(20 / 10 + 1)
    assert float(plain20["final_test_error"]) == pytest.approx(20 / 10 + 1 + 5)
    assert plain20["status"] == "completed" and plain20["params"] == "1020"
    diverged = next(r for r in rows if r["status"] == "diverged")
    assert diverged["step"] == "10" and diverged["depth"] == "20"


def test_markdown_aggregates_seeds_and_marks_failed_runs(sweep: Path) -> None:
    text = report.build_report(sweep).read_text()
    # plain depth 20, L2 1e-4: final train errors 2.0 and 3.0 over seeds 0 and 1
    mean, std = statistics.fmean([2.0, 3.0]), statistics.stdev([2.0, 3.0])
    assert f"| cifar | False | 20 | 0.0001 | 2 | 0 | {mean:.2f} | {std:.2f} |" in text
    assert "| cifar | False | 20 | 0.001 | 1 | 1 |" in text
    table = text.split("## Runs")[0]
    assert table.index("| False | 8 |") < table.index("| False | 20 |") < table.index("| True | 8 |")
    assert "10 runs; 1 not completed" in text
    assert "| diverged | 10 |" in text


def test_aggregate_numbers_match_inputs(sweep: Path) -> None:
    runs = [load_run(p) for p in find_runs(sweep)]
    table = {(r["residual"], r["depth"], r["l2"]): r for r in report.aggregate(runs)}
    residual8 = table[(True, 8, 1e-4)]
    assert residual8["train/error_mean"] == pytest.approx(1.5) and residual8["runs"] == 2
    assert residual8["test/error_std"] == pytest.approx(statistics.stdev([6.0, 7.0]))


def test_cli_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="does not exist"):
        report.main([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no run directories"):
        report.main([str(tmp_path / "empty")])


def test_damaged_runs_are_listed_with_the_reason_and_every_other_run_is_reported(sweep: Path) -> None:
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    (runs[0] / "summary.json").write_text("{ cut short")
    (runs[1] / "config.yaml").write_bytes(b"\x00\xff: [")
    with (runs[2] / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99, "train/lo')  # a row cut short
    text = report.build_report(sweep).read_text()
    damaged = text.split("## Damaged runs")[1].split("## Figures")[0]
    assert f"- `{runs[0].name}`: summary.json missing or unreadable" in damaged
    assert f"- `{runs[1].name}`: config.yaml missing or unreadable" in damaged
    assert f"- `{runs[2].name}`: metrics.jsonl has unreadable lines" in damaged
    assert "10 runs;" in text and "3 damaged (listed below)" in text
    with (sweep / "runs.csv").open() as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert len(rows) == 10 and [rows[r.name]["status"] for r in runs[:2]] == ["damaged", "damaged"]
    assert rows[runs[2].name]["status"] == json.loads((runs[2] / "summary.json").read_text())["status"]
    others = [r for name, r in rows.items() if name not in {p.name for p in runs[:2]}]
    assert all(r["status"] in ("completed", "diverged") and r["final_test_error"] for r in others)
    for name in report.FIGURES:
        assert (sweep / "figures" / name).stat().st_size > 10_000


def test_a_killed_run_shows_its_last_checkpointed_step(sweep: Path) -> None:
    run = sorted(p for p in sweep.iterdir() if p.is_dir())[0]
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running", "step": 30}))
    report.build_report(sweep)
    with (sweep / "runs.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["run"] == run.name)
    assert (row["status"], row["step"]) == ("running", "30")


def test_values_of_the_wrong_type_are_listed_and_every_other_run_is_reported(sweep: Path) -> None:
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    summary = json.loads((runs[0] / "summary.json").read_text())
    (runs[0] / "summary.json").write_text(json.dumps({**summary, "final": [1, 2], "step": "ten"}))
    (runs[1] / "config.yaml").write_text(yaml.safe_dump({"model": "cifar", "seed": [0]}))
    config = yaml.safe_load((runs[2] / "config.yaml").read_text())
    (runs[2] / "config.yaml").write_text(
        yaml.safe_dump({**config, "model": {**config["model"], "depth": "20"}})
    )
    (runs[3] / "summary.json").write_text(json.dumps([summary]))  # valid JSON, not an object
    rows = (runs[4] / "metrics.jsonl").read_text().splitlines()
    (runs[4] / "metrics.jsonl").write_text(
        "\n".join([*rows, '{"step": 30, "probe/grad_norm": ["a"]}']) + "\n"
    )
    text = report.build_report(sweep).read_text()
    damaged = text.split("## Damaged runs")[1].split("## Figures")[0]
    assert (
        f"`{runs[0].name}`: summary.json holds values of the wrong type (step is str, final is list)"
        in damaged
    )
    assert (
        f"`{runs[1].name}`: config.yaml holds values of the wrong type (model is str, seed is list)"
        in damaged
    )
    assert f"`{runs[2].name}`: config.yaml holds values of the wrong type (model.depth is str)" in damaged
    assert f"`{runs[3].name}`: summary.json missing or unreadable" in damaged
    assert f"`{runs[4].name}`: metrics.jsonl has unreadable lines" in damaged
    assert "not drawn" not in text
    for name in report.FIGURES:
        assert (sweep / "figures" / name).stat().st_size > 10_000


def test_a_folder_of_only_damaged_runs_still_gets_a_report(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text("{ torn")
    text = report.build_report(tmp_path).read_text()
    assert "2 runs;" in text and "2 damaged (listed below)" in text


def test_a_report_that_cannot_be_written_is_one_line_and_goes_elsewhere_with_output(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (sweep / "figures").write_text("a file where the figures folder goes")  # the OS refuses, even to root
    before = {p: p.stat().st_mtime_ns for p in sweep.rglob("*")}
    with pytest.raises(SystemExit) as exited:
        report.main([str(sweep)])
    message = str(exited.value)
    assert message.startswith(f"error: cannot write the report into {sweep}") and "--output DIR" in message
    elsewhere = tmp_path / "elsewhere"
    report.main([str(sweep), "--output", str(elsewhere)])
    assert (elsewhere / "report.md").is_file() and (elsewhere / "runs.csv").is_file()
    assert str(elsewhere / "report.md") in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("*")} == before  # the sweep left as it was


def test_link_loops_and_thousands_of_empty_folders_are_walked_once(sweep: Path) -> None:
    for i in range(3000):
        (sweep / "empty" / f"{i:04d}").mkdir(parents=True)
    (sweep / "loop").symlink_to(sweep, target_is_directory=True)
    (sweep / "empty" / "0001" / "up").symlink_to(sweep / "empty", target_is_directory=True)
    assert len(find_runs(sweep)) == 10
    assert "10 runs;" in report.build_report(sweep).read_text()


def test_a_figure_the_values_cannot_make_is_listed_and_the_rest_are_drawn(
    sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args) -> None:
        raise ValueError("no finite values")

    monkeypatch.setattr(report.figures, "plot_branch_ratio", broken)
    text = report.build_report(sweep).read_text()
    assert "- `figures/branch_ratio_vs_l2.png` not drawn: ValueError: no finite values" in text
    assert (sweep / "figures" / "identity_vs_l2.png").stat().st_size > 10_000


def test_the_report_goes_to_the_sweeps_wandb_group_as_images(sweep: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    report.main([str(sweep), "--wandb"])
    (log_file,) = (sweep / "wandb").glob("offline-run-*/run-*.wandb")
    record = run_record(log_file)
    assert record.run_group == "sweep" and record.job_type == "report"
    (row,) = history(log_file)
    for name in report.FIGURES:
        assert row[f"report/{Path(name).stem}/_type"] == "image-file", name
    assert row["report/runs/_type"] == "table-file" and row["report/runs/nrows"] == 10
