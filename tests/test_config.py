"""Every option of every config group composes into a valid, typed config equal to its schema's defaults;
bad values are one line naming the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from resnet_jax.checks import check
from resnet_jax.config import (
    GROUP_OPTIONS,
    CifarModel,
    Config,
    DigitsData,
    ProbeConfig,
    SgdOptim,
    TrainerConfig,
    WandbLogger,
    compose,
)
from resnet_jax.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g, options in GROUP_OPTIONS.items() for o in options]
)
def test_every_option_composed_from_the_command_line_equals_its_programmatic_construction(
    group: str, option: str
) -> None:
    """One place for defaults: `group=option` gives exactly the schema's own defaults, nothing else."""
    cfg = compose(f"{group}={option}")
    assert getattr(cfg, group) == GROUP_OPTIONS[group][option]()
    if option != "cifar10":  # CIFAR-10's check looks for its archive on disk
        check(cfg)


def test_the_default_config_is_the_programmatic_default_resnet20_on_digits() -> None:
    expected = Config(model=CifarModel(), data=DigitsData(), optim=SgdOptim(), logger=WandbLogger(),
                      trainer=TrainerConfig(), probe=ProbeConfig())  # fmt: skip
    cfg = compose()
    assert cfg == expected
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
