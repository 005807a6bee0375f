"""Every option of every config group composes into a valid, typed config equal to its schema's defaults;
bad values are one line naming the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import hydra_config, planned_jobs, tiny_config
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from resnet_jax import checks, preflight
from resnet_jax.callbacks import CheckJobs
from resnet_jax.checks import check
from resnet_jax.composition import compose, composition_error
from resnet_jax.config import (
    GROUP_OPTIONS,
    CifarModel,
    Config,
    DigitsData,
    ProbeConfig,
    SgdOptim,
    TrainerConfig,
    WandbLogger,
)
from resnet_jax.errors import ConfigError
from resnet_jax.runner import run

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def programmatic(**groups) -> Config:
    """A Config built in Python from the schemas' defaults (their family-recipe interpolations resolved)."""
    chosen = {
        "model": CifarModel(),
        "data": DigitsData(),
        "optim": SgdOptim(),
        "logger": WandbLogger(),
        **groups,
    }
    return OmegaConf.to_object(OmegaConf.structured(Config(**chosen)))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g, options in GROUP_OPTIONS.items() for o in options]
)
def test_every_option_from_the_command_line_equals_its_programmatic_form(group: str, option: str) -> None:
    """One place for defaults: `group=option` gives exactly the schema's own defaults, nothing else."""
    cfg = compose(f"{group}={option}")
    assert cfg == programmatic(**{group: GROUP_OPTIONS[group][option]()})
    if option not in ("cifar10", "mnist"):  # their checks look for files that are not installed here
        check(cfg)


def test_the_default_config_is_the_programmatic_default_resnet20_on_digits() -> None:
    cfg = compose()
    assert cfg == programmatic(trainer=TrainerConfig(), probe=ProbeConfig())
    assert (cfg.model.name, cfg.model.depth, cfg.model.residual, cfg.data.name) == (
        "cifar",
        20,
        True,
        "digits",
    )
    assert cfg.logger.mode == "offline"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_preset_composes(experiment: str) -> None:
    cfg = compose(f"experiment={experiment}")
    assert isinstance(cfg, Config)
    if cfg.data.name != "cifar10":
        check(cfg)


def test_the_very_deep_study_sweeps_five_nets_over_three_seeds() -> None:
    jobs = planned_jobs("experiment=very_deep", multirun=True)
    preflight.check(jobs)
    nets = {
        (
            j.config.model.depth,
            j.config.model.residual,
            j.config.model.block,
            j.config.model.preact,
            j.config.model.zero_init_residual,
        )
        for j in jobs
    }
    assert nets == {
        (110, True, "basic", False, False),
        (110, False, "basic", False, False),
        (1202, True, "basic", False, False),
        (1202, True, "basic", False, True),
        (1001, True, "bottleneck", True, False),
    }
    assert len(jobs) == len({j.run_dir for j in jobs}) == 15
    assert {j.config.seed for j in jobs} == {0, 1, 2}


def test_a_glob_sweep_is_checked_in_every_option_it_picks() -> None:
    jobs = planned_jobs("model=glob(*)", "model.depth=21", multirun=True)
    assert sorted(j.config.model.name for j in jobs) == sorted(GROUP_OPTIONS["model"])
    with pytest.raises(ConfigError, match=r"^model\.depth=21 is not valid for model=cifar"):
        preflight.check(jobs)


@pytest.mark.parametrize(
    ("mode", "overrides", "ahead"),
    [
        (RunMode.RUN, (), True),
        (RunMode.MULTIRUN, (), True),  # a sweep of lists: every job was checked
        (RunMode.MULTIRUN, ("hparams_search=resnet20_lr_l2",), False),  # a search's proposals were not
        (RunMode.RUN, ("~hydra.callbacks.check_jobs",), False),  # no pre-flight configured
    ],
)
def test_a_job_is_checked_by_its_run_unless_the_preflight_checked_it(
    mode: RunMode, overrides: tuple[str, ...], ahead: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert f"{CheckJobs.__module__}.{CheckJobs.__qualname__}" == preflight.CALLBACK
    hydra = hydra_config(*overrides)
    with open_dict(hydra):
        hydra.mode = mode
    assert preflight.checked_ahead(hydra) is ahead
    cfg = tiny_config("model=mlp", "model.depth=4", "trainer.steps=2")
    checked: list[Config] = []
    monkeypatch.setattr(checks, "check", checked.append)
    run(cfg, tmp_path / "run", checked=preflight.checked_ahead(hydra))
    assert checked == ([] if ahead else [cfg])


def test_paper_preset_is_the_paper_recipe() -> None:
    cfg = compose("experiment=he2015_cifar10")
    assert (cfg.data.name, cfg.data.augment, cfg.data.normalize) == ("cifar10", True, "per_pixel_mean")
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.l2) == (0.1, 0.9, 1e-4)
    assert cfg.optim.boundaries == [32000, 48000] and cfg.trainer.steps == 64000
    assert cfg.trainer.batch_size == 128


