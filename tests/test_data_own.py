"""Own data sets (config `datasets`): CSV and Parquet files written here, checked at config time, turned
into study tables and prepared splits like UCI data, their hashes recorded."""

import hashlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from interplay import config as study_config
from interplay.data import prepare_split
from interplay.data.own import OwnDataset, load_own_table, make_own_table, min_rows_for_split
from interplay.resources import data_shape


def frame(n=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": x @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=n),
                         "c": np.arange(n)})  # the target not last, an integer column


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_csv(path, data):
    data.to_csv(path, index=False)
    return path


def study(path, **entry):
    entry = {"path": str(path), "target": "y", "sha256": sha(path) if path.is_file() else None, **entry}
    return {"datasets": {"mydata": entry}, "runs": {"mine": {"dataset": "mydata"}}}


def resolve(config):
    return study_config.resolve_runs(config)


def test_csv_and_parquet_give_the_same_table(tmp_path):
    data = frame()
    csv = write_csv(tmp_path / "my.csv", data)
    parquet = tmp_path / "my.parquet"
    data.to_parquet(parquet, engine="pyarrow")
    tables = []
    for path in (csv, parquet):
        config = study(path)
        runs = resolve(config)
        assert runs["mine"]["dataset"] == "mydata"
        table = study_config.own_dataset_tables(config)["mydata"]
        assert table.columns == ("a", "b", "c", "y") and table.sha256 == sha(path)
        np.testing.assert_array_equal(table.values, data[["a", "b", "c", "y"]].to_numpy(float))
        out = make_own_table(OwnDataset.from_config("mydata", config["datasets"]["mydata"]),
                             tmp_path / f"{path.suffix[1:]}.data")
        tables.append(out.read_bytes())
    assert tables[0] == tables[1]
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "csv.data"), data[["a", "b", "c", "y"]].to_numpy(float))


def test_features_by_name_in_their_order_and_the_prepared_file(tmp_path):
    data = frame()
    csv = write_csv(tmp_path / "my.csv", data)
    config = study(csv, features=["c", "a"])
    resolve(config)
    dataset = OwnDataset.from_config("mydata", config["datasets"]["mydata"])
    table = load_own_table(dataset)
    assert table.features == ("c", "a")
    made = make_own_table(dataset, tmp_path / "mydata.data")
    out = prepare_split(made, tmp_path / "p.nc", dataset="mydata", seed=0, feature_names=table.features,
                        source={"path": dataset.path, "sha256": table.sha256})
    with xr.open_dataset(out) as ds:
        assert list(ds["feature"].values) == ["c", "a"]
        rows = ds["row"].values
        x = ds["x"].values * ds["x_std"].values + ds["x_mean"].values
        np.testing.assert_allclose(x, data[["c", "a"]].to_numpy(float)[rows], rtol=1e-12, atol=1e-12)
        assert ds.attrs["source"] == str(csv) and ds.attrs["source_sha256"] == sha(csv)
        assert ds.attrs["table_sha256"] == sha(made)
    assert data_shape(resolve(config)["mine"], study_config.own_data_shapes(config)).n_inputs == 2


def test_classification(tmp_path):
    data = frame()
    data["y"] = (data["a"] > 0).astype(float)
    csv = write_csv(tmp_path / "my.csv", data)
    config = study(csv, task="classification")
    config["runs"]["mine"]["model"] = {"likelihood": "class"}
    resolve(config)
    with pytest.raises(study_config.ConfigError, match="does not fit the classification dataset 'mydata'"):
        resolve(study(csv, task="classification"))
    data.loc[4, "y"] = 0.5
    bad = write_csv(tmp_path / "bad.csv", data)
    config = study(bad, task="classification")
    config["runs"]["mine"]["model"] = {"likelihood": "class"}
    with pytest.raises(study_config.ConfigError, match=r"bad.csv.*target column 'y'.*row 5 \(line 6\) holds 0.5"):
        resolve(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.rename(columns={"y": "target"}), r"my.csv\): no target column 'y'.*columns \['a', 'b', 'target', 'c'\]"),
        (lambda d: d.assign(b=["x"] * 3 + list(d["b"][3:])), r"my.csv\): column 'b' is not numeric .*row 1 \(line 2\) holds 'x'"),
        (lambda d: d.assign(a=[*d["a"][:7], np.nan, *d["a"][8:]]), r"my.csv\): column 'a' has 1 missing .*row 8 \(line 9\)"),
        (lambda d: d.assign(c=[np.inf, *d["c"][1:]]), r"column 'c' has 1 missing or non-finite .*non-finite value inf in row 1"),
        (lambda d: d.head(3), r"3 rows are too few for the 70/10/20 split \(train/valid/test = 2/0/1\); it needs at least 4 rows"),
    ],
    ids=["target", "non-numeric", "nan", "inf", "rows"],
)
def test_bad_tables_fail_at_config_time_naming_file_and_column(tmp_path, change, message):
    csv = write_csv(tmp_path / "my.csv", change(frame()))
    with pytest.raises(study_config.ConfigError, match=message):
        resolve(study(csv))


