"""The appendix analyses: Jacobian null space, flat-likelihood directions, bias marginals (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from interplay.analysis import ANALYSES, NEEDS_PREPARED_DATA
from interplay.analysis.bias_marginals import bias_marginal_table, degrees_of_freedom, moment_tests
from interplay.analysis.flat_likelihood import (
    draw_flat_directions,
    flat_likelihood_table,
    mixing_sensitivity,
    rescale_units,
    zero_sum_basis,
)
from interplay.analysis.jacobian import (
    jacobian_summary,
    jacobian_table,
    network_jacobian,
    symmetry_null_dimension,
)
from interplay.analysis.monte_carlo import GroupSums, mc_groups
from interplay.testing import posteriors as syn

NAMES_121 = ["kernel_0", "kernel_1"]


def _one_two_one(a, c, b, d):
    """f(x) = a relu(b x) + c relu(d x): the authors' 1-2-1 net without biases."""
    return {"kernel_0": np.array([[b, d]], dtype=np.float64), "kernel_1": np.array([[a], [c]], dtype=np.float64)}


def _x_1d(n=200, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 1))


# ----------------------------------------------------------------------------- Jacobian


def test_network_jacobian_matches_finite_differences():
    rng = np.random.default_rng(1)
    params = {"kernel_0": rng.standard_normal((3, 4)), "bias_0": rng.standard_normal(4),
              "kernel_1": rng.standard_normal((4, 4)), "bias_1": rng.standard_normal(4),
              "kernel_2": rng.standard_normal((4, 2)), "bias_2": rng.standard_normal(2)}
    names = list(params)
    x = rng.standard_normal((7, 3))
    for activation in ("relu", "tanh", "identity"):
        jac = network_jacobian(params, x, activation, names)
        flat = np.concatenate([params[n].ravel() for n in names])

        def f(theta, activation=activation):
            p, start = {}, 0
            for n in names:
                p[n] = theta[start:start + params[n].size].reshape(params[n].shape)
                start += params[n].size
            return _forward(p, x, activation)

        eps = 1e-6
        numeric = np.stack([(f(flat + eps * e) - f(flat - eps * e)) / (2 * eps) for e in np.eye(flat.size)], axis=-1)
        np.testing.assert_allclose(jac, numeric, atol=1e-6)


def _forward(p, x, activation):
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "identity": lambda z: z}[activation]
    h = x
    for layer in range(3):
        h = h @ p[f"kernel_{layer}"] + p[f"bias_{layer}"]
        if layer < 2:
            h = act(h)
    return h


@pytest.mark.parametrize(("theta", "expected"), [
    ((1.0, 0.5, 2.0, 1.5), 3),    # both units see x > 0: rescaling x 2 + one reallocation
    ((1.0, 0.5, 2.0, -1.5), 2),   # opposite signs: the two rescalings only
    ((1.0, 0.5, 0.0, -1.5), 3),   # unit 1 dead (b = 0): its 2 directions + unit 2's rescaling
    ((0.0, 0.5, 2.0, 1.5), 3),    # zero output weight on a unit sharing its sign with the other
    ((1.0, 0.5, 0.0, 0.0), 4),    # both dead: the function is constant 0
])
def test_one_two_one_null_space_is_the_symmetry_count(theta, expected):
    """Known answer: the columns of J are multiples of relu(x) or relu(-x), so rank = number of input signs
    the live units cover and null = 4 - rank; the symmetry count derives the same number."""
    params = _one_two_one(*theta)
    x = _x_1d()
    _, _, rank = jacobian_summary(params, x, "relu", NAMES_121)
    assert 4 - rank == expected
    assert symmetry_null_dimension(params, x, "relu") == expected


def test_symmetry_count_exact_without_bias_and_a_lower_bound_with_bias():
    rng = np.random.default_rng(2)
    x1, x5 = _x_1d(200, 3), rng.standard_normal((200, 5))
    for _ in range(40):
        no_bias = {"kernel_0": rng.standard_normal((1, 5)), "kernel_1": rng.standard_normal((5, 1))}
        _, v, rank = jacobian_summary(no_bias, x1, "relu", NAMES_121)
        assert v.shape[0] - rank == symmetry_null_dimension(no_bias, x1, "relu")
        with_bias = {"kernel_0": rng.standard_normal((5, 8)), "bias_0": rng.standard_normal(8),
                     "kernel_1": rng.standard_normal((8, 2)), "bias_1": rng.standard_normal(2)}
        names = ["kernel_0", "bias_0", "kernel_1", "bias_1"]
        _, v, rank = jacobian_summary(with_bias, x5, "relu", names)
        assert v.shape[0] - rank >= symmetry_null_dimension(with_bias, x5, "relu") >= 8  # one rescaling per unit


