"""Deep-ensemble warm start: every chain's member trained with AdamW, all members at once (vmap).

Each member minimises the mean negative log likelihood of minibatches (decoupled weight decay is
AdamW's), shuffling the training set with its own key every epoch, and keeps the parameters of its
best validation NLL; it stops after `patience` epochs without improvement or `max_epochs`. The
epoch loop is one `lax.while_loop` per group of members (groups of a fixed width, `chain_group_width`)
that runs while any member of the group is still training; members that have stopped are frozen, so a
member's result depends only on its own key, never on the others, bit for bit. The loop runs in chunks of
epochs (stage ``warmstart`` of `interplay.samplers.checkpoint`: saved, resumed, the same bits).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interplay.models import init_params, pointwise_log_likelihood
from interplay.samplers import chain_group_width, pad_chains
from interplay.samplers.checkpoint import Checkpoint, run_stage

WARMSTART_KEYS = ("lr", "weight_decay", "batch_size", "max_epochs", "patience")


def _check_cfg(cfg: Mapping) -> None:
    missing = [k for k in WARMSTART_KEYS if k not in cfg]
    if missing:
        raise KeyError(f"warm-start config lacks {missing} (needs {list(WARMSTART_KEYS)})")
    for key in ("batch_size", "max_epochs", "patience"):
        if int(cfg[key]) < 1:
            raise ValueError(f"warm-start {key} must be a positive integer, got {cfg[key]!r}")
    if not float(cfg["lr"]) > 0:
        raise ValueError(f"warm-start lr must be positive, got {cfg['lr']!r}")


def mean_nll(model, params, x, y) -> jnp.ndarray:
    """Mean negative log likelihood of (x, y) under one parameter set."""
    return -jnp.mean(pointwise_log_likelihood(model, params, x, y))


def ensemble_programs(model, cfg: Mapping, n_train: int):
    """The warm start's two compiled programs, for members in groups (a leading group axis):
    ``init_groups(grouped_keys, data)`` -> the training state, and ``advance(grouped_keys, state, data,
    first, count)`` -> the state after epochs ``[first, first + count)`` (the epoch range is traced, so every
    chunk of epochs runs this one program); ``data = (x_train, y_train, x_valid, y_valid)``."""
    batch_size = min(int(cfg["batch_size"]), n_train)
    n_batches = n_train // batch_size  # drop-last; each epoch drops a different random remainder
    patience = int(cfg["patience"])
    optimiser = optax.adamw(float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))

    def init_member(key):
        params = init_params(model, jax.random.fold_in(key, 0))
        return params, optimiser.init(params)

    def train_epoch(params, opt_state, key, epoch, data):
        x_train, y_train, x_valid, y_valid = data
        order = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 1), epoch), n_train)
        batches = order[: n_batches * batch_size].reshape(n_batches, batch_size)

        def step(carry, batch):
            params, opt_state = carry
            grads = jax.grad(mean_nll, argnums=1)(model, params, x_train[batch], y_train[batch])
            updates, opt_state = optimiser.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state, mean_nll(model, params, x_valid, y_valid)

    def keep_if(mask, new, old):
        return jax.tree.map(lambda n, o: jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o),
                            new, old)

    def init_group(keys, data):
        n_chain = keys.shape[0]
        params, opt_state = jax.vmap(init_member)(keys)
        best_loss = jax.vmap(lambda p: mean_nll(model, p, data[2], data[3]))(params)
        best_loss = jnp.where(jnp.isfinite(best_loss), best_loss, jnp.inf)
        return {"params": params, "opt_state": opt_state, "best_params": params, "best_loss": best_loss,
                "wait": jnp.zeros(n_chain, jnp.int32), "active": jnp.ones(n_chain, bool),
                "epochs": jnp.zeros(n_chain, jnp.int32), "epoch": jnp.int32(0)}

    def advance_group(keys, state, until, data):
        # Epochs until `until` or until no member of the group trains.
        def cond(state):
            return (state["epoch"] < until) & jnp.any(state["active"])

        def body(state):
            active = state["active"]
            params, opt_state, val_loss = jax.vmap(train_epoch, in_axes=(0, 0, 0, None, None))(
                state["params"], state["opt_state"], keys, state["epoch"], data)
            improved = active & (val_loss < state["best_loss"])
            wait = jnp.where(improved, 0, state["wait"] + active)
            return {
                "params": keep_if(active, params, state["params"]),
                "opt_state": keep_if(active, opt_state, state["opt_state"]),
                "best_params": keep_if(improved, params, state["best_params"]),
                "best_loss": jnp.where(improved, val_loss, state["best_loss"]),
                "wait": wait, "active": active & (wait < patience),
                "epochs": state["epochs"] + active, "epoch": state["epoch"] + 1,
            }

        return jax.lax.while_loop(cond, body, state)

    @jax.jit
    def init_groups(grouped_keys, data):
        return jax.lax.map(lambda keys: init_group(keys, data), grouped_keys)

    @jax.jit
    def advance(grouped_keys, state, data, first, count):
        until = jax.lax.optimization_barrier(first + count)
        return jax.lax.map(lambda args: advance_group(args[0], args[1], until, data), (grouped_keys, state))

    return init_groups, advance


def train_ensemble_with_info(model, prior, x_train, y_train, x_valid, y_valid, keys, cfg: Mapping, *,
                             progress: Callable[[str, int, int], None] | None = None,
                             group_width: int | None = None, checkpoint: Checkpoint | None = None,
                             stage: str = "warmstart"):
    """`train_ensemble`, also returning the number of epochs each member trained (chain,); numpy arrays.

    `group_width` fixes the members trained together (default `chain_group_width`: 4 on a CPU, all on a
    GPU). Epochs run in chunks of about ``checkpoint.chunk_steps`` minibatch steps
    (`interplay.samplers.checkpoint`: saved and resumed as stage `stage`, the same bits either way);
    `progress` is called on the host after each chunk.
    """
    del prior  # the members are trained on the likelihood; AdamW's decay is their only regulariser
    _check_cfg(cfg)
    x_train, y_train = jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train)
    x_valid, y_valid = jnp.asarray(x_valid, jnp.float32), jnp.asarray(y_valid)
    if x_valid.shape[0] == 0:  # no validation split: early-stop on the training NLL
        x_valid, y_valid = x_train, y_train
    n_train = x_train.shape[0]
    if n_train == 0:
        raise ValueError("warm start needs at least one training point")
    data = (x_train, y_train, x_valid, y_valid)
    n_batches = n_train // min(int(cfg["batch_size"]), n_train)
    max_epochs = int(cfg["max_epochs"])
    init_groups, advance = ensemble_programs(model, cfg, n_train)

    keys = jnp.asarray(keys)
    # Members train in groups of a fixed width (padded; one while loop each), so a member's arithmetic has
    # the same shapes, hence the same bits, whatever the number of members trained with it (DESIGN.md).
    width = group_width or chain_group_width(None, keys.shape[0], jax.devices()[0].platform)
    n_chain = keys.shape[0]
    n_groups = -(-n_chain // width)
    grouped_keys = pad_chains(keys, n_groups * width).reshape(n_groups, width, *keys.shape[1:])

    checkpoint = checkpoint if checkpoint is not None else Checkpoint()
    done = checkpoint.output(stage)
    if done is None:
        state = None if checkpoint.resume(stage) is not None else init_groups(grouped_keys, data)
        state = run_stage(
            checkpoint, stage, lambda state, first, count: advance(grouped_keys, state, data, first, count), state,
            max_epochs, chunk=max(1, checkpoint.chunk_steps // max(1, n_batches)),
            finished=lambda state: not bool(np.asarray(state["active"]).any()),
            progress=None if progress is None else (lambda epoch: progress("warmstart", epoch, max_epochs)))

        def members(leaf):
            return np.asarray(leaf).reshape(n_groups * width, *leaf.shape[2:])[:n_chain]

        done = jax.tree.map(members, (state["best_params"], state["best_loss"], state["epochs"]))
        checkpoint.finish(stage, done)
        checkpoint.between_stages()
    if progress is not None:
        progress("warmstart", max_epochs, max_epochs)
    return done


def warmstart_grad_evals(epochs, n_train: int, batch_size: int):
    """Minibatch gradient evaluations of members that trained `epochs` epochs."""
    return epochs * (n_train // min(batch_size, n_train))


def train_ensemble(model, prior, x_train, y_train, x_valid, y_valid, keys, cfg: Mapping, *,
                   progress: Callable[[str, int, int], None] | None = None):
    """Train one AdamW member per key (vectorised): (params with a leading chain axis, val_loss (chain,)).

    cfg: lr, weight_decay, batch_size, max_epochs, patience (early stopping on validation NLL).
    `val_loss` is each member's best validation NLL (inf if it never was finite). `prior` is
    accepted for a uniform sampler interface; the members see the prior only through AdamW's decay.
    """
    params, val_loss, _ = train_ensemble_with_info(model, prior, x_train, y_train, x_valid, y_valid, keys,
                                                   cfg, progress=progress)
    return params, val_loss
