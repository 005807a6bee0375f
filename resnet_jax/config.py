"""The config: one schema per group option, holding that option's defaults, and nothing else.

Each option of a config group (`model=cifar|mlp`, `data=digits|fashion_mnist|mnist|cifar10|synthetic`,
`optim=sgd|adamw`, `logger=wandb|none`) is a dataclass registered in Hydra's ConfigStore: its fields are the
only keys the option has and their values its defaults, so `model=mlp` has no `shortcut` and a run's config
shows only what applies. `conf/config.yaml` picks the options; `compose` gives library callers and tests
exactly the config a user gets from the same overrides. Value rules live with the modules that use the values
(`resnet_jax.checks` asks each); `resnet_jax.composition` composes them through Hydra. This module imports
nothing of the package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

CONF_DIR = Path(__file__).resolve().parent / "conf"  # a link to the repository's conf/, files in a wheel


@dataclass
class ModelConfig:
    """What every network family has."""

    name: str = MISSING
    depth: int = MISSING  # weighted layers: cifar 6n+2, mlp 2+2N
    residual: bool = True  # the only difference between a ResNet and its plain twin
    # rematerialise each scanned block in the backward pass (memory for compute); null = the family's auto
    remat: bool | None = None
    # unroll the block scan (compile time for run time); null = the family's auto
    unroll: bool | None = None


@dataclass
class CifarModel(ModelConfig):
    """He et al. 2015's CIFAR ResNet, depth 6n+2 (20, 32, 44, 56, 110, 1202); residual=false: its plain twin.
    Auto remat above depth 110, auto unroll up to it."""

    name: str = "cifar"
    depth: int = 20
    norm: str = "batchnorm"  # batchnorm | none
    shortcut: str = "A"  # A: subsample + zero-pad (no parameters) | B: 1x1 projection where shapes change
    preact: bool = False  # He et al. 2016 pre-activation blocks
    block: str = "basic"  # basic: two 3x3 convs, depth 6n+2 | bottleneck (He et al. 2016): 1x1-3x3-1x1, 9n+2
    # residual nets: each branch's last BatchNorm scale starts at 0, so every block starts as the identity
    zero_init_residual: bool = False
    conv_impl: str = "auto"  # auto | xla | shifted | onednn (resnet_jax.ops.kernels)


@dataclass
class MlpModel(ModelConfig):
    """The dense net of the notes, a[l+2] = relu(W a[l+1] + b + a[l]); depth = 2 + 2 * blocks. Auto: no remat
    (a block stores two [batch, width] activations) and a loop (faster than unrolled for small blocks)."""

    name: str = "mlp"
    depth: int = 10
    width: int = 64
    # kernel variance / fan_in: lecun 1 (default) | he 2 | double_he 4. Without normalisation a residual
    # stream adds every branch's output to its input: He's scale (critical for a plain ReLU chain) makes each
    # branch as large as its input and doubles the stream per block (2^24 at depth 50); LeCun's keeps the
    # growth small, so the residual net trains at depth 10, 30 and 50, while its plain twin's signal vanishes.
    init: str = "lecun"
    dense_impl: str = "auto"  # auto | xla | onednn (resnet_jax.ops.kernels)


@dataclass
class DataConfig:
    """What every dataset has."""

    name: str = MISSING
    normalize: str = "per_channel"  # per_channel (standardise) | per_pixel_mean (the paper's)
    augment: bool = False  # the paper's 4-pixel pad, random crop and horizontal flip (on device)
    # images held out of the training split, always the same ones, to choose a recipe without the test set;
    # evaluated beside it as val/loss, val/error (0: none)
    validation: int = 0


@dataclass
class DigitsData(DataConfig):
    """scikit-learn's real 8x8 handwritten digits: 1437 train / 360 test, no download."""

    name: str = "digits"
    test_fraction: float = 0.2  # held-out share of the 1797 images
    split_seed: int = 0  # the fixed split


@dataclass
class Cifar10Data(DataConfig):
    """The official cifar-10-python.tar.gz under `root` (MD5-checked); data.download=true fetches it."""

    name: str = "cifar10"
    root: str = "~/.cache/resnet_jax"
    download: bool = False
    md5: str = "c58f30108f718f92721af3b95e74349a"
    normalize: str = "per_pixel_mean"
    augment: bool = True


@dataclass
class IdxData(DataConfig):
    """The four IDX files of MNIST's distribution format under `root` (gzipped or not), 60,000 / 10,000
    28x28 grey images of 10 classes (resnet_jax/data/idx.py)."""

    root: str = MISSING


