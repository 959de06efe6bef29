"""The per-filter balancedness identity of convolutions (family `filter` of the balancedness table), on exact
prior draws of a conv net, where both of its sides are known; and which weights the terms read."""

import numpy as np
import pytest

from interplay.analysis.balancedness import balancedness_table, filter_terms
from interplay.models import ModelSpec, PriorSpec, param_shapes
from interplay.specs import ConvLayer
from interplay.testing.posteriors import make_run, write_posterior

MODEL = ModelSpec(in_dim=6 * 6 * 2, hidden=(5,), out_dim=3, activation="relu", bias=True, likelihood="class",
                  conv=(ConvLayer(3, 3, 1), ConvLayer(2, 2, 0)), image_shape=(6, 6, 2))
PRIOR = PriorSpec.build(MODEL, scale=[0.7, 1.3], conv_scale=[2.0, 0.5])


def prior_draws(n_chains, n_draws, seed=0):
    rng = np.random.default_rng(seed)
    return {name: (PRIOR.scale(name) * rng.standard_normal((n_chains, n_draws, *shape))).astype(np.float32)
            for name, shape in param_shapes(MODEL).items()}


def test_filter_terms_read_the_weights_of_each_channel():
    """Scaling filter f by a and the weights that read channel f by 1/a (the rescaling that leaves the net
    unchanged, tests/test_models_conv.py) multiplies left_f by a^2 and right_f by a^-2, nothing else."""
    draws = prior_draws(1, 2)
    a = np.array([3.0, 0.5], np.float32)
    scaled = dict(draws)
    scaled["conv_kernel_1"] = draws["conv_kernel_1"] * a
    scaled["conv_bias_1"] = draws["conv_bias_1"] * a
    scaled["kernel_0"] = draws["kernel_0"] / np.tile(a, MODEL.units[0] // 2)[:, None]
    kw = {"tau": 0.5, "bias_tau": 0.5, "tau_next": 0.7}
    left, right = filter_terms(draws["conv_kernel_1"], draws["conv_bias_1"], draws["kernel_0"], **kw)
    left_s, right_s = filter_terms(scaled["conv_kernel_1"], scaled["conv_bias_1"], scaled["kernel_0"], **kw)
    np.testing.assert_allclose(left_s, left * a**2, rtol=1e-5)
    np.testing.assert_allclose(right_s, right / a**2, rtol=1e-5)
    b = np.array([2.0, 1.0, 0.25], np.float32)  # the first convolution's filters and the next conv's channels
    left0, right0 = filter_terms(draws["conv_kernel_0"], None, draws["conv_kernel_1"], tau=1, bias_tau=None,
                                 tau_next=1)
    left0_s, right0_s = filter_terms(draws["conv_kernel_0"] * b, None, draws["conv_kernel_1"] / b[:, None],
                                     tau=1, bias_tau=None, tau_next=1)
    np.testing.assert_allclose(left0_s, left0 * b**2, rtol=1e-5)
    np.testing.assert_allclose(right0_s, right0 / b**2, rtol=1e-5)


def test_the_filter_identity_holds_on_prior_draws(tmp_path):
    draws = prior_draws(40, 50, seed=1)
    run = make_run(hidden=(5,), likelihood="class", chains=40, scale=[0.7, 1.3])
    run["model"].update(conv=[{"filters": 3, "kernel": 3, "padding": 1}, {"filters": 2, "kernel": 2, "padding": 0}],
                        image_shape=[6, 6, 2])
    path = write_posterior(tmp_path / "post.nc", draws, run, scales=PRIOR.scales)
    table = balancedness_table(path, run)
    filters = table[table["kind"] == "filter"]
    assert filters["layer"].tolist() == [0, 0, 0, 1, 1]
    # conv 0 -> conv 1: (3*3*2 + 1) - 2*2*2 per filter; conv 1 -> dense (5x5 pixels, 5 units): (2*2*3 + 1) - 25*5
    assert filters["rhs"].tolist() == [11, 11, 11, -112, -112]
    np.testing.assert_array_less(np.abs(filters["estimate"] - filters["rhs"]), 4 * filters["se"])
    verdicts = table[table["kind"] == "verdict"].set_index("family")["verdict"]
    assert verdicts["filter"] == "holds" and verdicts["run"] == "holds"


@pytest.mark.parametrize("inflate", [1.3])
def test_a_wrong_conv_scale_is_detected(tmp_path, inflate):
    draws = prior_draws(40, 50, seed=2)
    draws["conv_kernel_1"] = draws["conv_kernel_1"] * np.float32(inflate)
    run = make_run(hidden=(5,), likelihood="class", chains=40, scale=[0.7, 1.3])
    path = write_posterior(tmp_path / "post.nc", draws, run, scales=PRIOR.scales)
    table = balancedness_table(path, run)
    verdicts = table[table["kind"] == "verdict"].set_index("family")["verdict"]
    assert verdicts["filter"] == "deviates"