def test_smallest_table_passes(tmp_path):
    assert min_rows_for_split() == 4  # 2/1/1
    csv = write_csv(tmp_path / "my.csv", frame(n=min_rows_for_split()))
    resolve(study(csv))


def test_bad_declarations(tmp_path):
    csv = write_csv(tmp_path / "my.csv", frame())
    with pytest.raises(study_config.ConfigError, match=r"datasets.mydata \(.*nothere.csv\): the file .* does not exist"):
        resolve(study(tmp_path / "nothere.csv"))
    with pytest.raises(study_config.ConfigError, match=r"no feature column\(s\) \['z'\] \(datasets.mydata.features\)"):
        resolve(study(csv, features=["a", "z"]))
    with pytest.raises(study_config.ConfigError, match="target column 'y' is also listed"):
        resolve(study(csv, features=["a", "y"]))
    with pytest.raises(study_config.ConfigError, match=f"no pinned hash; pin .*sha256: {sha(csv)}"):
        resolve(study(csv, sha256=None))
    with pytest.raises(study_config.ConfigError, match=f"has sha256 {sha(csv)}, expected the pinned {'0' * 64}"):
        resolve(study(csv, sha256="0" * 64))
    with pytest.raises(study_config.ConfigError, match="sha256"):
        resolve(study(csv, sha256="abc"))  # the schema: 64 hex digits
    other = tmp_path / "my.txt"
    other.write_bytes(csv.read_bytes())
    with pytest.raises(study_config.ConfigError, match="cannot tell the format from the suffix '.txt'"):
        resolve(study(other))
    resolve(study(other, format="csv"))
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(study_config.ConfigError, match=r"g.parquet\): not a readable parquet table"):
        resolve(study(garbage))
    clash = study(csv)
    clash["datasets"] = {"airfoil": clash["datasets"]["mydata"]}
    with pytest.raises(study_config.ConfigError, match="datasets.airfoil: the name is taken by a UCI data set"):
        resolve(clash)
    with pytest.raises(study_config.ConfigError, match="target"):
        resolve({"datasets": {"mydata": {"path": str(csv)}}})


def test_table_changes_are_seen_in_the_same_process(tmp_path):
    csv = write_csv(tmp_path / "my.csv", frame())
    config = study(csv)
    resolve(config)
    write_csv(csv, frame(seed=1))
    with pytest.raises(study_config.ConfigError, match="the file changed"):
        resolve(config)


def test_pipeline_prepares_an_own_data_set(project_root, tmp_path):
    """Snakemake plans table -> prepare -> sample for a run on an own CSV and makes both prepared splits."""
    csv = write_csv(tmp_path / "my.csv", frame(n=40))
    config = tmp_path / "study.yaml"
    config.write_text(f"""
study: own
datasets:
  mydata: {{path: my.csv, target: y, features: [a, b, c], sha256: {sha(csv)}}}
runs:
  mine: {{dataset: mydata, model: {{hidden: [4]}}, sampler: {{chains: 2, block_size: 2}}}}
  paper_split: {{dataset: mydata, data: {{split: authors, seed: 42}}, model: {{hidden: [4]}},
                sampler: {{chains: 2, block_size: 2}}}}
figures: {{}}
""")
    base = [sys.executable, "-m", "snakemake", "-s", str(project_root / "Snakefile"), "-d", str(tmp_path),
            "--configfile", str(config), "--cores", "1"]
    plan = subprocess.run([*base, "-n", "results/posteriors/mine.nc", "--quiet", "rules"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    for rule in ("table", "prepare", "sample", "merge"):
        assert rule in plan.stdout + plan.stderr
    targets = ["results/data/prepared/mydata/seed-0_std-full.nc", "results/data/prepared/mydata/authors-42_std-full.nc"]
    made = subprocess.run([*base, *targets], capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    orders = []
    for target in targets:
        with xr.open_dataset(tmp_path / target) as ds:
            assert list(ds["feature"].values) == ["a", "b", "c"]
            assert ds.attrs["source"] == "my.csv" and ds.attrs["source_sha256"] == sha(csv)
            assert ds.attrs["table_sha256"] == sha(tmp_path / "results/data/tables/mydata.data")
            orders.append(ds["row"].values)
    assert not np.array_equal(*orders)
    # A bad file fails before any job, naming it.
    write_csv(csv, frame(n=40).drop(columns="y"))
    failed = subprocess.run([*base, "-n", "results/posteriors/mine.nc"], capture_output=True, text=True, timeout=300, check=False)
    assert failed.returncode != 0 and "no target column 'y'" in failed.stdout + failed.stderr