def test_unknown_key_foreign_key_and_wrong_type_are_one_line_errors() -> None:
    with pytest.raises(
        ConfigError, match=r"^model\.dept is not a key of model=cifar; its keys are: name, depth"
    ):
        compose("+model.dept=20")
    with pytest.raises(ConfigError, match=r"^model\.dept is not a key of model=cifar"):
        compose("model.dept=20")
    with pytest.raises(
        ConfigError, match=r"^model\.width is not a key of model=cifar; its keys are: .*conv_impl$"
    ):
        compose("model.width=32")
    with pytest.raises(ConfigError, match=r"^model\.shortcut is not a key of model=mlp"):
        compose("model=mlp", "model.shortcut=B")
    with pytest.raises(
        ConfigError, match=r"^Error merging override model\.depth=twenty: Value 'twenty'.*Integer$"
    ):
        compose("model.depth=twenty")
    with pytest.raises(ConfigError, match=r"^model=resnet is not allowed; choose one of: cifar, mlp$"):
        compose("model=resnet")


def test_a_runs_config_shows_only_the_keys_of_its_family() -> None:
    assert "shortcut" not in vars(compose("model=mlp").model)
    assert "width" not in vars(compose().model)
    assert not {"image_size", "train_size"} & set(vars(compose().data))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.depth=21", r"model.depth=21 .*6n\+2.*nearest valid: 20 or 26"),
        ("model.name=vgg", r"model.name='vgg' is not allowed; choose one of: cifar, mlp"),
        ("optim.lr=nan", r"optim.lr=nan .* finite number > 0"),
        ("optim.lr=-0.1", r"optim.lr=-0.1 .* finite number > 0"),
        ("optim.l2=-1", r"optim.l2=-1.0 .* >= 0"),
        ("trainer.batch_size=0", r"trainer.batch_size=0 .* > 0"),
        ("trainer.steps=0", r"trainer.steps=0 .* > 0"),
        ("optim.schedule=step", r"optim.schedule='step' .* piecewise, cosine, constant"),
        ("optim.boundaries=[10,700]", r"optim.boundaries contains 700"),
        ("optim.boundaries=[300,100]", r"optim.boundaries=\[300, 100\] .* strictly increase"),
        ("optim.momentum=1.0", r"optim.momentum=1.0 is not allowed; it must lie in \[0, 1\)"),
        ("optim.momentum=-0.1", r"optim.momentum=-0.1 is not allowed; it must lie in \[0, 1\)"),
        ("model.name=mlp", r"model.name='mlp' cannot switch families; use model=mlp"),
    ],
)
def test_bad_values_are_one_line_errors_naming_key_and_allowed_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        check(compose(override))
    assert "\n" not in str(info.value)


def test_nan_is_parsed_as_float_not_string() -> None:
    assert math.isnan(compose("optim.lr=nan").optim.lr)


def test_each_family_brings_its_recipe_and_an_explicit_value_wins() -> None:
    mlp, cifar = compose("model=mlp"), compose()
    assert (mlp.optim.lr, mlp.optim.clip_norm, mlp.model.init) == (0.01, 1.0, "lecun")
    assert (cifar.optim.lr, cifar.optim.clip_norm) == (0.1, 1.0)
    assert compose("model=mlp", "optim.lr=0.05", "optim.clip_norm=0").optim.lr == 0.05
    assert compose("model=mlp", "optim=adamw").optim.lr == 1e-3  # AdamW's own default
    assert compose("model=mlp", "optim=adamw").optim.clip_norm == 1.0


@pytest.mark.parametrize("experiment", ["he2015_cifar10", "degradation", "identity_l2"])
def test_presets_of_the_papers_recipe_keep_it_unclipped(experiment: str) -> None:
    """The CIFAR family clips by default; the paper's recipe and the studies recorded with it do not."""
    assert compose(f"experiment={experiment}").optim.clip_norm == 0.0


def test_a_config_file_key_the_option_lacks_is_one_line_naming_file_and_keys() -> None:
    # e.g. an experiment setting a CIFAR-only key on model=mlp: the file, the key and the option's keys
    text = "In 'experiment/study': ConfigKeyError raised while composing config:\n" + (
        "Key 'shortcut' not in 'MlpModel'"
    )
    message = str(composition_error(ConfigCompositionException(text)))
    assert message == (
        "In 'experiment/study': ConfigKeyError raised while composing config: model.shortcut is not a key of "
        "model=mlp; its keys are: name, depth, residual, remat, unroll, width, init, dense_impl"
    )


def test_the_paper_recipe_composes_on_every_dataset() -> None:
    # the GPU check runs the paper's recipe on CIFAR-shaped synthetic data: every dataset has data.normalize
    for data in ("digits", "cifar10", "synthetic"):
        cfg = compose("experiment=he2015_cifar10", f"data={data}")
        assert (cfg.data.name, cfg.data.normalize, cfg.data.augment) == (data, "per_pixel_mean", True)
