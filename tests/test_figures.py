"""Figures from small synthetic posteriors and real analysis tables (no sampling): every figure renders
to a non-empty PDF and PNG, the numbers drawn are the right ones (known correlations, exact Dirichlet
shares, exact seed means), and the figure plans reject studies that cannot make a figure."""

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from interplay.analysis.balancedness import run_verdict
from interplay.config import ConfigError
from interplay.figures import FIGURES, TITLES, figure_outputs, figure_plans, render
from interplay.figures.assemble import assemble_pdf, rst_to_text, run_settings_table, verdict_table
from interplay.figures.correlations import mean_abs_offdiagonal, within_chain_correlation
from interplay.figures.data import read_parameters, read_variables
from interplay.figures.dirichlet import pooled_shares
from interplay.figures.toy_grid import unit_weights
from interplay.figures.uci_benchmark import benchmark_table, latex_table
from interplay.testing import demo


def pdf_pages(path) -> int:
    return len(re.findall(rb"/Type /Page\b(?!s)", path.read_bytes()))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return root, demo.write_demo_study(root, chains=12, draws=150)


@pytest.fixture(scope="module")
def rendered(study):
    root, figures = study
    written = {}
    for name, data in figures.items():
        outputs = {k: root / "figures" / v.split("/")[-1] for k, v in figure_outputs(name).items()}
        render(name, data, outputs)
        written[name] = outputs
    return written


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_renders_a_pdf_and_a_png(rendered, name):
    outputs = rendered[name]
    pdf, png = outputs["pdf"], outputs["png"]
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf_pages(pdf) == 1
    assert pdf.stat().st_size > 5_000
    with Image.open(png) as image:
        width, height = image.size
        assert image.format == "PNG" and width > 600 and height > 300
        # not a blank canvas: a real figure has many distinct colours
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


def test_uci_benchmark_writes_the_table_as_csv_and_latex(rendered):
    table = pd.read_csv(rendered["uci_benchmark"]["csv"])
    assert set(table["method"]) == {"MILE", "DE", "MFVI", "LA"} and set(table["metric"]) == {"lppd", "rmse"}
    tex = rendered["uci_benchmark"]["tex"].read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and tex.count("\\mathbf") == 2 * 2


# ----------------------------------------------------------------------------- the numbers drawn


def test_benchmark_table_is_the_mean_and_sd_over_seeds(study):
    _, figures = study
    data = figures["uci_benchmark"]
    table = benchmark_table(data)
    lppd = {name: float(pd.read_csv(path).set_index("metric").loc["lppd", "value"])
            for (name, _), path in data.tables.items()}
    for dataset, method in (("airfoil", "mfvi"), ("energy", "de")):
        values = [lppd[f"demo-uci-{dataset}-{method}-seed{s}"] for s in (1, 2, 3)]
        row = table[(table["dataset"] == dataset) & (table["method"] == method.upper())  # single fits: no "pooled"
                    & (table["metric"] == "lppd")].iloc[0]
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["sd"] == pytest.approx(np.std(values, ddof=1))
        assert row["n_seeds"] == 3
    # the bold cell of each metric is the best method: highest LPPD, lowest RMSE
    tex_rows = {line.split(" & ")[0]: line for line in latex_table(table).splitlines() if " & " in line}
    for dataset in ("airfoil", "energy"):
        rmse = table[(table["dataset"] == dataset) & (table["metric"] == "rmse")]
        best = f"{rmse['mean'].min():.3f}"
        assert f"\\mathbf{{{best}" in tex_rows[dataset]


def test_within_chain_correlation_recovers_the_known_correlation(study):
    _, figures = study
    data = figures["correlations"]
    sampled = data.posterior("demo-corr-mile-depth1")
    corr, names, used = within_chain_correlation(sampled, data.run("demo-corr-mile-depth1"))
    n_params = sum(size for _, size in names)
    assert corr.shape == (n_params, n_params) and used == 4
    assert np.allclose(np.diag(corr), 1.0)
    assert mean_abs_offdiagonal(corr) == pytest.approx(demo.CORRELATION, abs=0.08)
    factorised, _, _ = within_chain_correlation(data.posterior("demo-corr-mfvi-depth1"))
    assert mean_abs_offdiagonal(factorised) < 0.12  # independent draws: only Monte Carlo noise (~1/sqrt(150))


def test_toy_shares_follow_the_dirichlet_half_marginal(study):
    _, figures = study
    data = figures["dirichlet"]
    for width in (3, 6):
        shares = pooled_shares(data.posterior(f"demo-toy-M{width}-tau1"), "rho_abs", max_chains=100,
                               max_points=10_000)
        assert len(shares) == 4 * 150 * width
        assert stats.kstest(shares, stats.beta(0.5, (width - 1) / 2).cdf).pvalue > 1e-3
        # ... and not the uniform-Dirichlet marginal Beta(1, M-1)
        assert stats.kstest(shares, stats.beta(1.0, width - 1).cdf).pvalue < 1e-6


