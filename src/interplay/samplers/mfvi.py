"""Mean-field variational inference baseline: NumPyro SVI with an AutoNormal guide, one fit per chain.

The NumPyro model puts an improper flat site on every parameter leaf and adds the full log joint
(`make_logdensity`: log likelihood + log prior) as a factor, so the ELBO is exactly
E_q[log p(y, theta | x)] + H[q] for the study's prior and likelihood. Each chain is an independent
fit (own key, guide means started at `init_params` of its own key), vectorised with vmap; its
draws are `draws` samples from the fitted guide. The paper's UCI baseline is ONE fit per seed
(``chains: 1``); with more chains a run pools independent fits into one mixture (an ensemble of VI fits,
which scores better than a single fit), labelled as pooled in the UCI table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.distributions import constraints
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.svi import SVIState
from numpyro.optim import optax_to_numpyro

from interplay.models import init_params, make_logdensity

MFVI_KEYS = ("steps", "lr", "draws")
PROGRESS_UPDATES = 20  # the fit runs in this many jitted pieces, so progress can be reported between them


def _check_cfg(cfg: Mapping) -> None:
    missing = [k for k in MFVI_KEYS if k not in cfg]
    if missing:
        raise KeyError(f"mfvi config lacks {missing} (needs {list(MFVI_KEYS)})")
    for key in ("steps", "draws"):
        if int(cfg[key]) < 1:
            raise ValueError(f"mfvi {key} must be a positive integer, got {cfg[key]!r}")
    if not float(cfg["lr"]) > 0:
        raise ValueError(f"mfvi lr must be positive, got {cfg['lr']!r}")
    if not float(cfg.get("weight_decay", 0.0)) >= 0:
        raise ValueError(f"mfvi weight_decay must be >= 0, got {cfg['weight_decay']!r}")


def run_mfvi(model, prior, x, y, keys, cfg: Mapping, *,
             progress: Callable[[str, int, int], None] | None = None):
    """Fit one mean-field Gaussian per chain key: (draws {leaf: (chain, draw, ...)}, stats {name: (chain,)}).

    cfg: steps (AdamW steps, one full-batch ELBO gradient each), lr, draws (guide samples per chain),
    optional weight_decay (AdamW's decoupled decay, default 0: Adam) and init_scale (initial guide
    standard deviation, default 0.01). A fixed noise (`sigma`) reaches the fit through ``model.sigma``. stats: `elbo` (mean of
    the last 10% of steps), `diverged` (non-finite final loss), `n_grad_evals`, seconds.
    """
    _check_cfg(cfg)
    steps, n_draws = int(cfg["steps"]), int(cfg["draws"])
    logdensity = make_logdensity(model, prior, x, y)
    keys = jnp.asarray(keys)
    shapes = jax.eval_shape(lambda k: init_params(model, k), keys[0])

    def numpyro_model():
        params = {name: numpyro.sample(name, dist.ImproperUniform(constraints.real, (), s.shape))
                  for name, s in shapes.items()}
        numpyro.factor("log_joint", logdensity(params))

    guide = AutoNormal(numpyro_model, init_scale=float(cfg.get("init_scale", 0.01)))
    svi = SVI(numpyro_model, guide, optax_to_numpyro(optax.adamw(float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.0)))), Trace_ELBO())

    @jax.jit
    @jax.vmap
    def init(key):
        state = svi.init(jax.random.fold_in(key, 0))
        # Start the guide means at the warm-start initialisation (init_to_uniform's U(-2, 2) is no NN init).
        params = svi.optim.get_params(state.optim_state)
        start = init_params(model, jax.random.fold_in(key, 1))
        params = {**params, **{f"{name}_{guide.prefix}_loc": value for name, value in start.items()}}
        return SVIState(svi.optim.init(params), state.mutable_state, state.rng_key)

    def fit_piece(state, length):
        return jax.lax.scan(lambda s, _: svi.update(s), state, None, length=length)

    fit_piece = jax.jit(jax.vmap(fit_piece, in_axes=(0, None)), static_argnums=1)

    @jax.jit
    @jax.vmap
    def draw(state, key):
        params = svi.get_params(state)
        return guide.sample_posterior(jax.random.fold_in(key, 2), params, sample_shape=(n_draws,))

    start = time.perf_counter()
    state = init(keys)
    piece = max(1, -(-steps // PROGRESS_UPDATES))
    losses, done = [], 0
    while done < steps:
        length = min(piece, steps - done)
        state, piece_losses = fit_piece(state, length)
        losses.append(piece_losses)
        done += length
        if progress is not None:
            progress("mfvi", done, steps)
    losses = jnp.concatenate(losses, axis=1)  # (chain, steps)
    draws = jax.block_until_ready(draw(state, keys))
    seconds = time.perf_counter() - start

    n_chain = keys.shape[0]
    tail = np.asarray(losses[:, -max(1, steps // 10):], np.float64)
    stats = {
        "elbo": -tail.mean(axis=1),
        "diverged": ~np.isfinite(np.asarray(losses[:, -1])),
        "n_grad_evals": np.full(n_chain, steps, np.int64),
        "warmup_seconds": np.zeros(n_chain),
        "sampling_seconds": np.full(n_chain, seconds),
    }
    return draws, stats
