"""Config validation, defaults and sweep expansion (interplay.config)."""

import copy
import re
import subprocess
import sys

import pytest
import yaml

from interplay import config as study_config
from interplay.config import ConfigError, block_ids, expand_sweep, resolve_runs, sample_resources

BASE = {"runs": {"r1": {"dataset": "airfoil", "model": {"hidden": [16, 16]}}}}


def resolve(config):
    return resolve_runs(copy.deepcopy(config))


def test_defaults_are_the_paper_settings():
    run = resolve(BASE)["r1"]
    assert run["name"] == "r1"
    assert run["sampler"]["kind"] == "mile"
    assert run["sampler"]["warmstart"] == {"lr": 0.01, "weight_decay": 0.005, "batch_size": 64,
                                           "max_epochs": 200, "patience": 10}
    mclmc = run["sampler"]["mclmc"]
    assert (mclmc["warmup_steps"], mclmc["phases"], mclmc["steps"], mclmc["thin"]) == (50000, [0.8, 0.1, 0.1],
                                                                                       10000, 10)
    assert (mclmc["energy_var_start"], mclmc["energy_var_end"], mclmc["n_eff"], mclmc["trust"]) == (0.5, 0.1, 100,
                                                                                                   1.5)
    assert run["sampler"]["nuts"]["target_accept"] == 0.8
    assert run["data"] == {"seed": 0, "split": "shuffle", "standardise": "full", "max_train_points": None}
    assert run["prior"]["scale"] == 1.0 and run["prior"]["bias"] == "gaussian"


def test_layering_defaults_then_run():
    config = {"defaults": {"sampler": {"chains": 20, "mclmc": {"steps": 500}}}, **copy.deepcopy(BASE)}
    config["runs"]["r1"]["sampler"] = {"mclmc": {"thin": 5}}
    run = resolve(config)["r1"]
    assert run["sampler"]["chains"] == 20
    assert run["sampler"]["mclmc"]["steps"] == 500 and run["sampler"]["mclmc"]["thin"] == 5
    assert run["sampler"]["mclmc"]["warmup_steps"] == 50000


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["runs"]["r1"].update(sampler={"kind": "hmc"}), r"runs\.r1\.sampler\.kind: 'hmc' is not allowed"),
        (lambda c: c["runs"]["r1"].update(sampler={"chians": 3}), r"runs\.r1\.sampler: unknown key\(s\) 'chians'"),
        (lambda c: c["runs"]["r1"].update(sampler={"chains": 0}), r"runs\.r1\.sampler\.chains: 0 must be >= 1"),
        (lambda c: c["runs"]["r1"].update(dataset="mnist"), r"runs\.r1\.dataset: unknown dataset 'mnist'"),
        (lambda c: c["runs"]["r1"].update(prior={"scale": [1.0, 1.0]}), r"runs\.r1\.prior\.scale: 2 values given"),
        (lambda c: c["runs"]["r1"].update(prior={"scale": -1}), r"runs\.r1\.prior\.scale"),
        (lambda c: c["runs"]["r1"].update(model={"likelihood": "class"}), r"runs\.r1\.model\.likelihood"),
        (lambda c: c["runs"]["r1"].update(model={"sigma": 0.3}), r"runs\.r1\.model\.sigma"),
        (lambda c: c.update(colour="red"), r"config: unknown key\(s\) 'colour'"),
        (lambda c: c.update(data={"mirror": 3}), r"config\.data\.mirror"),
        (lambda c: c["runs"].update({"bad/name": {"dataset": "airfoil"}}), r"config\.runs"),
    ],
)
def test_bad_values_name_the_key(mutate, expected):
    config = copy.deepcopy(BASE)
    mutate(config)
    with pytest.raises(ConfigError, match=expected):
        resolve(config)


def test_every_problem_is_listed():
    config = copy.deepcopy(BASE)
    config["runs"]["r1"]["sampler"] = {"kind": "hmc", "chains": -1}
    with pytest.raises(ConfigError) as info:
        resolve(config)
    assert "sampler.kind" in str(info.value) and "sampler.chains" in str(info.value)