def test_symmetry_count_refuses_what_it_does_not_cover():
    params = _one_two_one(1, 1, 1, 1)
    with pytest.raises(ValueError, match="homogeneous"):
        symmetry_null_dimension(params, _x_1d(), "tanh")
    with pytest.raises(ValueError, match="one hidden layer"):
        symmetry_null_dimension({**params, "kernel_2": np.ones((1, 1))}, _x_1d(), "relu")
    with pytest.raises(ValueError, match="no derivative"):
        network_jacobian(params, _x_1d(), "softplus", NAMES_121)


def _posterior_121(tmp_path, n_chains=4, n_draws=60, seed=0):
    """A 1-2-1 ReLU net without biases: prior draws with both first-layer weights positive in chain 0."""
    rng = np.random.default_rng(seed)
    run = syn.make_run("jac-121", hidden=[2], bias=False, likelihood="mean_regr", chains=n_chains)
    widths = [1, 2, 1]
    scales = syn.prior_scales(widths, bias=False)
    draws = syn.prior_draws(rng, widths, scales, n_chains, n_draws, dtype=np.float64)
    draws["kernel_0"][0] = np.abs(draws["kernel_0"][0])
    return syn.write_posterior(tmp_path / "jac.nc", draws, run, scales=scales), run, draws


def test_jacobian_table_on_a_posterior_file(tmp_path):
    path, run, draws = _posterior_121(tmp_path)
    x = _x_1d()
    table = jacobian_table(path, x, run, chain=0, max_draws=40, max_chains=4)
    summary = table[table["kind"] == "summary"].iloc[0]
    # chain 0's mean has both input weights positive: one sign covered -> null 3 of 4
    assert (summary["n_params"], summary["rank"], summary["null_dim"], summary["symmetry_null_dim"]) == (4, 1, 3, 3)
    per_draw = table[table["kind"] == "draw"]
    assert len(per_draw) == 40 and (per_draw["null_dim"] == per_draw["symmetry_null_dim"]).all()
    signs = np.sign(draws["kernel_0"][:, :, 0, :])  # (chain, draw, unit)
    same = signs[..., 0] == signs[..., 1]
    for _, row in per_draw.iterrows():
        assert row["null_dim"] == (3 if same[int(row["chain"]), int(row["draw"])] else 2)
    proj = table[table["kind"] == "projection"]
    assert len(proj) == 60 and proj["null_1"].notna().all() and proj["image_2"].isna().all()  # rank 1: one image dim
    sv = table[table["kind"] == "singular_value"]["value"].to_numpy()
    assert len(sv) == 4 and sv[1] < 1e-8 * sv[0]
    assert 0 <= summary["null_variance_fraction"] <= 1
    with pytest.raises(ValueError, match="chain 9"):
        jacobian_table(path, x, run, chain=9)
    with pytest.raises(ValueError, match="x_train must be"):
        jacobian_table(path, np.ones((10, 3)), run)


# ----------------------------------------------------------------------------- flat-likelihood directions


def test_rescaling_orbit_leaves_the_likelihood_exactly_unchanged():
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        from interplay.models import pointwise_log_likelihood
        from interplay.specs import ModelSpec

        rng = np.random.default_rng(4)
        model = ModelSpec(in_dim=5, hidden=(6, 4), out_dim=2, activation="relu", bias=True, likelihood="regr")
        params = {"kernel_0": rng.standard_normal((5, 6)), "bias_0": rng.standard_normal(6),
                  "kernel_1": rng.standard_normal((6, 4)), "bias_1": rng.standard_normal(4),
                  "kernel_2": rng.standard_normal((4, 2)), "bias_2": rng.standard_normal(2)}
        x, y = rng.standard_normal((50, 5)), rng.standard_normal(50)
        before = np.asarray(pointwise_log_likelihood(model, params, x, y))
        for layer in (0, 1):
            moved = rescale_units(params, layer, np.exp(rng.uniform(-2, 2, params[f"bias_{layer}"].size)))
            after = np.asarray(pointwise_log_likelihood(model, moved, x, y))
            np.testing.assert_allclose(after, before, rtol=1e-12, atol=1e-12)
            assert not np.allclose(moved[f"kernel_{layer}"], params[f"kernel_{layer}"])
    finally:
        jax.config.update("jax_enable_x64", False)
    with pytest.raises(ValueError, match="positive"):
        rescale_units(params, 0, -np.ones(6))


def test_zero_sum_basis_is_orthonormal():
    for k in (2, 3, 7):
        q = zero_sum_basis(k)
        np.testing.assert_allclose(q.T @ q, np.eye(k - 1), atol=1e-12)
        np.testing.assert_allclose(q.sum(axis=0), 0.0, atol=1e-12)


