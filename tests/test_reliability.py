"""Reliability fixes: bad downloads, stale temp files, file modes, --config strings, improper priors,
messages (config errors, `interplay bundle restore`)."""

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from interplay import config as study_config
from interplay.config import ConfigError, resolve_runs
from interplay.data import ChecksumError, make_table, prepare_split
from interplay.data.atomic import write_bytes_atomic as write_atomic

DEAD_PID = 4_194_304 + 17  # above Linux's largest pid_max: never a live process
HOST = socket.gethostname()


def _config(**runs):
    return {"runs": runs or {"r": {"dataset": "airfoil"}}}


# ----------------------------------------------------------------------------- 5: bad downloads


def test_checksum_failure_removes_the_bad_download_and_says_how_to_recover(tmp_path):
    download_dir = tmp_path / "download" / "yacht"
    download_dir.mkdir(parents=True)
    (download_dir / "yacht_hydrodynamics.data").write_text("1 2 3 4 5 6 7\n")
    with pytest.raises(ChecksumError) as info:
        make_table("yacht", download_dir, tmp_path / "tables" / "yacht.data", remove_bad_download=True)
    assert not download_dir.exists()
    message = str(info.value)
    assert "removed" in message and str(download_dir) in message and "rerun" in message


def test_checksum_failure_keeps_a_download_it_does_not_own(tmp_path):
    download_dir = tmp_path / "mine"
    download_dir.mkdir()
    (download_dir / "yacht_hydrodynamics.data").write_text("1 2 3 4 5 6 7\n")
    with pytest.raises(ChecksumError):
        make_table("yacht", download_dir, tmp_path / "yacht.data")
    assert (download_dir / "yacht_hydrodynamics.data").is_file()


def _copy_project(project_root, target):
    target.mkdir()
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(project_root / name, target / name)
    for name in ("workflow", "envs", "src/interplay"):
        shutil.copytree(project_root / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _snakemake(root, *args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("INTERPLAY_DATA_MIRROR", None)
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args], cwd=root, env=env,
                          capture_output=True, text=True, check=False, timeout=600)


@pytest.mark.mirror
def test_after_a_checksum_failure_the_next_run_refetches(project_root, mirror_dir, tmp_path):
    root = _copy_project(project_root, tmp_path / "project")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    text = (mirror_dir / "airfoil.data").read_text()
    (mirror / "airfoil.data").write_text(text.replace(text.split()[0], "801", 1))  # one value changed
    study = {"data": {"mirror": str(mirror)}, "runs": {"r": {"dataset": "airfoil"}}, "sweeps": {}, "figures": {}}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    target = "results/data/tables/airfoil.data"
    first = _snakemake(root, target, "--configfile", "study.yaml")
    assert first.returncode != 0
    log = (root / "results/logs/table/airfoil.log").read_text() + first.stdout + first.stderr
    assert "ChecksumError" in log and "removed" in log
    assert not (root / "results/data/download/airfoil").exists()
    shutil.copy2(mirror_dir / "airfoil.data", mirror / "airfoil.data")  # the mirror is fixed
    second = _snakemake(root, target, "--configfile", "study.yaml")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (root / target).is_file()


# ----------------------------------------------------------------------------- 8: stale temp files


def _stale_and_live(target: Path):
    target.parent.mkdir(parents=True, exist_ok=True)
    dead = target.with_name(f".{target.name}.tmp-{DEAD_PID}@{HOST}.ab12cd34")
    live = target.with_name(f".{target.name}.tmp-{os.getpid()}@{HOST}.ef56ab78")
    other_host = target.with_name(f".{target.name}.tmp-{DEAD_PID}@another-node.example.9f9f9f9f")
    legacy_pid = target.with_name(f".{target.name}.tmp-{DEAD_PID}")
    legacy_old = target.with_name(f".{target.name}.x1y2z3.part")
    other_target = target.with_name(f".other.data.tmp-{DEAD_PID}@{HOST}.00000000")
    for path in (dead, live, other_host, legacy_pid, legacy_old, other_target):
        path.write_text("partial")
    week_ago = time.time() - 7 * 86_400
    os.utime(legacy_old, (week_ago, week_ago))
    return {"stale": [dead, legacy_old], "kept": [live, other_host, legacy_pid, other_target]}


def test_stale_temps_of_dead_writers_are_removed_on_the_next_write(tmp_path):
    target = tmp_path / "tables" / "airfoil.data"
    files = _stale_and_live(target)
    write_atomic(b"1 2\n", target)
    assert target.read_bytes() == b"1 2\n"
    for path in files["stale"]:
        assert not path.exists(), path
    for path in files["kept"]:
        assert path.exists(), path