def test_sweep_expands_the_cartesian_product():
    sweep = {
        "base": {"dataset": "airfoil"},
        "grid": {"prior.scale": [10, 0.5, 0.1], "model.hidden": [[16], [16, 16], [16, 16, 16], [16] * 4]},
        "name": "grid-tau{prior.scale}-depth{depth}",
    }
    runs = expand_sweep("grid", sweep)
    assert len(runs) == 12
    assert runs["grid-tau0.5-depth3"]["model"]["hidden"] == [16, 16, 16]
    assert runs["grid-tau0.5-depth3"]["prior"]["scale"] == 0.5
    resolved = resolve({"sweeps": {"grid": sweep}})
    assert set(resolved) == set(runs)


def test_paper_grid_has_84_runs():
    sweep = {
        "base": {"sampler": {"chains": 10}},
        "grid": {
            "dataset": ["airfoil", "bikesharing", "energy"],
            "prior.scale": [10, 5, 2, 1, 0.5, 0.2, 0.1],
            "model.hidden": [[16], [16, 16], [16, 16, 16], [16, 16, 16, 16]],
        },
        "name": "grid-{dataset}-tau{prior.scale}-depth{depth}",
    }
    assert len(resolve({"sweeps": {"grid": sweep}})) == 84


def test_default_sweep_names_and_collisions():
    runs = expand_sweep("s", {"base": {"dataset": "airfoil"}, "grid": {"prior.scale": [1, 2]}})
    assert set(runs) == {"s-scale1", "s-scale2"}
    with pytest.raises(ConfigError, match="two grid points give the run name"):
        expand_sweep("s", {"grid": {"prior.scale": [1, 2]}, "name": "same"})
    with pytest.raises(ConfigError, match="template field"):
        expand_sweep("s", {"grid": {"prior.scale": [1]}, "name": "x-{nope}"})
    with pytest.raises(ConfigError, match="already defines a run"):
        resolve({"runs": {"s-scale1": {"dataset": "airfoil"}},
                 "sweeps": {"s": {"base": {"dataset": "airfoil"}, "grid": {"prior.scale": [1]}}}})


