"""Monte Carlo errors of estimates streamed over chain blocks, and seeded sub-samples of draws.

Errors come from *groups* of draws that are (close to) independent of each other:
- with >= `min_chains` chains, a group is a chain or a contiguous set of chains (chains are
  independent, so the spread of group means gives the standard error directly);
- with fewer chains, each chain is cut into contiguous draw batches (batch means, the classical
  estimate of the asymptotic variance of an autocorrelated chain mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_CHAINS_FOR_CHAIN_SE = 10
TARGET_BATCH_GROUPS = 20


# ----------------------------------------------------------------------------- Monte Carlo groups


@dataclass(frozen=True)
class McGroups:
    """Assignment of (chain, draw) to independent groups for Monte Carlo standard errors.

    Group id of (chain c, draw d) = ``chain_group[c] * n_batches + batch(d)``.
    """

    n_chains: int
    n_draws: int
    chain_group: np.ndarray     # (n_chains,) chain -> chain group
    batch_starts: np.ndarray    # (n_batches,) first draw of each batch
    method: str                 # "chains" | "batch_means"

    @property
    def n_batches(self) -> int:
        return len(self.batch_starts)

    @property
    def n_groups(self) -> int:
        return int(self.chain_group.max() + 1) * self.n_batches

    @property
    def batch_sizes(self) -> np.ndarray:
        return np.diff(np.append(self.batch_starts, self.n_draws))

    def reduce_draws(self, values: np.ndarray) -> np.ndarray:
        """(c, D, ...) -> (c, n_batches, ...): sums over the draws of each batch."""
        if values.shape[1] != self.n_draws:
            raise ValueError(f"expected {self.n_draws} draws, got an array of shape {values.shape}")
        if self.n_batches == 1:
            return values.sum(axis=1, keepdims=True, dtype=np.float64)
        return np.add.reduceat(values, self.batch_starts, axis=1, dtype=np.float64)

    def group_ids(self, first_chain: int, n_chains: int) -> np.ndarray:
        """(c, n_batches) group ids of a block of chains."""
        groups = self.chain_group[first_chain:first_chain + n_chains]
        return groups[:, None] * self.n_batches + np.arange(self.n_batches)[None, :]


def mc_groups(n_chains: int, n_draws: int, *, min_chains: int = MIN_CHAINS_FOR_CHAIN_SE,
              max_groups: int | None = None, target_groups: int = TARGET_BATCH_GROUPS,
              min_batch: int = 5) -> McGroups:
    """Groups for standard errors: chains (merged into <= `max_groups` contiguous sets) when there are
    at least `min_chains`; otherwise batch means with ~`target_groups` batches over all chains."""
    if n_chains < 1 or n_draws < 1:
        raise ValueError(f"need at least one chain and one draw, got {n_chains} chains x {n_draws} draws")
    if n_chains >= min_chains:
        n = n_chains if max_groups is None else min(n_chains, max_groups)
        chain_group = (np.arange(n_chains) * n) // n_chains
        return McGroups(n_chains, n_draws, chain_group, np.zeros(1, dtype=np.int64), "chains")
    n_batches = max(1, min(math.ceil(target_groups / n_chains), n_draws // min_batch))
    starts = (np.arange(n_batches) * n_draws) // n_batches
    return McGroups(n_chains, n_draws, np.arange(n_chains), starts.astype(np.int64), "batch_means")


class GroupSums:
    """Per-group sums of a per-draw statistic of fixed shape, filled block by block."""

    def __init__(self, groups: McGroups, shape: tuple[int, ...] = ()):
        self.groups = groups
        self.sums = np.zeros((groups.n_groups, *shape))
        self.counts = np.zeros(groups.n_groups)

    def add(self, first_chain: int, values: np.ndarray) -> None:
        """Add the per-draw statistic of a chain block, `values` of shape (c, D, *shape)."""
        n = values.shape[0]
        batch_sums = self.groups.reduce_draws(values)
        ids = self.groups.group_ids(first_chain, n).ravel()
        np.add.at(self.sums, ids, batch_sums.reshape(len(ids), *self.sums.shape[1:]))
        np.add.at(self.counts, ids, np.tile(self.groups.batch_sizes, n))

    def mean(self) -> np.ndarray:
        return self.sums.sum(axis=0) / self.counts.sum()

    def se(self) -> np.ndarray:
        return ratio_se(self.sums, self.counts)


def ratio_se(group_sums: np.ndarray, group_counts: np.ndarray) -> np.ndarray:
    """Standard error of a pooled mean from independent groups: sqrt(G/(G-1) sum_g w_g^2 (m_g - m)^2)
    with weights w_g = n_g / N (for equal groups: sd of the group means / sqrt(G))."""
    used = group_counts > 0
    sums, counts = group_sums[used], group_counts[used]
    n_groups = len(counts)
    if n_groups < 2:
        return np.full(group_sums.shape[1:], np.nan)
    total = counts.sum()
    mean = sums.sum(axis=0) / total
    group_means = sums / counts.reshape(-1, *[1] * (sums.ndim - 1))
    weights = (counts / total).reshape(-1, *[1] * (sums.ndim - 1))
    return np.sqrt(n_groups / (n_groups - 1) * np.sum(weights**2 * (group_means - mean) ** 2, axis=0))


def mean_covariance(group_sums: np.ndarray, group_counts: np.ndarray) -> np.ndarray:
    """Covariance matrix of the pooled mean vector (group_sums (G, K)), the multivariate ratio_se."""
    used = group_counts > 0
    sums, counts = group_sums[used], group_counts[used]
    n_groups = len(counts)
    k = sums.shape[1]
    if n_groups < 2:
        return np.full((k, k), np.nan)
    total = counts.sum()
    mean = sums.sum(axis=0) / total
    residual = (sums / counts[:, None] - mean) * (counts / total)[:, None]
    return n_groups / (n_groups - 1) * residual.T @ residual


def jackknife(statistic, group_sums: Sequence[np.ndarray], group_counts: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Estimate and delete-one-group jackknife standard error of ``statistic(*means)``.

    `group_sums` are arrays with a leading group axis; ``statistic`` maps the pooled means
    (arrays without the group axis, or with a leading axis of leave-one-out means) to the estimate.
    """
    used = group_counts > 0
    sums = [s[used] for s in group_sums]
    counts = group_counts[used]
    total_count = counts.sum()
    totals = [s.sum(axis=0) for s in sums]
    estimate = np.asarray(statistic(*[t / total_count for t in totals]))
    n_groups = len(counts)
    if n_groups < 2:
        return estimate, np.full(estimate.shape, np.nan)
    loo_counts = total_count - counts
    loo_means = [(t[None] - s) / loo_counts.reshape(-1, *[1] * (s.ndim - 1)) for t, s in zip(totals, sums)]
    loo = np.asarray(statistic(*loo_means))
    se = np.sqrt((n_groups - 1) / n_groups * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0))
    return estimate, se


def ess_mean_se(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, se, ess) of per-draw statistics (chain, draw, *shape) with ArviZ's ESS for the mean."""
    import arviz as az
    import xarray as xr

    draws = np.asarray(draws, dtype=np.float64)
    mean = draws.mean(axis=(0, 1))
    dims = ("chain", "draw", *[f"dim_{i}" for i in range(draws.ndim - 2)])
    if draws.shape[1] < 4:
        return mean, np.full(mean.shape, np.nan), np.full(mean.shape, np.nan)
    ess = np.asarray(az.ess(xr.Dataset({"s": (dims, draws)}), method="mean")["s"].values, dtype=np.float64)
    sd = draws.reshape(-1, *draws.shape[2:]).std(axis=0, ddof=1)
    return mean, sd / np.sqrt(ess), ess


# ----------------------------------------------------------------------------- sub-samples


def bernoulli_keep(rng: np.random.Generator, shape: tuple[int, ...], fraction: float) -> np.ndarray:
    """Keep mask with independent probability `fraction`: a seeded, streaming sub-sample whose size is
    binomial around fraction * N (fraction = n_max / N_total keeps ~n_max items in all)."""
    if fraction >= 1.0:
        return np.ones(shape, dtype=bool)
    return rng.random(shape) < fraction
