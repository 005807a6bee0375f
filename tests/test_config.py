"""Every option of every config group composes into a valid, typed config; bad values are one line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

import resnet_jax.train  # noqa: F401  (registers the schema and the run_name resolver)
from resnet_jax.config import Config, to_config, validate
from resnet_jax.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "data", "optim", "logger", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=False)
    return to_config(cfg)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_of_every_group_composes_and_validates(group: str, option: str) -> None:
    cfg = composed(f"{group}={option}")
    assert isinstance(cfg, Config)
    validate(cfg)
    if group != "experiment":
        assert getattr(cfg, group).name == option


def test_default_config_is_resnet20_on_digits() -> None:
    cfg = composed()
    assert (cfg.model.name, cfg.model.depth, cfg.model.residual, cfg.data.name) == (
        "cifar",
        20,
        True,
        "digits",
    )
    assert cfg.logger.mode == "offline"


def test_paper_preset_is_the_paper_recipe() -> None:
    cfg = composed("experiment=he2015_cifar10")
    assert (cfg.data.name, cfg.data.augment, cfg.data.normalize) == ("cifar10", True, "per_pixel_mean")
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.l2) == (0.1, 0.9, 1e-4)
    assert cfg.optim.boundaries == [32000, 48000] and cfg.trainer.steps == 64000
    assert cfg.trainer.batch_size == 128


def test_unknown_key_and_wrong_type_are_rejected_by_the_schema() -> None:
    with pytest.raises(ConfigCompositionException, match="Could not override 'model.dept'"):
        composed("model.dept=20")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        appended = compose("config", overrides=["+model.dept=20"])
    with pytest.raises(ConfigError, match="invalid config: Key 'dept' not in 'ModelConfig'"):
        to_config(appended)
    with pytest.raises(ConfigCompositionException, match="model.depth=twenty") as info:
        composed("model.depth=twenty")
    assert "could not be converted to Integer" in str(info.value.__cause__)


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
    ],
)
def test_bad_values_are_one_line_errors_naming_key_and_allowed_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        validate(composed(override))
    assert "\n" not in str(info.value)


def test_nan_is_parsed_as_float_not_string() -> None:
    assert math.isnan(composed("optim.lr=nan").optim.lr)
