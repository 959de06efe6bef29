"""The Jacobian of the network function with respect to the parameters, and its null space.

The authors' appendix (config ``jacobian_one_two_one_relu.yaml``: a 1-2-1 ReLU net without biases on the
1-D toy set, 200 points, NUTS, 12 chains) evaluates J = d f(x_n) / d theta on the training inputs at a
chain's posterior mean, splits parameter space by its SVD into the image (row space) and the null space,
and plots the centred draws projected onto both. Directions in the null space leave the function on the
data unchanged to first order: the rescaling orbits of homogeneous units, dead units and redundant units.

Known answer (`symmetry_null_dimension`, one hidden layer, ReLU or identity): group the hidden units by
their activation pattern on the inputs (mask m_g). A dead unit (active nowhere) has all of its
fan_in + bias + K parameters in the null space. Live units with one mask share the input-side column space
U_g (x) col(M_g) (M_g = the masked inputs [x, 1], U_g = span of their outgoing weights) and the output
side R^K (x) col(H_g) (H_g their activations, col(H_g) inside col(M_g)), so the group's columns span
q r + K p - q p dimensions (q = rank U_g, r = rank M_g, p = rank H_g): k (fan_in + bias + K) parameters
minus that is the group's null space, one rescaling per unit plus (k - 1) r reallocations for k units
with proportional activations. Groups have disjoint parameters, so the sum is a lower bound of the
null-space dimension; it is exact when the groups' spans and the output-bias columns are independent
(always for nets without biases; for the 1-M-1 ReLU net without biases it is 2M minus the number of
input signs the live units cover).

Memory: one chain's draws at a time (`read_chain_subset`) and at most `max_inputs` training inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from interplay.analysis.dirichlet import train_inputs
from interplay.analysis.posterior_files import (
    network_layout,
    posterior_counts,
    read_chain_subset,
    read_run_config,
    run_name,
)
from interplay.analysis.tables import write_table
from interplay.specs import ACTIVATIONS, HOMOGENEOUS_ACTIVATIONS

DEFAULT_RTOL = 1e-8  # singular values below rtol * largest are zero (float64 Jacobian of exact symmetries)

DERIVATIVES = {
    "relu": lambda z: (z > 0).astype(np.float64),
    "identity": np.ones_like,
    "tanh": lambda z: 1.0 - np.tanh(z) ** 2,
}


def parameter_names(layers) -> list[str]:
    """Variables in the Jacobian's column order: kernel_0, bias_0, kernel_1, ..."""
    return [n for spec in layers for n in (spec.kernel, spec.bias) if n is not None]


def network_jacobian(params: Mapping[str, np.ndarray], x: np.ndarray, activation: str,
                     names: Sequence[str]) -> np.ndarray:
    """J (N, K, P): derivative of the K network outputs at each of the N inputs with respect to the
    parameters `names` (each flattened row-major, in that order), by backpropagation in float64."""
    if activation not in DERIVATIVES or activation not in ACTIVATIONS:
        raise ValueError(f"no derivative for activation {activation!r}; known: {sorted(DERIVATIVES)}")
    n_layers = sum(1 for n in names if n.startswith("kernel_"))
    act = ACTIVATIONS[activation]
    h, z = [np.asarray(x, dtype=np.float64)], []
    for layer in range(n_layers):
        pre = h[-1] @ np.asarray(params[f"kernel_{layer}"], dtype=np.float64)
        if f"bias_{layer}" in params:
            pre = pre + np.asarray(params[f"bias_{layer}"], dtype=np.float64)
        z.append(pre)
        if layer < n_layers - 1:
            h.append(act(pre))
    n, k = z[-1].shape
    grad = np.broadcast_to(np.eye(k), (n, k, k)).copy()  # d output / d z_{last}
    blocks = {}
    for layer in range(n_layers - 1, -1, -1):
        blocks[f"kernel_{layer}"] = np.einsum("ni,nkj->nkij", h[layer], grad).reshape(n, k, -1)
        blocks[f"bias_{layer}"] = grad
        if layer > 0:
            kernel = np.asarray(params[f"kernel_{layer}"], dtype=np.float64)
            grad = np.einsum("nkj,ij->nki", grad, kernel) * DERIVATIVES[activation](z[layer - 1])[:, None, :]
    return np.concatenate([blocks[name] for name in names], axis=2)