def test_stale_temps_older_than_the_bound_are_removed_whoever_wrote_them(tmp_path):
    target = tmp_path / "block-0000.nc"
    files = _stale_and_live(target)
    long_ago = time.time() - 30 * 86_400
    for path in files["kept"]:
        os.utime(path, (long_ago, long_ago))
    from interplay.data.atomic import clean_stale_temps

    removed = clean_stale_temps(target)
    assert sorted(removed) == sorted([*files["stale"], *files["kept"][:3]])
    assert files["kept"][3].exists()  # another target's temp file is left alone


def test_posterior_and_prepared_writes_clean_stale_temps(tmp_path):
    from interplay.data.atomic import atomic_path  # posterior_io's block and merge writer

    block = tmp_path / "samples" / "run" / "block-0000.nc"
    files = _stale_and_live(block)
    with atomic_path(block) as temp:
        Path(temp).write_text("block")
    assert block.read_text() == "block"
    assert not any(p.exists() for p in files["stale"])

    table = tmp_path / "t.data"
    table.write_text("".join(f"{i} {2 * i + 1}\n" for i in range(20)))
    prepared = tmp_path / "prepared" / "t" / "seed-0_std-full.nc"
    files = _stale_and_live(prepared)
    prepare_split(table, prepared, dataset="t", seed=0)
    assert prepared.is_file()
    assert not any(p.exists() for p in files["stale"])
    assert all(p.exists() for p in files["kept"])


def test_temp_names_are_recognised_for_listings(tmp_path):
    from interplay.data.atomic import is_temp_name, temp_path

    temp = temp_path(tmp_path / "block-0001.nc")
    assert temp.parent == tmp_path and not temp.exists()
    assert is_temp_name(temp.name)
    assert is_temp_name(".block-0001.nc.tmp-123")  # the old posterior_io form
    assert is_temp_name(".airfoil.data.abc123.part")  # the old mkstemp form
    assert not is_temp_name("block-0001.nc")
    assert not is_temp_name("airfoil.data")


# ----------------------------------------------------------------------------- 9: file modes


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.mirror
def test_table_and_prepared_file_honour_the_umask(mirror_dir, tmp_path, umask_022):
    download_dir = tmp_path / "download" / "airfoil"
    download_dir.mkdir(parents=True)
    shutil.copy2(mirror_dir / "airfoil.data", download_dir / "airfoil.data")
    table = make_table("airfoil", download_dir, tmp_path / "tables" / "airfoil.data")
    assert table.stat().st_mode & 0o777 == 0o644
    prepared = prepare_split(table, tmp_path / "prepared" / "airfoil" / "seed-0_std-full.nc",
                             dataset="airfoil", seed=0)
    assert prepared.stat().st_mode & 0o777 == 0o644


def test_atomic_bytes_honour_a_stricter_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_atomic(b"x", tmp_path / "f.data")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


# ----------------------------------------------------------------------------- 10: --config strings


def test_coerce_scalars_follows_the_schema():
    from interplay.config import coerce_scalars

    schema = study_config.load_schema("run")
    run = {
        "name": "r", "dataset": "airfoil",
        "sampler": {"chains": "4", "mclmc": {"phases": ["0.5", "0.25", "0.25"], "trust": "2"}},
        "prior": {"scale": "0.5", "bias_scale": "null"},
        "model": {"hidden": ["8", "8"], "bias": "false", "activation": "tanh", "sigma": "0.3"},
        "merge": {"drop_diverged": "true"},
        "data": {"standardise": "full", "max_train_points": "200"},
    }
    coerced = coerce_scalars(copy.deepcopy(run), schema)
    assert coerced["sampler"]["chains"] == 4 and isinstance(coerced["sampler"]["chains"], int)
    assert coerced["sampler"]["mclmc"]["phases"] == [0.5, 0.25, 0.25]
    assert coerced["sampler"]["mclmc"]["trust"] == 2
    assert coerced["prior"] == {"scale": 0.5, "bias_scale": None}
    assert coerced["model"] == {"hidden": [8, 8], "bias": False, "activation": "tanh", "sigma": 0.3}
    assert coerced["merge"]["drop_diverged"] is True
    assert coerced["data"] == {"standardise": "full", "max_train_points": 200}
    # strings the schema wants as strings stay; strings that are not numbers stay (and fail validation)
    assert coerce_scalars({"name": "1", "dataset": "2"}, schema) == {"name": "1", "dataset": "2"}
    assert coerce_scalars({"sampler": {"chains": "four"}}, schema) == {"sampler": {"chains": "four"}}
    # a float string where an integer is required is not truncated
    assert coerce_scalars({"sampler": {"chains": "4.5"}}, schema) == {"sampler": {"chains": "4.5"}}