def test_config_specs_and_posterior_files_import_no_jax():
    # the workflow imports interplay.config at parse time, merge and analysis jobs read posterior files:
    # none of them may pay for (or depend on) JAX; interplay.specs is the network spec they share with it
    code = ("import sys; import interplay.config, interplay.specs, interplay.posterior_io, interplay.analysis; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_n_parameters_counts_weights_and_biases():
    run = {"model": {"hidden": [16, 16], "bias": True}}
    assert study_config.n_parameters(run, 5, 2) == 5 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2
    assert study_config.n_parameters({"model": {"hidden": [], "bias": False}}, 3, 1) == 3


def test_blocks_cover_all_chains():
    run = resolve({"runs": {"r": {"dataset": "airfoil", "sampler": {"chains": 10, "block_size": 4}}}})["r"]
    assert block_ids(run) == ["0000", "0001", "0002"]
    resources = sample_resources(run)
    assert resources["mem_mb"] > 1024 and resources["runtime"] >= 15


def test_teacher_datasets_are_known():
    config = {"teachers": {"teacher_small": {"in_dim": 2, "hidden": [4], "n": 100}},
              "runs": {"t": {"dataset": "teacher_small"}}}
    assert resolve(config)["t"]["dataset"] == "teacher_small"


def test_study_configs_are_valid(project_root):
    for path in [project_root / "config.yaml", *sorted((project_root / "workflow" / "studies").glob("*.yaml"))]:
        runs = resolve(yaml.safe_load(path.read_text()))
        assert runs, f"{path} defines no runs"


def test_joined_grid_keys_set_several_keys_together():
    runs = expand_sweep("b", {"base": {"dataset": "airfoil"}, "grid": {"data.seed+sampler.seed": [1, 2]}})
    assert set(runs) == {"b-seed1", "b-seed2"}
    assert runs["b-seed2"]["data"]["seed"] == 2 and runs["b-seed2"]["sampler"]["seed"] == 2


# ----------------------------------------------------------------------------- sampling settings (params)


def test_sampling_settings_are_canonical_and_hold_only_what_sampling_reads():
    from interplay.config import deep_merge, sampling_run, sampling_settings

    settings = sampling_settings(resolve(BASE)["r1"])
    same = {
        "reordered": {"runs": {"r1": {"model": {"hidden": [16, 16]}, "dataset": "airfoil"}}},
        "defaults written out": {"runs": {"r1": {"dataset": "airfoil", "model": {"hidden": [16, 16], "bias": True},
                                                 "prior": {"bias": "gaussian", "scale": 1}}}},
        "merge key": deep_merge(BASE, {"runs": {"r1": {"merge": {"drop_diverged": False}}}}),
        "other kinds": deep_merge(BASE, {"runs": {"r1": {"sampler": {"nuts": {"draws": 5}, "mfvi": {"lr": 0.1}}}}}),
    }
    for what, config in same.items():
        assert sampling_settings(resolve(config)["r1"]) == settings, what
    for change in ({"sampler": {"seed": 1}}, {"sampler": {"block_size": 4}}, {"sampler": {"mclmc": {"thin": 5}}},
                   {"diagnostics": {"pred_draw_points": 3}}, {"data": {"max_train_points": 10}}):
        assert sampling_settings(resolve(deep_merge(BASE, {"runs": {"r1": change}}))["r1"]) != settings, change
    run = sampling_run(resolve(BASE)["r1"])
    assert "merge" not in run and set(run["sampler"]) == {"kind", "chains", "block_size", "seed", "warmstart", "mclmc"}
    mfvi = sampling_run(resolve(deep_merge(BASE, {"runs": {"r1": {"sampler": {"kind": "mfvi"}}}}))["r1"])
    assert "warmstart" not in mfvi["sampler"] and "mfvi" in mfvi["sampler"]


def test_every_sampler_kind_names_the_sampler_blocks_it_reads():
    from interplay.config import SAMPLER_BLOCKS, load_schema

    sampler = load_schema("run")["properties"]["sampler"]["properties"]
    blocks = {name for name, sub in sampler.items() if sub.get("type") == "object"}
    for kind in sampler["kind"]["enum"]:
        assert kind in SAMPLER_BLOCKS, f"add sampler kind {kind!r} to interplay.config.SAMPLER_BLOCKS"
        assert set(SAMPLER_BLOCKS[kind]) <= blocks, kind


# ----------------------------------------------------------------------------- sampler constraints at parse time


def _sampler_checks():
    """The checks the samplers (and model/prior builders) run inside `sample`, on a resolved run."""
    from interplay.config import n_blocks
    from interplay.models import ModelSpec, PriorSpec
    from interplay.samplers import laplace, mclmc, mfvi, nuts, warmstart

    return {
        "mclmc": lambda run: mclmc.resolve_config(run["sampler"]["mclmc"]),
        "nuts": lambda run: nuts.resolve_config(run["sampler"]["nuts"]),
        "mfvi": lambda run: mfvi._check_cfg(run["sampler"]["mfvi"]),
        "laplace": lambda run: laplace.check_cfg(run["sampler"]["laplace"]),
        "warmstart": lambda run: warmstart._check_cfg(run["sampler"]["warmstart"]),
        "model": lambda run: ModelSpec.from_run(run, in_dim=5),
        "prior": lambda run: PriorSpec.from_run(run, ModelSpec.from_run(run, in_dim=5)),
        "blocks": n_blocks,
    }


INF = float("inf")
# (run override, the key the error must name, the sampler-side check that would reject it in `sample`)
SAMPLER_CONSTRAINTS = [
    ({"sampler": {"mclmc": {"steps": 25}}}, "sampler.mclmc.steps", "mclmc"),  # not a multiple of thin (10)
    ({"sampler": {"mclmc": {"steps": 5}}}, "sampler.mclmc.steps", "mclmc"),  # fewer steps than thin
    ({"sampler": {"mclmc": {"steps": 100, "thin": 0}}}, "sampler.mclmc.thin", "mclmc"),
    ({"sampler": {"mclmc": {"warmup_steps": -1}}}, "sampler.mclmc.warmup_steps", "mclmc"),
    ({"sampler": {"mclmc": {"n_eff": 100.5}}}, "sampler.mclmc.n_eff", "mclmc"),
    ({"sampler": {"mclmc": {"n_eff": 0}}}, "sampler.mclmc.n_eff", "mclmc"),
    ({"sampler": {"mclmc": {"energy_var_start": INF}}}, "sampler.mclmc.energy_var_start", "mclmc"),
    ({"sampler": {"mclmc": {"energy_var_end": 0}}}, "sampler.mclmc.energy_var_end", "mclmc"),
    ({"sampler": {"mclmc": {"trust": INF}}}, "sampler.mclmc.trust", "mclmc"),
    ({"sampler": {"mclmc": {"initial_step_size": INF}}}, "sampler.mclmc.initial_step_size", "mclmc"),
    ({"sampler": {"mclmc": {"phases": [0.5, 0.3, 0.3]}}}, "sampler.mclmc.phases", "mclmc"),
    ({"sampler": {"mclmc": {"phases": [0.5, 0.5]}}}, "sampler.mclmc.phases", "mclmc"),
    # Retired settings (their former defaults): refused by name, not silently ignored.
    ({"sampler": {"mclmc": {"ess_max_samples": 10000}}}, "sampler.mclmc.ess_max_samples", "mclmc"),
    ({"sampler": {"mclmc": {"ess_max_params": 2000}}}, "sampler.mclmc.ess_max_params", "mclmc"),
    ({"sampler": {"mclmc": {"chain_batch": 0}}}, "sampler.mclmc.chain_batch", "mclmc"),
    ({"sampler": {"nuts": {"draws": 0}}}, "sampler.nuts.draws", "nuts"),
    ({"sampler": {"nuts": {"warmup": -1}}}, "sampler.nuts.warmup", "nuts"),
    ({"sampler": {"nuts": {"target_accept": 1.0}}}, "sampler.nuts.target_accept", "nuts"),
    ({"sampler": {"mfvi": {"steps": 0}}}, "sampler.mfvi.steps", "mfvi"),
    ({"sampler": {"mfvi": {"draws": 0}}}, "sampler.mfvi.draws", "mfvi"),
    ({"sampler": {"mfvi": {"lr": 0}}}, "sampler.mfvi.lr", "mfvi"),
    ({"sampler": {"mfvi": {"weight_decay": -1}}}, "sampler.mfvi.weight_decay", "mfvi"),
    ({"sampler": {"laplace": {"epochs": 0}}}, "sampler.laplace.epochs", "laplace"),
    ({"sampler": {"laplace": {"draws": 0}}}, "sampler.laplace.draws", "laplace"),
    ({"sampler": {"laplace": {"lr": 0}}}, "sampler.laplace.lr", "laplace"),
    ({"sampler": {"laplace": {"ggn_noise_var": 0}}}, "sampler.laplace.ggn_noise_var", "laplace"),
    ({"sampler": {"laplace": {"objective": "elbo"}}}, "sampler.laplace.objective", "laplace"),
    ({"sampler": {"laplace": {"subset": "first_layer"}}}, "sampler.laplace.subset", "laplace"),
    ({"sampler": {"laplace": {"hessian": "kron"}}}, "sampler.laplace.hessian", "laplace"),
    ({"sampler": {"laplace": {"subset": "all"}}}, "sampler.laplace.hessian", "laplace"),  # all needs diagonal
    ({"sampler": {"warmstart": {"batch_size": 0}}}, "sampler.warmstart.batch_size", "warmstart"),
    ({"sampler": {"warmstart": {"max_epochs": 0}}}, "sampler.warmstart.max_epochs", "warmstart"),
    ({"sampler": {"warmstart": {"patience": 0}}}, "sampler.warmstart.patience", "warmstart"),
    ({"sampler": {"warmstart": {"lr": -0.1}}}, "sampler.warmstart.lr", "warmstart"),
    ({"sampler": {"chains": 0}}, "sampler.chains", "blocks"),
    ({"sampler": {"block_size": 0}}, "sampler.block_size", "blocks"),
    ({"prior": {"scale": INF}}, "prior.scale", "prior"),
    ({"prior": {"scale": [1.0, 1.0, INF]}}, "prior.scale", "prior"),
    ({"prior": {"bias_scale": 0}}, "prior.bias_scale", "prior"),
    ({"prior": {"log_sigma_scale": INF}, "model": {"likelihood": "mean_regr"}}, "prior.log_sigma_scale", "prior"),
    ({"model": {"likelihood": "mean_regr", "sigma": INF}}, "model.sigma", "model"),
]


@pytest.mark.parametrize("override, key, check", SAMPLER_CONSTRAINTS,
                         ids=[f"{key}={case}" for case, key, _ in SAMPLER_CONSTRAINTS])
def test_every_sampler_constraint_fails_at_parse_time_naming_the_key(override, key, check):
    from interplay.config import deep_merge

    config = copy.deepcopy(BASE)
    config["runs"]["r1"] = deep_merge(config["runs"]["r1"], override)
    with pytest.raises(ConfigError, match=rf"runs\.r1\.{re.escape(key)}\b"):
        resolve(config)
    # ... and it is a constraint of sampling: the same run would fail inside `sample`, after data and warm start
    with pytest.raises((ValueError, KeyError)):
        _sampler_checks()[check](deep_merge(resolve(BASE)["r1"], override))


@pytest.mark.parametrize("name", ["ess_max_samples", "ess_max_params"])
def test_retired_mclmc_settings_say_so(name):
    """Defaults or a run that still sets a retired key fail naming it and saying it was retired."""
    config = copy.deepcopy(BASE)
    config["defaults"] = {"sampler": {"mclmc": {name: 100}}}
    with pytest.raises(ConfigError, match=rf"runs\.r1\.sampler\.mclmc\.{name}: was retired"):
        resolve(config)
    from interplay.samplers.mclmc import resolve_config

    with pytest.raises(ValueError, match=rf"sampler\.mclmc\.{name} was retired"):
        resolve_config({"warmup_steps": 10, "steps": 10, "thin": 1, name: 100})


def test_steps_must_be_a_multiple_of_thin_in_every_thinning_sampler_block():
    """Generic over the schema: any sampler block with `steps` and `thin` (mclmc, mams, ...) is checked."""
    from interplay.config import load_schema

    sampler = load_schema("run")["properties"]["sampler"]["properties"]
    thinning = [name for name, sub in sampler.items() if {"steps", "thin"} <= set(sub.get("properties", {}))]
    assert "mclmc" in thinning
    for name in thinning:
        thin = max(2, sampler[name]["properties"]["thin"].get("default", 2))
        for steps in (thin + 1, thin - 1):
            config = copy.deepcopy(BASE)
            config["runs"]["r1"]["sampler"] = {name: {"steps": steps, "thin": thin}}
            with pytest.raises(ConfigError, match=rf"runs\.r1\.sampler\.{name}\.steps: {steps} must be a positive "
                                                  rf"multiple of sampler\.{name}\.thin \({thin}\)"):
                resolve(config)
        config["runs"]["r1"]["sampler"] = {name: {"steps": 3 * thin, "thin": thin}}
        resolve(config)


def test_numbers_have_one_form():
    run = resolve({"runs": {"r1": {"dataset": "airfoil", "prior": {"scale": [1, 2, 3]},
                                   "sampler": {"mclmc": {"trust": 2}}}}})["r1"]
    assert [type(v) for v in run["prior"]["scale"]] == [float] * 3 and isinstance(run["sampler"]["mclmc"]["trust"], float)
    assert isinstance(run["sampler"]["chains"], int) and run["model"]["bias"] is True


@pytest.mark.parametrize("mams, message", [
    ({"burn_in_steps": 20}, r"sampler\.mams\.burn_in_steps: 20 must be 0 \(no burn-in\) or at least 50"),
    ({"phases": [0.5, 0.5, 0.5]}, r"sampler\.mams\.phases: \[0\.5, 0\.5, 0\.5\] must sum to 1"),
])
def test_mams_constraints_are_checked_at_parse_time(mams, message):
    config = copy.deepcopy(BASE)
    config["runs"]["r1"]["sampler"] = {"kind": "mams", "mams": mams}
    with pytest.raises(ConfigError, match=message):
        resolve(config)


def test_the_smallest_mams_burn_in_leaves_draws_for_the_variances():
    from interplay.config import MAMS_MIN_BURN_IN_STEPS
    from interplay.samplers import mams

    cfg = mams.resolve_config({"warmup_steps": 10, "steps": 10, "thin": 1, "burn_in_steps": MAMS_MIN_BURN_IN_STEPS})
    burn_in = mams.burn_in_config(cfg)
    assert burn_in["steps"] // burn_in["thin"] >= 2 and burn_in["warmup_steps"] >= 10
    assert burn_in["warmup_steps"] + burn_in["steps"] == MAMS_MIN_BURN_IN_STEPS