def test_mixing_sensitivity_known_answers():
    rng = np.random.default_rng(5)
    h = np.maximum(rng.standard_normal(100), 0)
    # exact duplicates: output weight can be moved between them without changing anything
    assert mixing_sensitivity(np.stack([h, h, h], axis=1)) < 1e-12
    # two units: S = |h_1 - h_2| / sqrt(2), the change per unit step along t = (1, -1) / sqrt(2)
    g = np.maximum(rng.standard_normal(100), 0)
    np.testing.assert_allclose(mixing_sensitivity(np.stack([h, g], 1)), np.linalg.norm(h - g) / np.sqrt(2))
    assert np.isnan(mixing_sensitivity(h[:, None]))


def _duplicated_net(rng, n_chains, n_draws):
    """1-5-1 ReLU draws whose units 0, 1, 2 are rescaled copies of one unit (exactly flat remixing)."""
    widths = [1, 5, 1]
    scales = syn.prior_scales(widths)
    draws = syn.prior_draws(rng, widths, scales, n_chains, n_draws, dtype=np.float64)
    for j, c in ((1, 2.0), (2, 0.5)):
        draws["kernel_0"][..., j] = c * draws["kernel_0"][..., 0]
        draws["bias_0"][..., j] = c * draws["bias_0"][..., 0]
    return draws, scales


def test_flat_directions_invariant_under_rescaling_and_zero_for_duplicates():
    rng = np.random.default_rng(6)
    draws, _ = _duplicated_net(rng, 1, 1)
    params = {n: v[0, 0] for n, v in draws.items()}
    x = _x_1d(200, 7)
    alive, clusters, s = draw_flat_directions(params, x, 0, "relu", threshold=0.999)
    big = [m for m in clusters if {0, 1, 2} <= set(m.tolist())]
    if alive[0]:
        assert big and s[clusters.index(big[0])] < 1e-10
    moved = rescale_units(params, 0, np.exp(rng.uniform(-1, 1, 5)))
    alive2, clusters2, s2 = draw_flat_directions(moved, x, 0, "relu", threshold=0.999)
    assert (alive2 == alive).all() and [m.tolist() for m in clusters2] == [m.tolist() for m in clusters]
    np.testing.assert_allclose(s2, s, atol=1e-10)


def test_flat_likelihood_table_on_a_posterior_file(tmp_path):
    rng = np.random.default_rng(8)
    draws, scales = _duplicated_net(rng, 10, 20)
    run = syn.make_run("flat-151", hidden=[5], likelihood="mean_regr", chains=10)
    path = syn.write_posterior(tmp_path / "flat.nc", draws, run, scales=scales)
    x = _x_1d(200, 9)
    table = flat_likelihood_table(path, x, run, max_draws=200, threshold=0.999)
    summary = table[table["kind"] == "summary"].iloc[0]
    per_draw = table[table["kind"] == "draw"]
    assert summary["n_draws_analysed"] == len(per_draw) == 200
    # the three copies are found whenever unit 0 is alive, and remixing them is flat (S ~ 0 in float32)
    clusters = table[table["kind"] == "cluster"]
    assert (per_draw["n_redundant"] >= 2).mean() > 0.5
    assert (clusters["s"] < 1e-3).sum() >= (per_draw["n_redundant"] >= 2).sum()
    assert summary["n_redundant_se"] > 0 and 0 < summary["frac_alive"] <= 1
    with pytest.raises(ValueError, match="homogeneous"):
        flat_likelihood_table(path, x, {**run, "model": {**run["model"], "activation": "tanh"}})


# ----------------------------------------------------------------------------- bias marginals


def _group_sums(z, groups):
    acc = GroupSums(groups, (3,))
    acc.add(0, np.stack([z.mean(-1), (z**2).mean(-1), (z < 0).mean(-1)], axis=-1))
    return acc


@pytest.mark.parametrize(("n_chains", "rho"), [(12, 0.0), (4, 0.5)])
def test_bias_moment_tests_are_calibrated_on_prior_draws(n_chains, rho):
    """Exact prior draws (iid, or AR(1) chains with batch means): the family-wise false-alarm rate of
    the three tests at nominal 0.05 stays near 0.05 (<= 0.10 over 300 replications)."""
    rng = np.random.default_rng(10)
    n_draws, units, reps = 100, 8, 300
    groups = mc_groups(n_chains, n_draws)
    df = degrees_of_freedom(groups)
    alarms = 0
    for _ in range(reps):
        z = rng.standard_normal((n_chains, n_draws, units))
        if rho:
            for d in range(1, n_draws):
                z[:, d] = rho * z[:, d - 1] + np.sqrt(1 - rho**2) * z[:, d]
        acc = _group_sums(z, groups)
        alarms += any(t["reject"] for t in moment_tests(acc.sums, acc.counts, df, level=0.05))
    assert alarms / reps <= 0.10


