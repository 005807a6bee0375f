"""Structured config schemas (Hydra/OmegaConf check keys and types) and cross-field validation.

Hydra rejects an unknown key or a wrong type while composing; `validate` rejects values that are out of
range or inconsistent with each other, each as one `ConfigError` line naming the key and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from resnet_jax.errors import ConfigError

# CPU kernels: oneDNN custom calls, shifted matmuls (conv only) or XLA's own ops; auto picks per backend
CONV_IMPLS = ("auto", "xla", "shifted", "onednn")
DENSE_IMPLS = ("auto", "xla", "onednn")


@dataclass
class ModelConfig:
    name: str = "cifar"  # cifar | mlp
    depth: int = 20  # weighted layers: cifar 6n+2, mlp 2+2N
    residual: bool = True  # the only difference between a ResNet and its plain twin
    width: int = 64  # mlp hidden width
    init: str = "he"  # mlp kernel init: he (std sqrt(2/fan_in)) | lecun (sqrt(1/fan_in): vanishing signal)
    norm: str = "batchnorm"  # batchnorm | none (cifar)
    shortcut: str = "A"  # A: subsample + zero-pad (no parameters) | B: 1x1 projection where shapes change
    preact: bool = False  # He et al. 2016 pre-activation blocks
    # rematerialise each scanned block in the backward pass (memory for compute); null = auto: on for cifar
    # nets above depth 110 (ResNet-1202 at batch 128 then needs ~3 GiB of temporaries instead of ~18 GiB)
    remat: bool | None = None
    # unroll the block scan (compile time for run time); null = auto: cifar nets up to depth 110
    unroll: bool | None = None
    conv_impl: str = "auto"  # auto (onednn, else shifted, on CPU; xla elsewhere) | xla | shifted | onednn
    dense_impl: str = "auto"  # mlp blocks: auto (onednn, else xla, on CPU; xla elsewhere) | xla | onednn


@dataclass
class DataConfig:
    name: str = "digits"  # digits | cifar10 | synthetic
    root: str = "~/.cache/resnet_jax"  # where cifar-10-python.tar.gz is looked for / downloaded to
    download: bool = False  # cifar10: fetch the official archive if it is missing
    md5: str = "c58f30108f718f92721af3b95e74349a"  # cifar10: expected archive checksum
    normalize: str = "per_channel"  # per_channel (standardise) | per_pixel_mean (the paper's)
    augment: bool = False  # the paper's 4-pixel pad, random crop and horizontal flip
    test_fraction: float = 0.2  # digits: held-out share of the 1797 images
    split_seed: int = 0  # digits: the fixed split
    image_size: int = 8  # synthetic
    channels: int = 1  # synthetic
    num_classes: int = 10  # synthetic
    train_size: int = 512  # synthetic
    test_size: int = 128  # synthetic


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    l2: float = 1e-4  # adds l2/2 * sum ||W||^2 over kernels (not biases, not BN) to the loss; 0 disables
    weight_decay: float = 0.0  # adamw: decoupled weight decay on kernels
    schedule: str = "piecewise"  # piecewise | cosine | constant
    boundaries: list[int] | None = None  # piecewise: steps where lr /= 1/decay; default 50% and 75%
    decay: float = 0.1  # piecewise: lr multiplier at each boundary
    clip_norm: float = 0.0  # clip the global gradient norm to this before the update; 0 disables
    warmup_steps: int = 0  # 0 disables warm-up
    warmup_lr: float = 0.01  # lr during (constant) or at the start of (linear) the warm-up
    warmup: str = "constant"  # constant (the paper's ResNet-110 recipe) | linear


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none (metrics.jsonl and summary.json are always written)
    project: str = "resnet_jax"
    entity: str | None = None
    mode: str = "offline"  # offline | online | disabled; the WANDB_MODE environment variable wins
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 30.0  # seconds to wait for the W&B server before training without it


@dataclass
class TrainerConfig:
    steps: int = 600
    batch_size: int = 128
    eval_every: int = 100  # evaluate on the test split every N steps and at the end
    log_every: int = 20  # steps per compiled call; metrics reach the host only here
    eval_batch_size: int = 1000
    checkpoint_every: int = 100  # save the training state every N steps (and at the end); 0: at the end only
    keep_checkpoints: int = 2  # newest checkpoints kept in <run_dir>/checkpoints
    dtype: str = "float32"  # float32 | bfloat16 (compute; parameters stay float32)
    progress: bool = True


@dataclass
class ProbeConfig:
    every: int = 100  # probe at step 0, every N steps and at the end; 0 disables
    batch_size: int = 128  # the fixed probe batch: the first N training examples, not augmented


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    name: str = "default"  # the sweep (W&B group, multirun directory)


def register_schemas() -> None:
    """Make the schema available to `conf/config.yaml` as the first entry of its defaults list."""
    ConfigStore.instance().store(name="schema", node=Config)


def to_config(cfg: DictConfig) -> Config:
    """The typed config. Merging onto the schema again catches keys appended with `+key=value`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(
            f"invalid config: {first_line} (see the keys in conf/ and resnet_jax/config.py)"
        ) from None
    return OmegaConf.to_object(merged)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} is not allowed; it must be a finite number {bound}")