def test_string_numbers_from_the_command_line_resolve():
    config = {"defaults": {"sampler": {"chains": "4", "block_size": "2"}, "prior": {"scale": "0.5"}},
              "runs": {"r": {"dataset": "airfoil"}}, "data": {"timeout": "30"}}
    runs = resolve_runs(config)
    assert runs["r"]["sampler"]["chains"] == 4 and runs["r"]["sampler"]["block_size"] == 2
    assert runs["r"]["prior"]["scale"] == 0.5
    assert config["data"]["timeout"] == 30


def test_nested_numeric_config_override_dry_run(project_root):
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules",
         "--config", "defaults={sampler: {chains: 4}}", "runs={cfgx: {dataset: airfoil}}"],
        cwd=project_root, capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "is not of type" not in done.stderr
    assert "results/posteriors/cfgx.nc" in done.stdout + done.stderr or "merge" in done.stdout


# ----------------------------------------------------------------------------- 11: improper flat priors


@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
def test_flat_bias_prior_with_hidden_layers_is_refused(activation):
    config = _config(x={"dataset": "airfoil", "model": {"hidden": [4], "activation": activation},
                        "prior": {"bias": "flat"}})
    with pytest.raises(ConfigError) as info:
        resolve_runs(config)
    message = str(info.value)
    assert "runs.x.prior.bias" in message and "improper" in message and activation in message


def test_flat_bias_prior_is_allowed_where_the_posterior_is_proper():
    config = _config(
        linear={"dataset": "airfoil", "model": {"hidden": []}, "prior": {"bias": "flat"}},
        linear_mean={"dataset": "airfoil", "model": {"hidden": [], "likelihood": "mean_regr"},
                     "prior": {"bias": "flat"}},
        nobias={"dataset": "airfoil", "model": {"hidden": [8], "bias": False}, "prior": {"bias": "flat"}},
    )
    assert set(resolve_runs(config)) == {"linear", "linear_mean", "nobias"}


def test_flat_bias_prior_of_a_linear_classifier_is_refused():
    config = _config(c={"dataset": "ionosphere", "model": {"hidden": [], "likelihood": "class"},
                        "prior": {"bias": "flat"}})
    with pytest.raises(ConfigError, match=r"runs\.c\.prior\.bias.*softmax"):
        resolve_runs(config)


# ----------------------------------------------------------------------------- 13: messages


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("study: x\nruns:\n  a: {dataset: airfoil\n  b: 1\n")
    with pytest.raises(ConfigError) as info:
        study_config.load_config(path)
    message = str(info.value)
    assert str(path) in message and "line 4" in message


def test_negative_prior_scale_says_must_be_positive():
    config = _config(r={"dataset": "airfoil", "prior": {"scale": -1}})
    with pytest.raises(ConfigError) as info:
        resolve_runs(config)
    assert "runs.r.prior.scale: -1 must be > 0" in str(info.value)


def test_bad_sweep_grid_key_is_named_in_the_sweep():
    config = {"sweeps": {"s": {"base": {"dataset": "airfoil"}, "grid": {"prior.scal": [1.0, 2.0]}}}}
    with pytest.raises(ConfigError) as info:
        resolve_runs(config)
    assert "sweeps.s.grid.prior.scal" in str(info.value)
    config = {"sweeps": {"s": {"base": {"dataset": "airfoil"}, "grid": {"data.seed+sampler.sed": [0, 1]}}}}
    with pytest.raises(ConfigError, match=r"sweeps\.s\.grid\.data\.seed\+sampler\.sed: .*'sed'"):
        resolve_runs(config)


def test_bundle_restore_prints_one_rebuild_command(tmp_path, monkeypatch, capsys):
    from interplay import bundle, cli

    dest = tmp_path / "restored"
    (dest / bundle.META_DIR).mkdir(parents=True)
    (dest / bundle.META_DIR / "bundle.json").write_text(
        json.dumps({"configfiles": ["tests/studies/tiny.yaml"], "include_draws": True}))
    report = bundle.VerifyReport(archive=tmp_path / "x.tar.gz", manifest_sha256="f" * 64, n_files=3)
    monkeypatch.setattr(bundle, "restore_bundle", lambda archive, d, expect=None: report)
    assert cli.main(["bundle", "restore", str(tmp_path / "x.tar.gz"), str(dest)]) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if "snakemake" in line]
    assert len(commands) == 1, out
    assert "--configfile bundle/config.yaml" in commands[0]