def test_bias_moment_tests_detect_a_wrong_scale():
    rng = np.random.default_rng(11)
    groups = mc_groups(20, 200)
    acc = _group_sums(1.15 * rng.standard_normal((20, 200, 16)), groups)
    rows = {t["statistic"]: t for t in moment_tests(acc.sums, acc.counts, degrees_of_freedom(groups))}
    assert rows["var_ratio"]["reject"] and not rows["mean"]["reject"] and not rows["frac_negative"]["reject"]
    np.testing.assert_allclose(rows["var_ratio"]["estimate"], 1.15**2, rtol=0.03)


def test_bias_marginal_table_on_prior_draws(tmp_path):
    rng = np.random.default_rng(12)
    widths = [5, 16, 16, 1]
    scales = syn.prior_scales(widths, scale=1.0, bias_scale=0.5)
    draws = syn.prior_draws(rng, widths, scales, 12, 200)
    run = syn.make_run("bias", hidden=[16, 16], likelihood="mean_regr", bias_scale=0.5, chains=12)
    path = syn.write_posterior(tmp_path / "bias.nc", draws, run, scales=scales)
    table = bias_marginal_table(path, run, max_bytes=40_000)  # several chain blocks
    verdicts = table[table["kind"] == "verdict"].set_index("variable")["verdict"]
    assert list(verdicts.index) == ["bias_0", "bias_1", "bias_2", "run"]
    assert (verdicts == "conforms").all()
    tests = table[table["kind"] == "test"]
    est = tests.set_index(["variable", "statistic"])["estimate"]
    pooled = draws["bias_1"] / 0.5
    np.testing.assert_allclose(est[("bias_1", "mean")], pooled.mean(), atol=1e-6)
    np.testing.assert_allclose(est[("bias_1", "frac_negative")], (pooled < 0).mean(), atol=1e-9)
    density = table[(table["kind"] == "density") & (table["variable"] == "bias_0")]
    width = (density["bin_hi"] - density["bin_lo"]).to_numpy()
    np.testing.assert_allclose((density["density"] * width).sum() + density["outside"].iloc[0], 1.0)
    # a shifted "posterior" deviates
    draws["bias_2"] = draws["bias_2"] - 0.5
    shifted = syn.write_posterior(tmp_path / "shifted.nc", draws, run, scales=scales)
    table = bias_marginal_table(shifted, run)
    verdicts = table[table["kind"] == "verdict"].set_index("variable")["verdict"]
    assert verdicts["bias_2"] == "deviates" and verdicts["run"] == "deviates" and verdicts["bias_0"] == "conforms"


def test_bias_marginals_refuse_nets_without_biases(tmp_path):
    path, run, _ = _posterior_121(tmp_path)
    with pytest.raises(ValueError, match="no biases"):
        bias_marginal_table(path, run)


def test_appendix_analyses_are_registered():
    assert {"bias_marginals", "flat_likelihood", "jacobian"} <= set(ANALYSES)
    assert {"flat_likelihood", "jacobian"} <= set(NEEDS_PREPARED_DATA)


def test_appendix_figures_render_from_their_tables(tmp_path):
    """Each figure draws from its analysis table alone (real tables of synthetic posteriors)."""
    from interplay.figures import render
    from interplay.figures.data import FigureData

    path, run, _ = _posterior_121(tmp_path)
    jac = tmp_path / "jacobian.csv"
    ANALYSES["jacobian"](path, jac, run, x_train=_x_1d(), max_draws=20)
    rng = np.random.default_rng(13)
    draws, scales = _duplicated_net(rng, 10, 10)
    flat_run = syn.make_run("flat-151", hidden=[5], likelihood="mean_regr", chains=10)
    flat_path = syn.write_posterior(tmp_path / "flat.nc", draws, flat_run, scales=scales)
    flat = tmp_path / "flat_likelihood.csv"
    ANALYSES["flat_likelihood"](flat_path, flat, flat_run, x_train=_x_1d(), max_draws=50, threshold=0.999)
    bias = tmp_path / "bias_marginals.csv"
    ANALYSES["bias_marginals"](flat_path, bias, flat_run)
    cases = {"jacobian": ("jac-121", run, jac), "flat_likelihood": ("flat-151", flat_run, flat),
             "bias_marginals": ("flat-151", flat_run, bias)}
    for figure, (name, r, table) in cases.items():
        data = FigureData(members=[name], runs={name: r}, tables={(name, figure): str(table)})
        outputs = {"pdf": tmp_path / f"{figure}.pdf", "png": tmp_path / f"{figure}.png"}
        render(figure, data, outputs)
        assert outputs["png"].stat().st_size > 1000
