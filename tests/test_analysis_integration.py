"""Every analysis entry point on a posterior written by the pipeline's own block writer and merge
(interplay.posterior_io), i.e. the real file contract of DESIGN.md, with exact prior draws."""

import numpy as np
import pandas as pd

from interplay.analysis import ANALYSES, NEEDS_PREPARED_DATA, run_verdict
from interplay.models import ModelSpec, param_shapes
from interplay.posterior_io import merge_blocks, write_block
from interplay.testing.posteriors import make_run, prior_draws

REQUIRED_STATS = ("step_size", "L", "energy_variance", "diverged", "warmstart_val_loss", "warmup_seconds",
                  "sampling_seconds", "n_grad_evals")


def test_all_analyses_on_merged_blocks(tmp_path):
    run = make_run("merged", hidden=[5, 4], chains=24, scale=[1.0, 0.5, 2.0], bias_scale=0.8)
    run["sampler"]["block_size"] = 12
    model = ModelSpec.from_run(run, in_dim=3)
    shapes = param_shapes(model)
    widths = list(model.units)
    scales = {name: ([1.0, 0.5, 2.0] if name.startswith("kernel") else [0.8] * 3)[int(name[-1])] for name in shapes}
    rng = np.random.default_rng(0)
    n_test, draws = 20, 60
    blocks = []
    for block in range(2):
        chains = list(range(12 * block, 12 * block + 12))
        params = prior_draws(rng, widths, scales, 12, draws)
        stats = {name: rng.uniform(0.01, 0.1, size=12) for name in REQUIRED_STATS}
        stats["diverged"] = np.zeros(12, dtype=np.int8)
        predictive = {"log_pred_density": rng.normal(-1, 0.3, size=(12, n_test)),
                      "pred_mean": rng.normal(size=(12, n_test)), "pit": rng.uniform(size=(12, n_test)),
                      "pred_draws": rng.normal(size=(12, draws, 4)), "y_test": np.linspace(-1, 1, n_test)}
        path = tmp_path / "samples" / f"block-{block:04d}.nc"
        write_block(path, params, stats, predictive, model=model, run=run, chains=chains)
        blocks.append(path)
    merged = tmp_path / "posteriors" / "merged.nc"
    merge_blocks(blocks, merged)

    out = tmp_path / "analysis" / "merged"
    for name, entry in ANALYSES.items():
        kwargs = {"x_train": rng.normal(size=(50, 3))} if name in NEEDS_PREPARED_DATA else {}
        if name == "reallocation":
            kwargs["max_draws"] = 100
        entry(merged, out / f"{name}.csv", run, **kwargs)
    tables = {name: pd.read_csv(out / f"{name}.csv") for name in ANALYSES}

    balanced = tables["balancedness"]
    assert run_verdict(balanced) == "holds"
    pairs = balanced[balanced["kind"] == "layer_pair"]
    assert pairs["rhs"].tolist() == [(3 * 5 + 5) - 5 * 4, (5 * 4 + 4) - 4 * 2]
    conform = tables["conformity"].query("scope == 'pooled'").set_index("variable")
    assert conform.loc["kernel_1", "prior_scale"] == 0.5 and conform.loc["bias_2", "prior_scale"] == 0.8
    assert (conform["ks"] < 0.05).all()
    metrics = tables["predictive"].set_index("metric")
    assert metrics.loc["lppd", "n_chains"] == 24
    assert len(tables["cumulative_lppd"]) == 24
    assert "rhat" in set(tables["diagnostics"]["statistic"])
    assert tables["reallocation"]["n_draws_analysed"].iloc[0] > 0