def numerical_rank(singular_values: np.ndarray, rtol: float = DEFAULT_RTOL) -> int:
    s = np.asarray(singular_values)
    return int(np.sum(s > rtol * s.max())) if s.size and s.max() > 0 else 0


def _rank(a: np.ndarray, rtol: float) -> int:
    return numerical_rank(np.linalg.svd(a, compute_uv=False), rtol) if a.size else 0


def symmetry_null_dimension(params: Mapping[str, np.ndarray], x: np.ndarray, activation: str,
                            rtol: float = DEFAULT_RTOL) -> int:
    """Null-space dimension of the Jacobian derived from the units' symmetries (module docstring) for a
    net with one hidden layer and a homogeneous activation: dead units, and per activation-pattern group
    k (fan_in + bias + K) - (q r + K p - q p). A lower bound in general, exact without biases."""
    if activation not in HOMOGENEOUS_ACTIVATIONS:
        raise ValueError(f"the symmetry count needs a homogeneous activation {HOMOGENEOUS_ACTIVATIONS}, "
                         f"got {activation!r}")
    if "kernel_2" in params or "kernel_1" not in params:
        raise ValueError("the symmetry count is derived for nets with exactly one hidden layer")
    w = np.asarray(params["kernel_0"], dtype=np.float64)
    v = np.asarray(params["kernel_1"], dtype=np.float64)
    has_bias = "bias_0" in params
    x = np.asarray(x, dtype=np.float64)
    inputs = np.hstack([x, np.ones((len(x), 1))]) if has_bias else x
    pre = x @ w + (np.asarray(params["bias_0"], dtype=np.float64) if has_bias else 0.0)
    masks = pre > 0 if activation == "relu" else np.ones_like(pre, dtype=bool)
    per_unit = w.shape[0] + int(has_bias) + v.shape[1]
    n_outputs = v.shape[1]
    null = 0
    groups: dict[bytes, list[int]] = {}
    for unit in range(w.shape[1]):
        if not masks[:, unit].any():
            null += per_unit  # dead: every column of the unit is zero
        else:
            groups.setdefault(np.packbits(masks[:, unit]).tobytes(), []).append(unit)
    for units in groups.values():
        rows = masks[:, units[0]]
        r = _rank(inputs[rows], rtol)
        q = _rank(v[units], rtol)
        p = _rank(np.where(masks[:, units], pre[:, units], 0.0)[rows], rtol)
        null += len(units) * per_unit - (q * r + n_outputs * p - q * p)
    return int(null)


def jacobian_summary(params: Mapping[str, np.ndarray], x: np.ndarray, activation: str, names: Sequence[str],
                     rtol: float = DEFAULT_RTOL) -> tuple[np.ndarray, np.ndarray, int]:
    """(singular values, right singular vectors V (P, P), numerical rank) of the stacked (N K, P) Jacobian."""
    jac = network_jacobian(params, x, activation, names)
    jac = jac.reshape(-1, jac.shape[-1])
    _, s, vh = np.linalg.svd(jac, full_matrices=True)
    return s, vh.T, numerical_rank(s, rtol)