def test_toy_grid_beta_hat_is_the_product_sum(study):
    _, figures = study
    w, v, beta_hat = unit_weights(figures["toy_grid"].posterior("demo-toy-M3-tau0.3"), max_chains=1000)
    assert beta_hat == pytest.approx(1.2, rel=1e-5)  # the demo's draws have sum_j w_j v_j = 1.2 exactly
    assert w.shape == v.shape == (4 * 150 * 3,)


def test_read_parameters_takes_the_first_chains_only(study):
    _, figures = study
    path = figures["bivariate"].posterior("demo-over")
    full = read_variables(path, ["kernel_1"], max_chains=10**6)["kernel_1"]
    picked = read_parameters(path, {"kernel_1": [(2, 5), (0, 0)]}, max_chains=5)
    assert picked[("kernel_1", (2, 5))].shape == (5, 150)
    np.testing.assert_array_equal(picked[("kernel_1", (2, 5))], full[:5, :, 2, 5])
    np.testing.assert_array_equal(picked[("kernel_1", (0, 0))], full[:5, :, 0, 0])
    with pytest.raises(ValueError, match="parameter dims"):
        read_parameters(path, {"kernel_1": [(1,)]})


# ----------------------------------------------------------------------------- assembly and tables


def test_all_pdf_has_a_cover_and_one_page_per_figure(rendered, tmp_path):
    entries = [(TITLES[name], rendered[name]["png"], f"Caption of {name}.") for name in ("bivariate", "lppd_grid")]
    out = assemble_pdf(entries, tmp_path / "all.pdf", study="demo")
    assert pdf_pages(out) == 1 + 2
    with pytest.raises(ValueError, match="no figures"):
        assemble_pdf([], tmp_path / "none.pdf")


def test_captions_are_read_as_plain_text(project_root):
    text = rst_to_text("A **bold** word, ``code``, :math:`x^2` and a `link <https://x.org>`_.\n\nSecond\n  paragraph.")
    assert text == "A bold word, code, x^2 and a link.\n\nSecond paragraph."
    for name in FIGURES:  # every figure has a caption for all.pdf and the report
        caption = project_root / "workflow" / "report" / f"{name}.rst"
        assert len(rst_to_text(caption.read_text())) > 100, caption


def test_verdict_table_reports_each_runs_verdicts(study):
    _, figures = study
    data = figures["balancedness"]
    entries = [(data.run(name), data.tables[(name, "balancedness")]) for name in data.members]
    table = verdict_table(entries).set_index("run")
    for name in data.members:
        stored = pd.read_csv(data.tables[(name, "balancedness")])
        assert table.loc[name, "layer_pair_verdict"] == run_verdict(stored, "layer_pair")
        assert table.loc[name, "neuron_verdict"] == run_verdict(stored, "neuron")
    assert table.loc["demo-over", "layer_pair_verdict"] == "holds"  # exact prior draws satisfy the identity


def test_run_settings_flatten_every_key():
    runs = {"b": {"name": "b", "dataset": "airfoil", "model": {"hidden": [16, 16]}, "sampler": {"kind": "mile"}},
            "a": {"name": "a", "dataset": "energy", "model": {"hidden": []}, "sampler": {"kind": "nuts"}}}
    table = run_settings_table(runs)
    assert list(table["name"]) == ["a", "b"]
    assert table.loc[1, "model.hidden"] == "[16, 16]" and table.loc[0, "sampler.kind"] == "nuts"


# ----------------------------------------------------------------------------- plans (parse-time checks)


def _runs():
    def run(name, hidden, activation="relu", bias=True, kind="mile", scale=1.0):
        return {"name": name, "dataset": "airfoil", "model": {"hidden": hidden, "activation": activation, "bias": bias},
                "prior": {"scale": scale}, "sampler": {"kind": kind}}

    runs = {n: run(n, [16, 16]) for n in ("over", "a", "b")}
    runs["under"] = run("under", [3], activation="tanh")
    runs["ens"] = run("ens", [8], kind="de")
    runs["lin"] = run("lin", [])
    for width in (1, 4):
        runs[f"toy{width}"] = run(f"toy{width}", [width], activation="identity", bias=False)
    return runs


SWEEPS = {"toy": ["toy1", "toy4"], "pair": ["a", "b"]}