def validate(cfg: Config) -> None:
    """Reject every value the run cannot use, before anything is built or written."""
    from resnet_jax.data import train_size  # imported here: both import this module
    from resnet_jax.models.depth import cifar_blocks_per_stage, mlp_blocks

    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.trainer
    _choice("model.name", m.name, ("cifar", "mlp"))
    (cifar_blocks_per_stage if m.name == "cifar" else mlp_blocks)(m.depth)
    _positive("model.width", m.width)
    _choice("model.norm", m.norm, ("batchnorm", "none"))
    _choice("model.init", m.init, ("he", "lecun"))
    _choice("model.shortcut", m.shortcut, ("A", "B"))
    _choice("model.conv_impl", m.conv_impl, CONV_IMPLS)
    _choice("model.dense_impl", m.dense_impl, DENSE_IMPLS)
    _choice("data.name", d.name, ("digits", "cifar10", "synthetic"))
    _choice("data.normalize", d.normalize, ("per_channel", "per_pixel_mean"))
    if not 0 < d.test_fraction < 1:
        raise ConfigError(f"data.test_fraction={d.test_fraction} is not allowed; it must be in (0, 1)")
    for key in ("image_size", "channels", "num_classes", "train_size", "test_size"):
        _positive(f"data.{key}", getattr(d, key))
    _choice("optim.name", o.name, ("sgd", "adamw"))
    _choice("optim.schedule", o.schedule, ("piecewise", "cosine", "constant"))
    _choice("optim.warmup", o.warmup, ("constant", "linear"))
    _positive("optim.lr", o.lr)
    for key in ("momentum", "l2", "weight_decay", "decay", "warmup_steps", "clip_norm"):
        _positive(f"optim.{key}", getattr(o, key), allow_zero=True)
    if o.warmup_steps:
        _positive("optim.warmup_lr", o.warmup_lr)
    for b in o.boundaries or ():
        if not 0 < b < t.steps:
            raise ConfigError(
                f"optim.boundaries contains {b}; each boundary must lie in (0, trainer.steps={t.steps})"
            )
    _choice("logger.name", cfg.logger.name, ("wandb", "none"))
    _choice("logger.mode", cfg.logger.mode, ("offline", "online", "disabled"))
    for key in ("steps", "batch_size", "eval_every", "log_every", "eval_batch_size", "keep_checkpoints"):
        _positive(f"trainer.{key}", getattr(t, key))
    _positive("trainer.checkpoint_every", t.checkpoint_every, allow_zero=True)
    _choice("trainer.dtype", t.dtype, ("float32", "bfloat16"))
    available = train_size(d)
    if t.batch_size > available:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size} is larger than the {d.name} training split "
            f"({available} examples); choose 1..{available}"
        )
    _positive("probe.every", cfg.probe.every, allow_zero=True)
    _positive("probe.batch_size", cfg.probe.batch_size)