def _flatten(draws: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """{name: (D, ...)} -> (D, P) in the Jacobian's column order."""
    return np.concatenate([draws[n].reshape(draws[n].shape[0], -1) for n in names], axis=1)


def _unflatten(theta: np.ndarray, shapes: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = theta[start:start + size].reshape(shape)
        start += size
    return out


def jacobian_table(posterior_path, x_train: np.ndarray, run: Mapping | None = None, *, chain: int = 0,
                   max_draws: int = 200, max_chains: int = 10, max_inputs: int = 200, max_points: int = 2000,
                   rtol: float = DEFAULT_RTOL, seed: int = 0) -> pd.DataFrame:
    """Jacobian null space of one run (module docstring), as rows of kind

    - ``summary``: at chain `chain`'s posterior mean: rank, null_dim, symmetry_null_dim, and the share of the
      chain's centred draws' variance in the null space (null_variance_fraction);
    - ``singular_value``: the singular values at that mean (index, value);
    - ``draw``: rank, null_dim and symmetry_null_dim at ~`max_draws` draws of the first `max_chains` chains;
    - ``projection``: up to `max_points` centred draws of chain `chain` on the first two image and null
      directions (image_1, image_2, null_1, null_2) and two raw coordinates: the first input weight
      kernel_0[0, 0] (param_in) and the first output weight kernel_{last}[0, 0] (param_out).
    """
    run = dict(run) if run is not None else read_run_config(posterior_path)
    layers = network_layout(posterior_path, run)
    if len(layers) < 2:
        raise ValueError(f"{posterior_path}: the Jacobian null space needs a hidden layer (the net has none)")
    activation = run.get("model", {}).get("activation", "relu")
    x = np.asarray(x_train, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != layers[0].fan_in:
        raise ValueError(f"x_train must be (N, {layers[0].fan_in}), got shape {x.shape}")
    rng = np.random.default_rng(seed)
    if len(x) > max_inputs:
        x = x[np.sort(rng.choice(len(x), max_inputs, replace=False))]
    n_chains, n_draws = posterior_counts(posterior_path)
    if not 0 <= chain < n_chains:
        raise ValueError(f"chain {chain} is not in {posterior_path} ({n_chains} chains)")
    names = parameter_names(layers)
    countable = len(layers) == 2 and activation in HOMOGENEOUS_ACTIVATIONS

    def read_chain(c):
        return {n: read_chain_subset(posterior_path, "posterior", n, np.array([c]))[0] for n in names}

    def symmetry(params):
        return symmetry_null_dimension(params, x, activation, rtol) if countable else np.nan

    rows = []
    draws = read_chain(chain)
    shapes = {n: draws[n].shape[1:] for n in names}
    flat = _flatten(draws, names)
    mean = flat.mean(axis=0)
    mean_params = _unflatten(mean, shapes)
    s, basis, rank = jacobian_summary(mean_params, x, activation, names, rtol)
    n_params = flat.shape[1]
    centred = flat - mean
    coords = centred @ basis
    total = float(np.sum(coords**2))
    null_share = float(np.sum(coords[:, rank:] ** 2) / total) if total > 0 else np.nan
    rows.append({"kind": "summary", "chain": chain, "n_params": n_params, "n_rows": len(x) * layers[-1].fan_out,
                 "rank": rank, "null_dim": n_params - rank, "symmetry_null_dim": symmetry(mean_params),
                 "null_variance_fraction": null_share, "rtol": rtol})
    rows += [{"kind": "singular_value", "chain": chain, "index": i, "value": float(v)} for i, v in enumerate(s)]
    keep = np.unique(np.linspace(0, n_draws - 1, min(n_draws, max_points)).round().astype(np.int64))
    last = layers[-1].kernel
    for d in keep:
        row = {"kind": "projection", "chain": chain, "draw": int(d),
               "param_in": float(draws["kernel_0"][d].flat[0]), "param_out": float(draws[last][d].flat[0])}
        for i in range(2):
            row[f"image_{i + 1}"] = float(coords[d, i]) if i < rank else np.nan
            row[f"null_{i + 1}"] = float(coords[d, rank + i]) if rank + i < n_params else np.nan
        rows.append(row)
    n_sel = min(n_chains, max_chains)
    per_chain = max(1, min(n_draws, max_draws // n_sel))
    draw_index = np.unique(np.linspace(0, n_draws - 1, per_chain).round().astype(np.int64))
    for c in range(n_sel):
        chain_draws = draws if c == chain else read_chain(c)
        for d in draw_index:
            params = {n: chain_draws[n][d] for n in names}
            jac = network_jacobian(params, x, activation, names)
            r = numerical_rank(np.linalg.svd(jac.reshape(-1, n_params), compute_uv=False), rtol)
            rows.append({"kind": "draw", "chain": c, "draw": int(d), "rank": r, "null_dim": n_params - r,
                         "symmetry_null_dim": symmetry(params)})
    table = pd.DataFrame(rows)
    table.insert(0, "run", run_name(run, posterior_path))
    return table


def analyse_jacobian(posterior_path, out_path, run: Mapping | None = None, *, x_train=None, data_path=None,
                     **kwargs) -> pd.DataFrame:
    """Snakemake entry point: Jacobian null-space table (needs the training inputs: `x_train` or the
    prepared split `data_path`)."""
    table = jacobian_table(posterior_path, train_inputs(x_train, data_path, "Jacobian"), run, **kwargs)
    write_table(table, out_path)
    return table


__all__ = ["analyse_jacobian", "jacobian_summary", "jacobian_table", "network_jacobian",
           "numerical_rank", "symmetry_null_dimension"]
