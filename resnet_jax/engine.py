"""Training and evaluation as pure, compiled functions over an explicit state.

The NNX module is split once into a static graph and array state; inside `jit` it is merged back, so
the Python graph walk happens at trace time only. One call of `train_chunk` runs K steps under
`lax.scan`: batches are gathered by index from the device-resident dataset and augmented on device,
metrics are accumulated on device, and the host sees them only at the end of the chunk.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from resnet_jax import distributed, faults, optim
from resnet_jax.config import OptimConfig
from resnet_jax.data.augment import pad_crop_flip
from resnet_jax.optim import l2_penalty


class TrainState(NamedTuple):
    step: jax.Array
    params: nnx.State  # trainable parameters
    model_state: nnx.State  # everything else the model carries (BatchNorm running statistics)
    opt_state: optax.OptState


def cross_entropy_and_errors(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example softmax cross-entropy and 0/1 error, in float32 whatever the compute dtype."""
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss, (jnp.argmax(logits, axis=-1) != labels).astype(jnp.float32)


class Engine:
    """Compiled train/eval functions for one model, optimiser and device-resident dataset."""

    def __init__(
        self,
        model: nnx.Module,
        optim_cfg: OptimConfig,
        steps: int,
        *,
        x_train: np.ndarray | jax.Array,
        y_train: np.ndarray | jax.Array,
        augment: bool,
        dtype: Any,
        seed: int,
        mesh: Mesh | None = None,
    ):
        self.graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
        # the optimiser with this run's values: its state's structure; the compiled step builds its own from
        # the traced values (`member_step`), so runs that differ only in them and the seed share one program
        self.optim_cfg, self.steps = optim_cfg, steps
        self.tx, _ = optim.build(optim_cfg, steps)
        self.mesh = mesh or distributed.make_mesh()
        self.replicated = distributed.replicated(self.mesh)
        # where the state lives and how an evaluation batch is split: data parallelism (a population may
        # split its members over the devices instead)
        self.state_sharding = self.replicated
        self.eval_sharding = distributed.batch_sharded(self.mesh)
        # the whole dataset on every device, once; batches are gathered by index on device
        self.x_train = distributed.put(np.asarray(x_train), self.replicated)
        self.y_train = distributed.put(np.asarray(y_train), self.replicated)
        self.augment, self.dtype = augment, dtype
        hyper = {key: values[0] for key, values in optim.traced([optim_cfg]).items()}
        self.hyper = distributed.put_tree(hyper, self.replicated)
        self.augment_key = jax.jit(jax.random.key, out_shardings=self.replicated)(seed + 1)
        self.params = sum(leaf.size for leaf in jax.tree.leaves(params))  # not BatchNorm statistics
        self._initial = jax.device_get(
            TrainState(jnp.zeros((), jnp.int32), params, model_state, self.tx.init(params))
        )
        # a run's lifecycle (`resnet_jax.lifecycle`) steps its members through the methods below: this engine
        # has one, a `population.PopulationEngine` several, with a leading member axis on every array
        self.members = 1
        self.member_initial = [self._initial]  # each member's step-0 state on the host
        self.members_split = False  # whether each device trains whole members (a population's choice)
        self.compiled_chunk = jax.jit(self._train_chunk, donate_argnums=0)
        self.eval_batch = jax.jit(self._eval_batch)

    @property
    def devices(self) -> int:
        return self.mesh.devices.size

    def place_state(self, state: TrainState) -> TrainState:
        """Place a host-side state (fresh or restored) on the devices of the mesh."""
        return distributed.put_tree(state, self.state_sharding)

    @property
    def host_initial_state(self) -> TrainState:
        """The step-0 state on the host: the template a checkpoint is restored into."""
        return self._initial

    def initial_state(self) -> TrainState:
        """A fresh step-0 state on the devices (training donates the state it is given)."""
        return self.place_state(self._initial)

    def place_indices(self, indices: np.ndarray) -> jax.Array:
        """(K, B) host indices, the batch axis sharded over the devices."""
        return distributed.put(indices, distributed.batch_sharded(self.mesh, axis=1))

    def train_chunk(self, state: TrainState, indices: np.ndarray) -> tuple[TrainState, jax.Array]:
        """K = len(indices) training steps in one compiled call; returns the steps' rows: `{"loss": (K,),
        "error": (K,)}`, each step's training loss and error rate on its batch."""
        return self.compiled_chunk(state, *self.chunk_arguments(indices))

    def chunk_arguments(self, indices: np.ndarray) -> tuple[Any, ...]:
        """The compiled chunk's arguments after the state: the (K, B) indices placed, the run's traced
        optimiser values and its augmentation key."""
        return self.place_indices(indices), self.hyper, self.augment_key

    def stacked(self, states: list[TrainState]) -> TrainState:
        """The members' host states as the engine holds them on the devices: here the one state."""
        (state,) = states
        return self.place_state(state)

    def train_members(self, state: TrainState, indices: np.ndarray, alive: np.ndarray):
        """`train_chunk` for the lifecycle, which calls it only while its member trains: `indices` (K, 1, B);
        returns the state and the rows with a member axis: `{"loss": (K, 1), "error": (K, 1)}`."""
        state, rows = self.train_chunk(state, indices[:, 0])
        return state, jax.tree.map(lambda row: row[:, None], rows)

    def evaluate_members(self, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int):
        """`evaluate`, as a list of the members' results."""
        return [self.evaluate(state, x, y, batch_size)]

    def each_member(self, fn):
        """`fn(params, model_state, *shared)` with a leading member axis on its outputs."""
        return lambda *args: jax.tree.map(lambda value: value[None], fn(*args))

    def host_member(self, host_state: TrainState, k: int) -> TrainState:
        """Member k's state from the engine's state on the host: a single run's state, array for array."""
        return host_state

    def apply(self, params: nnx.State, model_state: nnx.State, x: jax.Array, train: bool):
        """Logits and the model state after the call (updated BatchNorm statistics when training)."""
        model = nnx.merge(self.graphdef, params, model_state, copy=True)
        logits = model(x.astype(self.dtype), train)
        return logits, nnx.state(model, nnx.Not(nnx.Param))

    def _loss(self, params, model_state, x, y, l2):
        logits, new_model_state = self.apply(params, model_state, x, train=True)
        loss, errors = cross_entropy_and_errors(logits, y)
        data_loss = loss.mean()
        total = data_loss + 0.5 * l2 * l2_penalty(params, self.optim_cfg.l2_scope)
        return total, (data_loss, errors.mean(), new_model_state)

    def member_step(
        self,
        state: TrainState,
        indices: jax.Array,
        hyper: dict,
        augment_key: jax.Array,
        data: tuple[jax.Array, jax.Array] | None = None,
    ) -> tuple[TrainState, jax.Array]:
        """One SGD step of a run with its traced optimiser values (`hyper`, `optim.traced`) and augmentation
        key: a single run's, or one population member's (`resnet_jax.population`). `data`: the training set
        as the caller holds it (inside `shard_map`, a device's own copy), else the engine's."""
        cfg = replace(self.optim_cfg, **hyper)
        tx, _ = optim.build(cfg, self.steps)
        x_train, y_train = data or (self.x_train, self.y_train)
        x, y = x_train[indices], y_train[indices]
        if self.augment:
            x = pad_crop_flip(jax.random.fold_in(augment_key, state.step), x)
        grads, (loss, error, model_state) = jax.grad(self._loss, has_aux=True)(
            state.params, state.model_state, x, y, cfg.l2
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(state.step + 1, params, model_state, opt_state), {"loss": loss, "error": error}

    def _train_chunk(self, state: TrainState, indices: jax.Array, hyper: dict, augment_key: jax.Array):
        return run_steps(lambda s, batch: self.member_step(s, batch, hyper, augment_key), state, indices)

    def _eval_batch(self, params, model_state, x, y, mask):
        logits, _ = self.apply(params, model_state, x, train=False)
        loss, errors = cross_entropy_and_errors(logits, y)
        return jnp.sum(loss * mask), jnp.sum(errors * mask)

    def evaluate(self, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, float]:
        """Mean loss and error (%) over a whole split, in fixed-size (padded, masked) sharded batches."""
        loss, error = self.evaluation_sums(state, x, y, batch_size)
        return {"loss": float(loss) / x.shape[0], "error": 100.0 * float(error) / x.shape[0]}

    def evaluation_sums(self, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int):
        """Summed loss and errors over a split (per member for a population's stacked state)."""
        n = x.shape[0]
        batch_size = -(-min(batch_size, n) // self.devices) * self.devices  # a multiple of the devices
        loss_sum = error_sum = 0.0
        for start in range(0, n, batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            valid = xb.shape[0]
            mask = np.arange(batch_size) < valid
            if valid < batch_size:
                xb = np.pad(xb, ((0, batch_size - valid),) + ((0, 0),) * (x.ndim - 1))
                yb = np.pad(yb, (0, batch_size - valid))
            xb, yb, mask = (distributed.put(a, self.eval_sharding) for a in (xb, yb, mask))
            loss, errors = self.eval_batch(state.params, state.model_state, xb, yb, mask)
            loss_sum = loss_sum + distributed.host_copy(loss).astype(np.float64)
            error_sum = error_sum + distributed.host_copy(errors).astype(np.float64)
        return loss_sum, error_sum


def run_steps(step, state, indices: jax.Array):
    """`indices` (K, ...): K steps of `step` in one call; returns the state and per-step rows.

    K = 1 compiles without any loop, for XLA's native CPU convolution, which is fast only outside
    loops (jax-ml/jax#12868); with the default CPU convolution (oneDNN), K > 1 is faster.
    """
    faults.point("tracing")  # runs while the chunk is traced for compilation, never in the compiled program
    if indices.shape[0] == 1:
        state, row = step(state, indices[0])
        return state, jax.tree.map(lambda value: value[None], row)
    return jax.lax.scan(step, state, indices)


class EpochSampler:
    """Batch indices for any step, from (seed, epoch) alone: a resumed run sees the same batches."""

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.steps_per_epoch = num_examples // batch_size
        self._cached: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_examples))
        return self._cached[1]

    def indices(self, first_step: int, count: int) -> np.ndarray:
        """(count, batch_size) int32 indices for steps first_step .. first_step + count - 1."""
        rows = []
        for step in range(first_step, first_step + count):
            epoch, position = divmod(step, self.steps_per_epoch)
            start = position * self.batch_size
            rows.append(self._permutation(epoch)[start : start + self.batch_size])
        return np.stack(rows).astype(np.int32)