@dataclass
class FashionMnistData(IdxData):
    """Zalando's Fashion-MNIST, checksummed; Debian's `dataset-fashion-mnist` puts it in `root`. Augmented by
    default with the 4-pixel pad, random crop and horizontal flip that the published residual entries use."""

    name: str = "fashion_mnist"
    root: str = "/usr/share/datasets/fashion-mnist"
    augment: bool = True


@dataclass
class MnistData(IdxData):
    """LeCun's handwritten digits, 28x28 (not flipped: a mirrored digit is another glyph)."""

    name: str = "mnist"
    root: str = "~/.cache/resnet_jax/mnist"


@dataclass
class SyntheticData(DataConfig):
    """Learnable random images of any shape (CIFAR shapes by default), for tests and speed runs."""

    name: str = "synthetic"
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    train_size: int = 1024
    test_size: int = 256
    split_seed: int = 0  # the class prototypes and samples


# What each network family brings to the optimiser: the keys below default to `${recipe:<family>,<key>}`, so
# `model=mlp` alone trains with the MLP's recipe while any explicit `optim.<key>=...` still wins.
#   cifar: the paper's lr 0.1, with the gradient norm clipped at 1: at lr 0.1 without warm-up the first
#          updates of a deep net are large enough to decide the run by the seed (ResNet-56: 12.3 %
#          train error with seed 11, 0 % with seed 12); clipped, 5 of 5 seeds reach 0 % at depths 20, 56, 110.
#   mlp:   no normalisation: the loss is not scale-invariant in the weights, so lr 0.1 overshoots (the run
#          diverges within 20 steps) and the first steps of a deep net need their gradient clipped (norm 1).
FAMILY_RECIPES: dict[str, dict[str, float]] = {
    "cifar": {"sgd_lr": 0.1, "clip_norm": 1.0},
    "mlp": {"sgd_lr": 0.01, "clip_norm": 1.0},
}


def add_option(group: str, name: str, schema: type, recipe: dict[str, float] | None = None) -> None:
    """Make `schema` the option `name` of `group`: how a model family (`models.register`, bringing its
    optimiser `recipe`) or a dataset (`data.register`) defined outside this module adds its config."""
    GROUP_OPTIONS[group][name] = schema
    if recipe is not None:
        FAMILY_RECIPES[name] = dict(recipe)


def family_recipe(family: str, key: str) -> float:
    """`${recipe:family,key}`: a family's value for an optimiser key that defers to it."""
    return FAMILY_RECIPES[family][key]


@dataclass
class OptimConfig:
    """What every optimiser has: learning rate, schedule, warm-up, L2 and clipping."""

    name: str = MISSING
    lr: float = MISSING
    l2: float = 0.0  # adds l2/2 * sum ||W||^2 to the loss; 0 disables
    # what L2 (and AdamW's weight decay) applies to: kernels (the paper's) | all (every parameter, BatchNorm's
    # scale and shift and the biases too: PyTorch's `weight_decay`)
    l2_scope: str = "kernels"
    schedule: str = MISSING  # piecewise | cosine | constant
    boundaries: list[int] | None = None  # piecewise: steps where lr *= decay; null: 50 % and 75 %
    decay: float = 0.1  # piecewise: lr multiplier at each boundary
    # clip the global gradient norm to this before the update; 0 disables; the family's recipe by default
    clip_norm: float = "${recipe:${model.name},clip_norm}"  # type: ignore[assignment]
    warmup_steps: int = 0  # 0 disables warm-up
    warmup_lr: float = 0.01  # lr during (constant) or at the start of (linear) the warm-up
    warmup: str = "constant"  # constant (the paper's ResNet-110 recipe) | linear


@dataclass
class SgdOptim(OptimConfig):
    """SGD with momentum 0.9, L2 1e-4 in the loss, lr /10 at 50 % and 75 % of the steps (He et al. 2015)."""

    name: str = "sgd"
    lr: float = "${recipe:${model.name},sgd_lr}"  # type: ignore[assignment] - the family's: cifar 0.1, mlp 0.01
    momentum: float = 0.9
    nesterov: bool = False
    l2: float = 1e-4
    schedule: str = "piecewise"


@dataclass
class AdamwOptim(OptimConfig):
    """AdamW with decoupled weight decay on kernels and a cosine schedule."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl and summary.json, which are always written."""

    name: str = MISSING