def test_plans_list_the_posteriors_and_tables_each_figure_reads():
    plans = figure_plans({"bivariate": {"under": "under", "over": "over"},
                          "conformity": {"under": "under", "over": "over", "runs": ["a", "b", "a"]},
                          "dirichlet": {"sweep": "toy"}, "lppd_grid": {"sweep": "pair"}}, _runs(), SWEEPS)
    assert plans["bivariate"].posterior_runs == ("under", "over") and plans["bivariate"].tables == ()
    assert plans["conformity"].members == ("a", "b")
    assert plans["conformity"].tables == (("a", "conformity"), ("b", "conformity"))
    assert plans["conformity"].runs == ("under", "over", "a", "b")
    # a single unit has no shares: its posterior and table are not inputs of the Dirichlet figure
    assert plans["dirichlet"].posterior_runs == ("toy4",) and plans["dirichlet"].tables == (("toy4", "reallocation"),)
    assert plans["lppd_grid"].tables == (("a", "predictive"), ("b", "predictive"))


@pytest.mark.parametrize("figures, message", [
    ({"bivariate": {"under": "nope", "over": "over"}}, "figures.bivariate.under: run 'nope' is not in the study"),
    ({"lppd_grid": {"sweep": "grid"}}, "figures.lppd_grid.sweep: sweep 'grid' is not in the study"),
    ({"cumulative_lppd": {"runs": ["a", "gone", "gone2"]}}, "run(s) ['gone', 'gone2'] are not in the study"),
    ({"balancedness": {"runs": ["a"], "sweep": "pair"}}, "give either `sweep: <name>` or `runs: [...]`"),
    ({"balancedness": {}}, "give either `sweep: <name>` or `runs: [...]`"),
    ({"balancedness": {"runs": ["lin"]}}, "runs ['lin'] have no hidden layer"),
    ({"correlations": {"runs": ["a", "ens"]}}, "runs ['ens'] are deep ensembles"),
    ({"dirichlet": {"runs": ["toy4", "a"]}}, "runs ['a'] are not 1-M-1 identity nets"),
    ({"dirichlet": {"runs": ["toy1"]}}, "every run has M = 1 unit"),
    ({"violin": {"runs": ["a"]}}, "figures.violin: unknown figure"),
])
def test_plans_reject_figures_the_study_cannot_make(figures, message):
    with pytest.raises(ConfigError) as error:
        figure_plans(figures, _runs(), SWEEPS)
    assert message in str(error.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        figure_plans({"bivariate": {"under": "x", "over": "y"}, "toy_grid": {"sweep": "s"}}, _runs(), SWEEPS)
    assert all(part in str(error.value) for part in ("'x'", "'y'", "sweep 's'"))


def test_the_schema_fills_figure_defaults_and_rejects_unknown_keys():
    from interplay.config import validate_config

    config = validate_config({"figures": {"bivariate": {"under": "a", "over": "b"}, "dirichlet": {"sweep": "toy"}}})
    assert config["figures"]["bivariate"]["bins"] == 100 and config["figures"]["dirichlet"]["share"] == "rho_abs"
    with pytest.raises(ConfigError, match=r"config.figures.bivariate: unknown key\(s\) 'colour'"):
        validate_config({"figures": {"bivariate": {"under": "a", "over": "b", "colour": "red"}}})
    with pytest.raises(ConfigError, match=r"config.figures: unknown key\(s\) 'violin'"):
        validate_config({"figures": {"violin": {}}})
    with pytest.raises(ConfigError, match="config.figures.dirichlet.share"):
        validate_config({"figures": {"dirichlet": {"sweep": "toy", "share": "weights"}}})


def test_sampler_bias_draws_each_runs_identity_error_and_cost(study):
    from interplay.figures.sampler_bias import summary

    _, figures = study
    data = figures["sampler_bias"]
    table = summary(data)
    assert list(dict.fromkeys(table["run"])) == list(data.members)
    for name in data.members:
        balance = data.table(name, "balancedness")
        pairs = balance[balance["kind"] == "layer_pair"].sort_values("layer")
        rows = table[table["run"] == name]
        np.testing.assert_allclose(rows["rel_error"], pairs["rel_error"])
        np.testing.assert_allclose(rows["lo"], pairs["rel_error_lo"])
        assert rows["verdict"].iloc[0] == run_verdict(balance)
    by_run = table.groupby("run").first()
    # the demo's biased sampler (a 10% inflated kernel_1) deviates; the exact draws do not
    assert by_run.loc["demo-bias-mile", "verdict"] == "deviates"
    assert by_run.loc["demo-bias-mams", "verdict"] == "holds"
    # cost: the sampler's gradients plus the warm start's
    np.testing.assert_allclose(by_run["grad_evals"].sort_values().to_numpy(), [5e4, 3.1e5, 1.01e6])
