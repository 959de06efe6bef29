"""Config validation, defaults and sweep expansion (interplay.config)."""

import copy

import pytest
import yaml

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
    assert run["data"] == {"seed": 0, "standardise": "full", "max_train_points": None}
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
        (lambda c: c["runs"]["r1"].update(sampler={"chains": 0}), r"runs\.r1\.sampler\.chains: 0 is less than"),
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


def test_blocks_cover_all_chains():
    run = resolve({"runs": {"r": {"dataset": "airfoil", "sampler": {"chains": 10, "block_size": 4}}}})["r"]
    assert block_ids(run) == ["0000", "0001", "0002"]
    resources = sample_resources(run)
    assert resources["mem_mb"] > 2048 and resources["runtime"] >= 15


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