@dataclass
class WandbLogger(LoggerConfig):
    """Weights & Biases, offline by default (`wandb sync` uploads later); WANDB_MODE wins over `mode`."""

    name: str = "wandb"
    project: str | None = None  # null: WANDB_PROJECT, else resnet_jax
    entity: str | None = None  # null: WANDB_ENTITY, else the W&B account's default
    mode: str = "offline"  # offline | online | disabled
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 30.0  # seconds to wait for the W&B server before training without it


@dataclass
class NoLogger(LoggerConfig):
    """No W&B: metrics.jsonl and summary.json only."""

    name: str = "none"


@dataclass
class TrainerConfig:
    steps: int = 600
    batch_size: int = 128
    eval_every: int = 100  # evaluate on the test split every N steps and at the end
    log_every: int = 20  # steps per compiled call; metrics reach the host only here
    eval_batch_size: int = 1000
    # save the training state at the first chunk end at or after every N steps, and at the end; 0: at the end
    checkpoint_every: int = 100
    keep_checkpoints: int = 2  # newest checkpoints kept in <run_dir>/checkpoints
    dtype: str = "float32"  # float32 | bfloat16 (compute; parameters stay float32)
    progress: bool = True


@dataclass
class ProbeConfig:
    every: int = 100  # probe at step 0, every N steps and at the end; 0 disables
    batch_size: int = 128  # the fixed probe batch: the first N training examples, not augmented


@dataclass
class Config:
    """The whole run; the groups are chosen by `conf/config.yaml`'s defaults list (or by `compose`)."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    logger: LoggerConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0  # initialisation and data order
    name: str = "default"  # the sweep: W&B group and multirun/<name>/
    # what a sweeper minimises or maximises: a metric of the run's final evaluation (resnet_jax.objective);
    # null: val/error with a validation split (data.validation > 0), else test/error
    optimized_metric: str | None = None


# Every option of every group: the name users type, and the schema that holds its keys and defaults.
GROUP_OPTIONS: dict[str, dict[str, type]] = {
    "model": {"cifar": CifarModel, "mlp": MlpModel},
    "data": {
        "digits": DigitsData,
        "fashion_mnist": FashionMnistData,
        "mnist": MnistData,
        "cifar10": Cifar10Data,
        "synthetic": SyntheticData,
    },
    "optim": {"sgd": SgdOptim, "adamw": AdamwOptim},
    "logger": {"wandb": WandbLogger, "none": NoLogger},
}


def as_dict(cfg: Any) -> dict[str, Any]:
    """A config (or one of its sections) as plain data: what W&B and the run directory record."""
    return dataclasses.asdict(cfg)


# Keys that change how a run is run, stored or shown, never its results: they may differ between the
# attempts of one run (a resumed or requeued job), so they name neither its directory
# (`excluded_from_run_name`) nor its identity (`resnet_jax.identity`). Each is tested to leave a run's
# metrics rows, summary numbers and checkpoints bit for bit as they were (tests/test_identity.py). Not here,
# because they change the last bits of a result: the kernel choices (`model.conv_impl`, `model.dense_impl`),
# `model.remat`, `model.unroll` and `trainer.eval_batch_size` (a convolution's per-example output depends
# on the batch's shape).
RESULT_NEUTRAL = (
    "name",  # the sweep's name: it places the directory, so it is already the same
    "optimized_metric",  # what a sweeper reads from the summary
    "logger",  # where metrics go besides the run directory
    "trainer.progress",
    "trainer.checkpoint_every",  # never ends a chunk of its own (loop.passed)
    "trainer.keep_checkpoints",
    "data.root",  # where the same (checksummed) files are read from
    "data.download",
)
# group choices that are not config keys of their own: their values are in the config where they matter
NAMELESS_GROUPS = ("experiment", "launcher", "hparams_search")


def _dotted_keys(prefix: str) -> list[str]:
    """`prefix` and every key below it that an override can name, across the options of its group."""
    group, _, rest = prefix.partition(".")
    if rest or group not in GROUP_OPTIONS:
        return [prefix]
    fields = {f.name for schema in GROUP_OPTIONS[group].values() for f in dataclasses.fields(schema)}
    return [prefix, *(f"{prefix}.{name}" for name in sorted(fields))]


def excluded_from_run_name() -> list[str]:
    """`hydra.job.config.override_dirname.exclude_keys`: the result-neutral keys (every key of a neutral
    group) and the nameless groups, so that changing one between attempts keeps the run's directory."""
    return [*NAMELESS_GROUPS, *(key for prefix in RESULT_NEUTRAL for key in _dotted_keys(prefix))]
