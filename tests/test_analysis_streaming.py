"""Streaming reads and Monte Carlo error bookkeeping shared by the analyses."""

import numpy as np
import pytest

from interplay.analysis.monte_carlo import GroupSums, jackknife, mc_groups, mean_covariance, ratio_se
from interplay.analysis.posterior_files import iter_chain_blocks, network_layout, read_run_config
from interplay.testing.posteriors import layer_widths, make_run, prior_draws, prior_scales, write_posterior


def test_chain_groups_and_batch_means():
    many = mc_groups(25, 10, max_groups=5)
    assert many.method == "chains" and many.n_groups == 5 and many.n_batches == 1
    assert np.bincount(many.chain_group).tolist() == [5] * 5
    few = mc_groups(3, 100)
    assert few.method == "batch_means" and few.n_batches == 7 and few.n_groups == 21
    assert few.batch_sizes.sum() == 100


def test_group_sums_match_direct_batch_means():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 100, 2))
    groups = mc_groups(3, 100)
    sums = GroupSums(groups, (2,))
    sums.add(0, values[:2])
    sums.add(2, values[2:])
    np.testing.assert_allclose(sums.mean(), values.mean(axis=(0, 1)))
    batches = np.split(values, groups.batch_starts[1:], axis=1)
    assert len(batches) == 7 and all(13 <= b.shape[1] <= 15 for b in batches)
    batch_means = np.stack([b.mean(axis=1) for b in batches], axis=1).reshape(-1, 2)
    sizes = np.tile([b.shape[1] for b in batches], 3)
    weights = sizes / sizes.sum()
    direct = np.sqrt(21 / 20 * np.sum(weights[:, None] ** 2 * (batch_means - values.mean(axis=(0, 1))) ** 2, axis=0))
    np.testing.assert_allclose(sums.se(), direct)


def test_ratio_se_equal_groups_and_jackknife_of_a_mean():
    rng = np.random.default_rng(1)
    group_means = rng.normal(size=12)
    counts = np.full(12, 10.0)
    se = ratio_se(group_means * counts, counts)
    assert se == pytest.approx(group_means.std(ddof=1) / np.sqrt(12))
    estimate, jk = jackknife(lambda m: m, [group_means * counts], counts)
    assert estimate == pytest.approx(group_means.mean()) and jk == pytest.approx(se)
    cov = mean_covariance(np.stack([group_means, 2 * group_means], axis=1) * counts[:, None], counts)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), [se, 2 * se])


def test_blocks_cover_every_chain_once(tmp_path):
    widths = layer_widths(2, [3], 1)
    scales = prior_scales(widths, 1.0)
    params = prior_draws(np.random.default_rng(2), widths, scales, 9, 4)
    run = make_run("blocks", hidden=[3], chains=9)
    path = write_posterior(tmp_path / "blocks.nc", params, run, scales=scales)
    seen = []
    for first, block in iter_chain_blocks(path, "posterior", ["kernel_0"], max_bytes=100):
        seen.extend(range(first, first + len(block["kernel_0"])))
        np.testing.assert_array_equal(block["kernel_0"], params["kernel_0"][first:first + len(block["kernel_0"])])
    assert seen == list(range(9))
    assert read_run_config(path)["name"] == "blocks"
    with pytest.raises(KeyError, match="no variables"):
        next(iter_chain_blocks(path, "posterior", ["kernel_7"]))


def test_layout_takes_scales_from_attrs_else_from_the_run(tmp_path):
    widths = layer_widths(2, [3], 1)
    scales = prior_scales(widths, [0.5, 2.0], 0.3)
    params = prior_draws(np.random.default_rng(3), widths, scales, 2, 3)
    run = make_run("noattrs", hidden=[3], scale=[0.5, 2.0], bias_scale=0.3)
    annotated = network_layout(write_posterior(tmp_path / "a.nc", params, run, scales=scales), run)
    bare_path = write_posterior(tmp_path / "b.nc", params, run)  # no prior_scale attrs at all
    bare = network_layout(bare_path, run)
    assert annotated == bare
    assert [(la.kernel_scale, la.bias_scale) for la in bare] == [(0.5, 0.3), (2.0, 0.3)]
    with pytest.raises(ValueError, match="no prior_scale attr"):
        network_layout(bare_path, {"prior": {}})
    flat_run = make_run("flat", hidden=[3], bias_prior="flat")
    flat = network_layout(write_posterior(tmp_path / "c.nc", params, flat_run), flat_run)
    assert [la.bias_scale for la in flat] == [None, None]
