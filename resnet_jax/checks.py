"""`check(cfg)`: every rule a config must meet before anything is built or written, asked of the module
that owns each section, plus the rules between sections (a batch that fits the training split)."""

from __future__ import annotations

from resnet_jax import data, loop, models, objective, optim, rules, tracking
from resnet_jax.config import Config
from resnet_jax.errors import ConfigError


def check(cfg: Config) -> None:
    """Raise ConfigError (one line naming the key and what is allowed) for the first rule `cfg` breaks."""
    rules.seed("seed", cfg.seed)
    rules.folder_name("name", cfg.name)
    models.check(cfg.model)
    data.check(cfg.data)
    optim.check(cfg.optim, cfg.trainer.steps)
    tracking.check(cfg.logger)
    loop.check(cfg.trainer, cfg.probe)
    objective.check(cfg)
    if cfg.probe.every and not models.takes_probes(cfg.model):
        raise ConfigError(
            f"probe.every={cfg.probe.every} is not allowed; model={cfg.model.name} takes no per-layer "
            "probes: set probe.every=0"
        )
    available = data.train_size(cfg.data)
    if cfg.trainer.batch_size > available:
        raise ConfigError(
            f"trainer.batch_size={cfg.trainer.batch_size} is larger than the {cfg.data.name} training split "
            f"({available} examples); choose 1..{available}"
        )
