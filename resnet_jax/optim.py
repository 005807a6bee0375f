"""The Optax optimiser, its learning-rate schedule and its L2 term, from config.

L2 regularisation (`optim.l2`) is part of the loss (`l2_penalty`), as in the paper: with SGD it is the
classic coupled weight decay. AdamW's `optim.weight_decay` is decoupled. Both apply to `optim.l2_scope`: the
kernels (the paper's choice: biases and BatchNorm's scale and shift are free) or every parameter (PyTorch's
`weight_decay`, which also pulls BatchNorm's scale towards 0).
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from resnet_jax import rules
from resnet_jax.config import AdamwOptim, OptimConfig, SgdOptim
from resnet_jax.errors import ConfigError

SCHEDULES = ("piecewise", "cosine", "constant")
# the keys a compiled step takes as arguments, not constants: runs that differ only in them (and the seed)
# share one program, and a population's members hold each their own
TRACED_KEYS = ("lr", "l2", "momentum", "weight_decay", "warmup_lr")
L2_SCOPES = ("kernels", "all")
WARMUPS = ("constant", "linear")


def check(cfg: OptimConfig, steps: int) -> None:
    """Every hyperparameter's domain, and boundaries that fall inside a run of `steps` steps."""
    rules.positive("optim.lr", cfg.lr)
    rules.one_of("optim.schedule", cfg.schedule, SCHEDULES)
    rules.one_of("optim.warmup", cfg.warmup, WARMUPS)
    rules.one_of("optim.l2_scope", cfg.l2_scope, L2_SCOPES)
    for key in ("l2", "decay", "warmup_steps", "clip_norm"):
        rules.positive(f"optim.{key}", getattr(cfg, key), allow_zero=True)
    if cfg.warmup_steps:
        rules.positive("optim.warmup_lr", cfg.warmup_lr)
    if isinstance(cfg, SgdOptim):
        rules.in_interval("optim.momentum", cfg.momentum, 0, 1)
    if isinstance(cfg, AdamwOptim):
        rules.positive("optim.weight_decay", cfg.weight_decay, allow_zero=True)
    boundaries = list(cfg.boundaries or ())
    if boundaries != sorted(set(boundaries)):
        raise ConfigError(f"optim.boundaries={boundaries} is not allowed; the steps must strictly increase")
    for b in boundaries:
        if not 0 < b < steps:
            raise ConfigError(
                f"optim.boundaries contains {b}; each boundary must lie in (0, trainer.steps={steps})"
            )


def traced(cfgs: list[OptimConfig]) -> dict[str, np.ndarray]:
    """Each traced key's value per run of `cfgs` (equal but for these values), float32 on axis 0. Without
    momentum (0: the optimiser then keeps no trace of it, another program) momentum is not among them."""
    first = cfgs[0]
    keys = [k for k in TRACED_KEYS if hasattr(first, k) and (k != "momentum" or first.momentum)]
    return {key: np.array([getattr(c, key) for c in cfgs], np.float32) for key in keys}


def is_kernel(path: tuple, _leaf: jax.Array) -> bool:
    """Weights of convs and dense layers; biases and BatchNorm scale/shift are not regularised."""
    return any(getattr(entry, "key", None) == "kernel" for entry in path)


def regularised(scope: str):
    """Which parameters L2 and weight decay apply to: `path, leaf -> bool`."""
    return is_kernel if scope == "kernels" else lambda _path, _leaf: True


def l2_penalty(params, scope: str = "kernels") -> jax.Array:
    """sum ||W||^2 over the parameters in `scope`."""
    chosen = regularised(scope)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return sum(jax.numpy.sum(jax.numpy.square(leaf)) for path, leaf in leaves if chosen(path, leaf))


def schedule(cfg: OptimConfig, steps: int) -> optax.Schedule:
    """Main schedule (piecewise /10, cosine or constant), optionally behind a warm-up phase."""
    if cfg.schedule == "piecewise":
        boundaries = cfg.boundaries or [steps // 2, (3 * steps) // 4]
        main = optax.piecewise_constant_schedule(cfg.lr, {int(b): cfg.decay for b in boundaries if b > 0})
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(cfg.lr, max(1, steps - cfg.warmup_steps))
    else:
        main = optax.constant_schedule(cfg.lr)
    if not cfg.warmup_steps:
        return main
    if cfg.warmup == "linear":
        warm = optax.linear_schedule(cfg.warmup_lr, cfg.lr, cfg.warmup_steps)
    else:  # He et al. 2015, ResNet-110: 0.01 until training gets going, then back to 0.1
        warm = optax.constant_schedule(cfg.warmup_lr)
    if cfg.schedule == "cosine":
        return optax.join_schedules([warm, main], [cfg.warmup_steps])
    return lambda step: jax.numpy.where(step < cfg.warmup_steps, warm(step), main(step))


def build(cfg: OptimConfig, steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimiser and the schedule it follows (the schedule is also logged as `lr`)."""
    lr = schedule(cfg, steps)
    if isinstance(cfg, AdamwOptim):
        chosen = regularised(cfg.l2_scope)
        tx = optax.adamw(
            lr,
            weight_decay=cfg.weight_decay,
            mask=lambda params: jax.tree_util.tree_map_with_path(chosen, params),
        )
    else:
        # a traced momentum (a population member's) is used as it is: momentum 0 and > 0 never share a program
        momentum = cfg.momentum if isinstance(cfg.momentum, jax.Array) else cfg.momentum or None
        tx = optax.sgd(lr, momentum=momentum, nesterov=cfg.nesterov)
    if cfg.clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    return tx, lr
