"""Result bundles: round trip, tamper detection, --no-draws, deterministic bytes, and a restored
bundle that Snakemake sees as up to date (figures rebuild without any sampling job).

Everything runs on a small fake project in a temp dir: real NetCDF posteriors in the DESIGN.md
layout, a miniature Snakefile with the pipeline's stages (download -> table -> prepare -> sample ->
merge -> analysis -> figure), the real `interplay` CLI through subprocess and real `snakemake -n`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from datetime import datetime, timedelta
from pathlib import Path

import bagit
import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml
from rocrate.rocrate import ROCrate

from interplay import bag, bundle, crate
from interplay.posterior_io import strip_draws
from snakemake_dry_run import dry_run_jobs

DATE = "20260102"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESOLVED = {
    "toy-a": {"name": "toy-a", "dataset": "toy", "sampler": {"kind": "mile", "chains": 3}},
    "toy-b": {"name": "toy-b", "dataset": "toy", "sampler": {"kind": "nuts", "chains": 3}},
}

MINI_SNAKEFILE = """
configfile: "config.yaml"
RUNS = config["runs"]

rule all:
    input: "results/figures/all.pdf"

rule download:
    output: "results/data/download/{dataset}/raw.txt"
    shell: "echo raw > {output}"

rule table:
    input: "results/data/download/{dataset}/raw.txt"
    output: "results/data/tables/{dataset}.data"
    shell: "cp {input} {output}"

rule prepare:
    input: "results/data/tables/{dataset}.data"
    output: "results/data/prepared/{dataset}/seed-0_std-full.nc"
    shell: "cp {input} {output}"

rule sample:
    input: "results/data/prepared/toy/seed-0_std-full.nc"
    output: "results/samples/{run}/block-{block}.nc"
    shell: "cp {input} {output}"

rule merge:
    input: lambda w: expand("results/samples/{run}/block-{block}.nc", run=w.run, block=["0000"])
    output: "results/posteriors/{run}.nc"
    shell: "cp {input} {output}"

rule analysis:
    input: post="results/posteriors/{run}.nc", data="results/data/prepared/toy/seed-0_std-full.nc"
    output: "results/analysis/{run}/lppd.csv"
    shell: "echo lppd > {output}"

rule figure:
    input: expand("results/analysis/{run}/lppd.csv", run=sorted(RUNS))
    output: pdf="results/figures/fig1.pdf", png="results/figures/fig1.png"
    script: "workflow/scripts/figure.py"

rule all_figures:
    input: "results/figures/fig1.pdf"
    output: "results/figures/all.pdf"
    shell: "cp {input} {output}"
"""


# ---------------------------------------------------------------------------------------------
# fake project


def write_posterior(path: Path, seed: int, n_chain: int = 3, n_draw: int = 5, n_test: int = 7) -> None:
    """A merged posterior in the DESIGN.md layout (root attrs, posterior, sample_stats, predictive)."""
    rng = np.random.default_rng(seed)
    chain = np.arange(n_chain)
    posterior = xr.Dataset(
        {
            "kernel_0": (("chain", "draw", "units_0", "units_1"),
                         rng.normal(size=(n_chain, n_draw, 2, 4)).astype("float32")),
            "bias_0": (("chain", "draw", "units_1"), rng.normal(size=(n_chain, n_draw, 4)).astype("float32")),
            "kernel_1": (("chain", "draw", "units_1", "units_2"),
                         rng.normal(size=(n_chain, n_draw, 4, 1)).astype("float32")),
        },
        coords={"chain": chain, "draw": np.arange(n_draw)},
    )
    for layer, name in ((0, "kernel_0"), (0, "bias_0"), (1, "kernel_1")):
        posterior[name].attrs.update(prior_scale=1.0, layer=layer)
    sample_stats = xr.Dataset(
        {"step_size": ("chain", rng.uniform(0.01, 0.1, n_chain)), "diverged": ("chain", np.zeros(n_chain, "int8"))},
        coords={"chain": chain},
    )
    predictive = xr.Dataset(
        {
            "log_pred_density": (("chain", "test_point"), rng.normal(size=(n_chain, n_test))),
            "pred_mean": (("chain", "test_point"), rng.normal(size=(n_chain, n_test))),
            "pit": (("chain", "test_point"), rng.uniform(size=(n_chain, n_test))),
            "pred_draws": (("chain", "draw", "diag_point"), rng.normal(size=(n_chain, n_draw, 2))),
            "y_test": ("test_point", rng.normal(size=n_test)),
        },
        coords={"chain": chain},
    )
    attrs = {"run": path.stem, "config": json.dumps({"name": path.stem}), "seed": seed, "blocks": 1,
             "n_diverged_dropped": 0}
    xr.Dataset(attrs=attrs).to_netcdf(path, mode="w", engine="netcdf4")
    encoding = {name: {"zlib": True, "chunksizes": (1, *posterior[name].shape[1:])} for name in posterior.data_vars}
    posterior.to_netcdf(path, group="posterior", mode="a", engine="netcdf4", encoding=encoding)
    for group, data in (("sample_stats", sample_stats), ("predictive", predictive)):
        # DESIGN.md: chunked along chain (chunk = block size) and zlib-compressed
        encoding = {name: {"zlib": True, "chunksizes": (2, *data[name].shape[1:])}
                    for name in data.data_vars if data[name].dims[0] == "chain"}
        data.to_netcdf(path, group=group, mode="a", engine="netcdf4", encoding=encoding)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def make_project(root: Path) -> Path:
    """Source tree and a results tree written in pipeline order (so mtimes are consistent)."""
    write(root / "Snakefile", MINI_SNAKEFILE)
    write(root / "config.yaml", yaml.safe_dump({"study": "toy", "runs": {"toy-a": {}, "toy-b": {}}}))
    write(root / "workflow" / "scripts" / "figure.py", "for f in snakemake.output: open(f, 'w').write('fig')\n")
    write(root / "workflow" / "rules" / "extra.smk", "# nothing\n")
    write(root / "src" / "toy" / "__init__.py", "VALUE = 1\n")
    write(root / "src" / "toy" / "__pycache__" / "junk.cpython-311.pyc", b"\x00junk")
    write(root / "pyproject.toml", "[project]\nname = 'toy'\n")
    write(root / "requirements.lock", "numpy==2.0.0\n")
    write(root / "envs" / "env.yaml", "dependencies: [python]\n")
    write(root / ".snakemake" / "metadata" / "x", "not bundled")
    results = root / "results"
    write(results / "data" / "download" / "toy" / "raw.txt", "raw\n")
    write(results / "data" / "tables" / "toy.data", "1 2\n3 4\n")
    prepared = results / "data" / "prepared" / "toy" / "seed-0_std-full.nc"
    prepared.parent.mkdir(parents=True)
    xr.Dataset({"x": (("row", "feature"), np.arange(6.0).reshape(3, 2))}).to_netcdf(prepared, engine="netcdf4")
    for seed, run in enumerate(sorted(RESOLVED)):
        write_posterior(write(results / "samples" / run / "block-0000.nc", b""), seed)
        (results / "posteriors").mkdir(exist_ok=True)
        write_posterior(results / "posteriors" / f"{run}.nc", seed)
        write(results / "logs" / "sample" / run / "block-0000.log", f"sampled {run}\n")
        write(results / "benchmarks" / "sample" / f"{run}-0000.tsv", "s\tmax_rss\n1.0\t100\n")
    for run in sorted(RESOLVED):
        write(results / "analysis" / run / "lppd.csv", f"chain,lppd\n0,-1.{len(run)}\n")
    write(results / "figures" / "fig1.pdf", b"%PDF-1.4 fig")
    write(results / "figures" / "fig1.png", b"\x89PNG fig")
    write(results / "figures" / "all.pdf", b"%PDF-1.4 all")
    write(results / "report.html", "<html>report</html>")
    write(results / "bundles" / "old.tar.gz", b"an older bundle")
    write(results / "logs" / "bundle" / "old.log", "the bundle rule's own log")
    return root


EXCLUDED = (
    "results/samples/toy-a/block-0000.nc",
    "results/data/download/toy/raw.txt",
    "results/bundles/old.tar.gz",
    "results/logs/bundle/old.log",
    "src/toy/__pycache__/junk.cpython-311.pyc",
    ".snakemake/metadata/x",
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def created(project, tmp_path_factory) -> bundle.CreatedBundle:
    out = tmp_path_factory.mktemp("bundles")
    config = yaml.safe_load((project / "config.yaml").read_text())
    return bundle.create_bundle(
        "toy", root=project, out=out, config=config, resolved=RESOLVED,
        configfiles=[project / "config.yaml"], date=DATE,
    )


def interplay_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("interplay")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "interplay.cli"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, env=env, check=False)


def read_members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}


def write_members(archive: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def manifest_of(members: dict[str, bytes], top: str) -> dict:
    return bag.parse_manifest(members[f"{top}/{bag.MANIFEST_NAME}"].decode())


def payload_of(manifest: dict[str, str]) -> dict[str, str]:
    """The manifest's entries by project path (each is data/<project path> in the bag)."""
    assert all(rel.startswith(bag.PAYLOAD_DIR + "/") for rel in manifest), sorted(manifest)
    return {rel.removeprefix(bag.PAYLOAD_DIR + "/"): digest for rel, digest in manifest.items()}


def unpack(archive: Path, where: Path) -> Path:
    """Plain extraction (what anyone does with the archive) into ``where``."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(where, filter="data")
    return where


# ---------------------------------------------------------------------------------------------
# create / verify / restore


def test_cli_round_trip(project, tmp_path):
    resolved_file = write(tmp_path / "resolved.json", json.dumps(RESOLVED))
    out = tmp_path / "bundles"
    made = interplay_cli("bundle", "create", "--study", "toy", "--root", str(project), "--out", str(out),
                         "--configfile", str(project / "config.yaml"), "--resolved", str(resolved_file),
                         "--date", DATE)
    assert made.returncode == 0, made.stderr
    archive = out / f"toy-{DATE}-nogit.tar.gz"
    assert archive.is_file()
    summary = json.loads((out / f"toy-{DATE}-nogit.json").read_text())
    manifest_sha256 = summary["manifest_sha256"]
    assert f"manifest sha256: {manifest_sha256}" in made.stdout
    assert summary["archive_sha256"] == bundle.sha256_file(archive)

    checked = interplay_cli("bundle", "verify", str(archive), "--expect", manifest_sha256)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout

    dest = tmp_path / "restored"
    restored = interplay_cli("bundle", "restore", str(archive), str(dest), "--expect", manifest_sha256)
    assert restored.returncode == 0, restored.stderr
    assert "snakemake --cores all --configfile bundle/config.yaml" in restored.stdout
    assert restored.stdout.count("snakemake ") == 1  # one rebuild command, not two

    listed = payload_of(manifest_of(read_members(archive), archive.name.removesuffix(".tar.gz")))
    assert summary["n_files"] == len(listed)
    for rel, digest in listed.items():  # (the manifest has no sizes: BagIt lists sha256 only)
        assert bundle.sha256_file(dest / rel) == digest, rel
        if not rel.startswith(bundle.META_DIR + "/") and rel != crate.METADATA_NAME:  # (made by create)
            # everything else is a byte copy of the project
            assert (dest / rel).read_bytes() == (project / rel).read_bytes(), rel
    # every file of the source and results trees the bundle should hold is there
    for rel in ("Snakefile", "config.yaml", "workflow/scripts/figure.py", "workflow/rules/extra.smk",
                "src/toy/__init__.py", "pyproject.toml", "requirements.lock", "envs/env.yaml",
                "results/posteriors/toy-a.nc", "results/posteriors/toy-b.nc", "results/analysis/toy-a/lppd.csv",
                "results/figures/all.pdf", "results/figures/fig1.png", "results/report.html",
                "results/logs/sample/toy-b/block-0000.log", "results/benchmarks/sample/toy-a-0000.tsv",
                "results/data/tables/toy.data", "results/data/prepared/toy/seed-0_std-full.nc"):
        assert rel in listed, rel
    for rel in EXCLUDED:
        assert rel not in listed and not (dest / rel).exists(), rel

    meta = json.loads((dest / "bundle" / "bundle.json").read_text())
    assert meta["study"] == "toy" and meta["date"] == DATE and meta["include_draws"] is True
    assert meta["format"] == 2
    assert meta["configfiles"] == ["config.yaml"] and meta["git"]["commit"] is None
    assert json.loads((dest / "bundle" / "resolved_config.json").read_text()) == RESOLVED
    assert yaml.safe_load((dest / "bundle" / "config.yaml").read_text()) == yaml.safe_load(
        (project / "config.yaml").read_text())
    environment = json.loads((dest / "bundle" / "environment.json").read_text())
    import importlib.metadata

    assert environment["packages"]["xarray"] == importlib.metadata.version("xarray")
    assert environment["python"] == ".".join(map(str, sys.version_info[:3]))
    assert environment["jax"]["backend"] == "cpu" and environment["jax"]["device_kinds"]
    host = environment["host"]  # the capacity the bundled benchmark files were measured on
    assert host["cpu_count_logical"] == os.cpu_count() and 1 <= host["cpu_count_physical"] <= os.cpu_count()
    assert host["memory_total_bytes"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    unpacked = unpack(archive, tmp_path / "unpacked") / archive.name.removesuffix(".tar.gz")
    if shutil.which("sha256sum"):  # anyone can check the unpacked bundle without interplay
        for manifest in (bag.MANIFEST_NAME, bag.TAGMANIFEST_NAME):
            coreutils = subprocess.run(["sha256sum", "--strict", "-c", manifest], cwd=unpacked,
                                       capture_output=True, text=True, check=False)
            assert coreutils.returncode == 0, coreutils.stdout + coreutils.stderr


def test_verify_library_report(created):
    report = bundle.verify_bundle(created.path, expect=created.manifest_sha256)
    assert report.ok and report.manifest_sha256 == created.manifest_sha256
    assert report.n_files == created.n_files and report.top == created.path.name.removesuffix(".tar.gz")


def test_unpacked_bundle_is_a_valid_bag(created, tmp_path):
    top = created.path.name.removesuffix(".tar.gz")
    unpacked = unpack(created.path, tmp_path) / top
    bagged = bagit.Bag(str(unpacked))
    bagged.validate()  # raises BagValidationError on any finding
    assert bagged.version_info == (1, 0) and bagged.algorithms == ["sha256"]
    info = bagged.info
    assert info["Study"] == "toy" and info["Bagging-Date"] == "2026-01-02"
    assert info["Code-Version"].startswith("none") and info["External-Identifier"] == top  # no git here
    assert info["Payload-Oxum"] == f"{created.total_bytes}.{created.n_files}"
    listed = set(bagged.payload_entries())
    assert "data/results/posteriors/toy-a.nc" in listed and f"data/{crate.METADATA_NAME}" in listed
    assert len(listed) == created.n_files
    # the tag manifest is the fingerprint: its sha256 is the reference create prints
    assert hashlib.sha256((unpacked / bag.TAGMANIFEST_NAME).read_bytes()).hexdigest() == created.manifest_sha256


def test_payload_is_a_workflow_run_crate(project, created, tmp_path):
    top = created.path.name.removesuffix(".tar.gz")
    payload = unpack(created.path, tmp_path) / top / bag.PAYLOAD_DIR
    read = ROCrate(payload)  # rocrate's own reader
    root = read.root_dataset
    profiles = {entity["@id"] if isinstance(entity, dict) else entity.id for entity in root["conformsTo"]}
    assert {"https://w3id.org/ro/wfrun/process/0.6", "https://w3id.org/ro/wfrun/workflow/0.6",
            "https://w3id.org/workflowhub/workflow-ro-crate/1.1"} <= profiles
    assert root["datePublished"] == "2026-01-02"

    workflow = read.mainEntity
    assert workflow.id == "Snakefile" and set(workflow.type) == {"File", "SoftwareSourceCode", "ComputationalWorkflow"}
    assert workflow["programmingLanguage"].id.endswith("#snakemake")
    requirements = {entity["name"]: entity["softwareVersion"] for entity in workflow["softwareRequirements"]}
    import importlib.metadata

    assert requirements["xarray"] == importlib.metadata.version("xarray")
    assert requirements["Python" if "Python" in requirements else "CPython"] == ".".join(
        map(str, sys.version_info[:3]))

    (action,) = read.get_by_type("CreateAction")
    assert action["instrument"] is workflow
    assert {entity.id for entity in action["object"]} == {"bundle/config.yaml", "bundle/resolved_config.json",
                                                           "config.yaml"}
    results = {entity.id: entity for entity in action["result"]}
    listed = payload_of(manifest_of(read_members(created.path), top))
    assert set(results) == {rel for rel in listed if rel.startswith("results/")}  # every output, only outputs
    assert results["results/posteriors/toy-a.nc"]["encodingFormat"] == "application/x-netcdf"
    assert results["results/analysis/toy-a/lppd.csv"]["encodingFormat"] == "text/csv"
    assert results["results/figures/fig1.png"]["encodingFormat"] == "image/png"
    for rel, entity in results.items():
        assert int(entity["contentSize"]) == (payload / rel).stat().st_size, rel
    # the run's start and end: when its first and last outputs were written (UTC, whole seconds)
    stamps = [int((project / rel).stat().st_mtime) for rel in results]
    start, end = (datetime.fromisoformat(action[key]) for key in ("startTime", "endTime"))
    assert (start.timestamp(), end.timestamp()) == (min(stamps), max(stamps)) and start.utcoffset() == timedelta(0)
    assert action["actionStatus"] == "http://schema.org/CompletedActionStatus"  # (not an entity: its @id)
    # every file of the payload (but the metadata file itself) is an entity of the crate
    assert {entity.id for entity in read.data_entities} == set(listed) - {crate.METADATA_NAME}


def _edit_file(members, top):
    name = f"{top}/data/results/analysis/toy-a/lppd.csv"
    members[name] = members[name].replace(b"-1.", b"-2.")
    return ["ALTERED  data/results/analysis/toy-a/lppd.csv"]


def _remove_file(members, top):
    del members[f"{top}/data/results/posteriors/toy-b.nc"]
    return ["MISSING  data/results/posteriors/toy-b.nc"]


def _add_file(members, top):
    members[f"{top}/data/results/figures/fake.png"] = b"not made by the pipeline"
    members["elsewhere/readme.txt"] = b"outside the bundle directory"
    return ["EXTRA    data/results/figures/fake.png", "EXTRA    elsewhere/readme.txt"]


def _edit_manifest(members, top):
    # claim another hash for a file: the manifest no longer matches its recorded sha256
    name = f"{top}/{bag.MANIFEST_NAME}"
    text = members[name].decode()
    digest = manifest_of(members, top)["data/results/figures/all.pdf"]
    members[name] = text.replace(digest, "0" * 64).encode()
    return ["ALTERED  data/results/figures/all.pdf", f"PROBLEM  {bag.MANIFEST_NAME} altered"]


def _drop_manifest_line(members, top):
    name = f"{top}/{bag.MANIFEST_NAME}"
    lines = members[name].decode().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.endswith("  data/results/report.html\n"))
    members[name] = "".join(lines[:index] + lines[index + 1:]).encode()  # (no "# size" line before it)
    return ["EXTRA    data/results/report.html", f"PROBLEM  {bag.MANIFEST_NAME} altered"]


@pytest.mark.parametrize("tamper", [_edit_file, _remove_file, _add_file, _edit_manifest, _drop_manifest_line])
def test_tampering_is_detected(created, tmp_path, tamper):
    members = read_members(created.path)
    top = created.path.name.removesuffix(".tar.gz")
    expected = tamper(members, top)
    tampered = write_members(tmp_path / "tampered.tar.gz", members)

    result = interplay_cli("bundle", "verify", str(tampered))
    assert result.returncode == 1
    for line in expected:
        assert any(out.startswith(line) for out in result.stdout.splitlines()), (line, result.stdout)
    assert "FAILED" in result.stderr

    dest = tmp_path / "restored"
    refused = interplay_cli("bundle", "restore", str(tampered), str(dest))
    assert refused.returncode == 1 and "does not verify" in refused.stderr
    assert not dest.exists()

    # the bagit library, on the plainly unpacked bag, finds it invalid too
    with pytest.raises(bagit.BagValidationError):
        bagit.Bag(str(unpack(tampered, tmp_path / "unpacked") / top)).validate()


def test_remade_manifest_needs_the_outside_reference(created, tmp_path):
    """Edit a file and re-make both manifest files to match: the archive is self-consistent, so
    only the manifest sha256 kept outside the bundle (--expect) can tell."""
    members = read_members(created.path)
    top = created.path.name.removesuffix(".tar.gz")
    _edit_file(members, top)
    payload = {name[len(top) + 1:]: hashlib.sha256(data).hexdigest()
               for name, data in members.items() if name.startswith(f"{top}/{bag.PAYLOAD_DIR}/")}
    members[f"{top}/{bag.MANIFEST_NAME}"] = bag.manifest_text(payload).encode()
    tags = {name: hashlib.sha256(members[f"{top}/{name}"]).hexdigest()
            for name in (bag.BAGIT_NAME, bag.BAG_INFO_NAME, bag.MANIFEST_NAME)}
    tagmanifest = bag.manifest_text(tags).encode()
    members[f"{top}/{bag.TAGMANIFEST_NAME}"] = tagmanifest
    forged_sha256 = hashlib.sha256(tagmanifest).hexdigest()
    forged = write_members(tmp_path / "forged.tar.gz", members)
    bagit.Bag(str(unpack(forged, tmp_path / "unpacked") / top)).validate()  # a valid bag: the documented limit

    assert interplay_cli("bundle", "verify", str(forged)).returncode == 0  # the documented limit
    result = interplay_cli("bundle", "verify", str(forged), "--expect", created.manifest_sha256)
    assert result.returncode == 1
    assert f"is not the expected {created.manifest_sha256}" in result.stdout
    assert forged_sha256 in result.stdout
    with pytest.raises(bundle.BundleError, match="does not verify"):
        bundle.restore_bundle(forged, tmp_path / "restored", expect=created.manifest_sha256)


def test_member_appended_after_the_end_is_detected(created, tmp_path):
    """A second tar appended to the archive (plain `tar` stops at the first end marker)."""
    top = created.path.name.removesuffix(".tar.gz")
    appended_tar = io.BytesIO()
    with tarfile.open(fileobj=appended_tar, mode="w") as tar:
        info = tarfile.TarInfo(f"{top}/data/results/figures/hidden.png")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hidden"))
    appended = write(tmp_path / "appended.tar.gz", created.path.read_bytes() + gzip.compress(appended_tar.getvalue()))
    report = bundle.verify_bundle(appended)
    assert not report.ok and report.extra == ["data/results/figures/hidden.png"]


def test_corrupt_archive_is_reported(created, tmp_path):
    data = bytearray(created.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt = write(tmp_path / "corrupt.tar.gz", bytes(data))
    result = interplay_cli("bundle", "verify", str(corrupt))
    assert result.returncode == 1 and "archive unreadable" in result.stdout


def test_no_draws_keeps_predictive_and_stats(project, created, tmp_path):
    lean = bundle.create_bundle("toy", root=project, out=tmp_path, resolved=RESOLVED, include_draws=False,
                                date=DATE)
    assert bundle.verify_bundle(lean.path).ok
    assert lean.total_bytes < created.total_bytes
    dest = tmp_path / "restored"
    bundle.restore_bundle(lean.path, dest, expect=lean.manifest_sha256)
    assert json.loads((dest / "bundle" / "bundle.json").read_text())["include_draws"] is False
    for run in sorted(RESOLVED):
        original = project / "results" / "posteriors" / f"{run}.nc"
        stripped = dest / "results" / "posteriors" / f"{run}.nc"
        with netCDF4.Dataset(stripped) as nc, netCDF4.Dataset(original) as full:
            assert set(nc.groups) == {"sample_stats", "predictive"}
            assert nc.getncattr("draws_omitted") == 1
            for name in full.ncattrs():
                assert nc.getncattr(name) == full.getncattr(name)
        for group in ("sample_stats", "predictive"):
            with xr.open_dataset(original, group=group) as a, xr.open_dataset(stripped, group=group) as b:
                xr.testing.assert_identical(a, b)
        # copied in slabs of a few chains (as for ~1 GB pred_draws at 10,000 chains): same values
        small_slabs = tmp_path / f"{run}-slabs.nc"
        strip_draws(original, small_slabs, slab_bytes=256)
        with xr.open_dataset(original, group="predictive") as a, xr.open_dataset(small_slabs, group="predictive") as b:
            xr.testing.assert_identical(a, b)
            assert b["pred_draws"].encoding["chunksizes"] == a["pred_draws"].encoding["chunksizes"] == (2, 5, 2)
    # the rest of the tree is untouched
    assert (dest / "results/analysis/toy-a/lppd.csv").read_bytes() == (
        project / "results/analysis/toy-a/lppd.csv").read_bytes()


def test_identical_inputs_give_identical_bytes(project, created, tmp_path):
    again = bundle.create_bundle(
        "toy", root=project, out=tmp_path / "again", config=yaml.safe_load((project / "config.yaml").read_text()),
        resolved=RESOLVED, configfiles=[project / "config.yaml"], date=DATE,
    )
    os.utime(project / "src" / "toy" / "__init__.py", (1, 1))  # mtimes are not part of the bundle
    assert again.path.read_bytes() == created.path.read_bytes()
    lean = [bundle.create_bundle("toy", root=project, out=tmp_path / f"lean{i}", resolved=RESOLVED,
                                 include_draws=False, date=DATE) for i in range(2)]
    assert lean[0].path.read_bytes() == lean[1].path.read_bytes()
    # and any change of content changes them
    other = bundle.create_bundle("toy", root=project, out=tmp_path / "other", resolved={"toy-a": {}}, date=DATE)
    assert other.archive_sha256 != lean[0].archive_sha256 != created.archive_sha256
    with gzip.open(created.path) as gz, tarfile.open(fileobj=gz) as tar:
        members = tar.getmembers()
    names = [m.name.split("/", 1)[1] for m in members]
    assert names[-4:] == list(bag.TAG_FILES)
    assert names[:-4] == sorted(names[:-4])
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {
        (0, 0, "", "", bundle._check_date(DATE))}


def test_git_commit_and_dirty_diff(tmp_path):
    root = make_project(tmp_path / "gitproject")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]
    write(root / ".gitignore", "/results/\n/.snakemake/\n__pycache__/\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run([*git, *args], cwd=root, check=True, capture_output=True)
    short = subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], cwd=root, capture_output=True,
                           text=True, check=True).stdout.strip()
    clean = bundle.create_bundle("toy", root=root, resolved=RESOLVED, date=DATE)
    assert clean.path == root / "results" / "bundles" / f"toy-{DATE}-{short}.tar.gz"
    assert f"toy-{DATE}-{short}/data/bundle/git.diff" not in read_members(clean.path)

    write(root / "src" / "toy" / "__init__.py", "VALUE = 2\n")
    write(root / "src" / "toy" / "new.py", "NEW = True\n")  # untracked code is bundled too
    dirty = bundle.create_bundle("toy", root=root, resolved=RESOLVED, date=DATE, out=tmp_path / "dirty")
    members = read_members(dirty.path)
    top = f"toy-{DATE}-{short}/data"
    assert "+VALUE = 2" in members[f"{top}/bundle/git.diff"].decode()
    assert "src/toy/new.py" in members[f"{top}/bundle/git-status.txt"].decode()
    assert members[f"{top}/src/toy/new.py"] == b"NEW = True\n"
    meta = json.loads(members[f"{top}/bundle/bundle.json"])
    assert meta["git"]["dirty"] is True and meta["git"]["short"] == short


# ---------------------------------------------------------------------------------------------
# restored bundles and Snakemake


def test_restored_bundle_rebuilds_figures_without_sampling(created, tmp_path):
    dest = tmp_path / "restored"
    bundle.restore_bundle(created.path, dest)
    assert not (dest / "results" / "samples").exists()  # the chain blocks are not bundled
    assert dry_run_jobs(dest) == {}

    # figures and tables can be rebuilt from the bundled posteriors: no sampling, merging or data job
    shutil.rmtree(dest / "results" / "analysis")
    shutil.rmtree(dest / "results" / "figures")
    jobs = dry_run_jobs(dest)
    assert jobs == {"analysis": 2, "figure": 1, "all_figures": 1, "all": 1}


def test_plain_extraction_is_not_enough(created, tmp_path):
    """Why restore sets mtimes: unpacked as stored (one mtime for all), Snakemake reruns the figure
    because its outputs are not newer than the figure script."""
    with tarfile.open(created.path, "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    jobs = dry_run_jobs(tmp_path / created.path.name.removesuffix(".tar.gz") / bag.PAYLOAD_DIR)
    assert "figure" in jobs and "sample" not in jobs


def test_snakemake_bundle_rule(tmp_path):
    root = make_project(tmp_path / "project")
    shutil.rmtree(root / "results" / "bundles")
    write_posterior(root / "results" / "posteriors" / "other-x.nc", 7)  # not a run of this study
    write(root / "results" / "analysis" / "other-x" / "lppd.csv", "chain,lppd\n0,-9\n")
    snakefile = (root / "Snakefile").read_text()
    # what the real Snakefile's common.smk gives the bundle rule
    common = (
        'CPU_ENV = "../../envs/cpu.yaml"\n'
        'config.setdefault("bundle", {"draws": True})\n'
        'def bundle_inputs(wildcards):\n'
        '    return expand("results/posteriors/{run}.nc", run=sorted(RUNS))\n'
    )
    write(root / "Snakefile", snakefile + common + f'\ninclude: "{PROJECT_ROOT}/workflow/rules/bundle.smk"\n')
    done = subprocess.run([sys.executable, "-m", "snakemake", "bundle", "--cores", "1"], cwd=root,
                          capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False)
    assert done.returncode == 0, done.stderr
    archives = list((root / "results" / "bundles").glob("toy-*-nogit.tar.gz"))
    assert len(archives) == 1 and archives[0].name == f"toy-{bundle.today()}-nogit.tar.gz"
    summary = json.loads(archives[0].with_name(archives[0].name.replace(".tar.gz", ".json")).read_text())
    assert bundle.verify_bundle(archives[0], expect=summary["manifest_sha256"]).ok
    members = read_members(archives[0])
    top = archives[0].name.removesuffix(".tar.gz") + "/data"
    assert json.loads(members[f"{top}/bundle/resolved_config.json"]) == {"toy-a": {}, "toy-b": {}}
    assert json.loads(members[f"{top}/bundle/bundle.json"])["configfiles"] == ["config.yaml"]
    assert f"{top}/results/figures/all.pdf" in members
    assert f"{top}/results/posteriors/toy-b.nc" in members
    assert not [name for name in members if "other-x" in name]
    assert f"manifest sha256: {summary['manifest_sha256']}" in done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_gives_clear_errors(project, created, tmp_path):
    with pytest.raises(bundle.BundleError, match="no merged posteriors"):
        bundle.create_bundle("toy", root=project, results=tmp_path, resolved={}, date=DATE)
    with pytest.raises(bundle.BundleError, match="YYYYMMDD"):
        bundle.create_bundle("toy", root=project, out=tmp_path, resolved={}, date="2026-01-02")
    with pytest.raises(bundle.BundleError, match="cannot be used in a file name"):
        bundle.create_bundle("../toy", root=project, out=tmp_path, resolved={}, date=DATE)
    write(tmp_path / "full" / "something", "x")
    with pytest.raises(bundle.BundleError, match="not an empty directory"):
        bundle.restore_bundle(created.path, tmp_path / "full")
    with pytest.raises(bundle.BundleError, match="names no study"):
        bundle.study_name({"runs": {}})
    missing = interplay_cli("bundle", "verify", str(tmp_path / "nope.tar.gz"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    unresolvable = interplay_cli("bundle", "create", "--root", str(project), "--out", str(tmp_path / "b"))
    assert unresolvable.returncode == 1 and "cannot resolve the study's runs" in unresolvable.stderr


# ---------------------------------------------------------------------------------------------
# bounded memory: verify and restore never hold a member, and read the manifest at its one place


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, read in pieces (a large member without holding it in memory)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _with_member(source: Path, target: Path, name: str, size: int, replace: bool = False) -> Path:
    """A copy of the bundle ``source`` with a member of ``size`` zero bytes called ``name`` (in
    place of the stored one with ``replace``), written streaming."""
    with tarfile.open(source, "r:gz") as old, tarfile.open(target, "w:gz", compresslevel=1) as new:
        for member in old.getmembers():
            if replace and member.name == name:
                continue
            new.addfile(member, old.extractfile(member) if member.isreg() else None)
        info = tarfile.TarInfo(name)
        info.size = size
        new.addfile(info, io.BufferedReader(_Zeros(size), 1 << 20))
    return target


PEAK_SCRIPT = """
import json, resource, sys, tracemalloc
from interplay import bundle
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
report = bundle.verify_bundle(sys.argv[1])
traced_peak = tracemalloc.get_traced_memory()[1]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"traced_peak_mb": traced_peak / 2**20, "rss_grew_mb": (after - before) / 1024,
                  "lines": report.lines()}))
"""


def test_verify_memory_is_bounded_by_a_deep_member_named_like_the_manifest(created, tmp_path):
    top = created.path.name.removesuffix(".tar.gz")
    deep = f"{top}/data/results/analysis/toy-a/{bag.MANIFEST_NAME}"
    crafted = _with_member(created.path, tmp_path / "crafted.tar.gz", deep, 150 << 20)
    assert crafted.stat().st_size < 2 << 20  # zeros compress to almost nothing
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(crafted)], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # at most a few 1 MiB blocks in flight, whatever the member's size (before: the whole member, twice)
    assert result["traced_peak_mb"] < 32 and result["rss_grew_mb"] < 100, result
    assert f"EXTRA    data/results/analysis/toy-a/{bag.MANIFEST_NAME}" in result["lines"]


def test_oversize_manifest_is_refused(created, tmp_path):
    top = created.path.name.removesuffix(".tar.gz")
    size = bag.MAX_MANIFEST_BYTES + 1
    crafted = _with_member(created.path, tmp_path / "big-manifest.tar.gz", f"{top}/{bag.MANIFEST_NAME}",
                           size, replace=True)
    result = interplay_cli("bundle", "verify", str(crafted))
    assert result.returncode == 1
    assert f"PROBLEM  {bag.MANIFEST_NAME} is {size} bytes, more than the {bag.MAX_MANIFEST_BYTES}" in (
        result.stdout), result.stdout
    with pytest.raises(bundle.BundleError, match="more than the"):
        bundle.restore_bundle(crafted, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    # a PAX header, which tarfile would read whole, is bounded too
    members = read_members(created.path)
    padded = tmp_path / "pax.tar.gz"
    with tarfile.open(padded, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if name.endswith("lppd.csv"):
                info.pax_headers = {"comment": "x" * (bag.MAX_HEADER_BYTES + 1)}
            tar.addfile(info, io.BytesIO(data))
    report = bundle.verify_bundle(padded)
    assert not report.ok and any("archive unreadable" in p and "more than the" in p for p in report.problems)


# ---------------------------------------------------------------------------------------------
# exactly the study's runs


def test_runs_outside_the_study_are_not_bundled(tmp_path):
    root = make_project(tmp_path / "project")
    results = root / "results"
    # another study's run, in the same results tree
    write_posterior(results / "posteriors" / "other-x.nc", 7)
    write(results / "analysis" / "other-x" / "lppd.csv", "chain,lppd\n0,-9\n")
    write(results / "logs" / "sample" / "other-x" / "block-0000.log", "sampled other-x\n")
    write(results / "logs" / "merge" / "other-x.log", "merged other-x\n")
    write(results / "logs" / "analysis" / "other-x" / "lppd.log", "other-x\n")
    write(results / "benchmarks" / "sample" / "other-x-0000.tsv", "s\n1.0\n")
    write(results / "analysis" / "sweeps" / "other-sweep" / "predictive.csv", "x\n")
    write(results / "data" / "tables" / "otherdata.data", "5 6\n")
    write(results / "data" / "prepared" / "otherdata" / "seed-0_std-full.nc", b"other data")
    write(results / "logs" / "analysis" / "toy-a" / "lppd.log", "toy-a\n")
    write(results / "logs" / "merge" / "toy-b.log", "merged toy-b\n")
    made = bundle.create_bundle("toy", root=root, out=tmp_path / "out", resolved=RESOLVED, date=DATE)
    top = made.path.name.removesuffix(".tar.gz")
    listed = payload_of(manifest_of(read_members(made.path), top))
    assert not [rel for rel in listed if "other" in rel], sorted(listed)
    for rel in ("results/posteriors/toy-a.nc", "results/posteriors/toy-b.nc",
                "results/analysis/toy-a/lppd.csv", "results/analysis/toy-b/lppd.csv",
                "results/logs/sample/toy-a/block-0000.log", "results/logs/analysis/toy-a/lppd.log",
                "results/logs/merge/toy-b.log", "results/benchmarks/sample/toy-b-0000.tsv",
                "results/data/tables/toy.data", "results/data/prepared/toy/seed-0_std-full.nc",
                "results/figures/all.pdf", "results/report.html"):
        assert rel in listed, rel
    # with a `figures:` section, only the study's figures (another study's share results/figures/)
    write(results / "figures" / "other_fig.pdf", b"%PDF-1.4 other")
    config = {"study": "toy", "runs": {}, "figures": {"fig1": {}}, "sweeps": {}}
    with_figures = bundle.create_bundle("toy", root=root, out=tmp_path / "figs", config=config, resolved=RESOLVED,
                                        date=DATE)
    listed = payload_of(manifest_of(read_members(with_figures.path), top))
    assert {rel for rel in listed if rel.startswith("results/figures/")} == {
        "results/figures/fig1.pdf", "results/figures/fig1.png", "results/figures/all.pdf"}
    # a study run without its merged posterior is an error, not a smaller bundle
    with pytest.raises(bundle.BundleError, match="toy-c"):
        bundle.create_bundle("toy", root=root, out=tmp_path / "out2", date=DATE,
                             resolved={**RESOLVED, "toy-c": {"name": "toy-c", "dataset": "toy"}})


def test_own_data_set_file_and_hashes_are_bundled(tmp_path):
    """An own data set's file (git-ignored or not) is bundled at its path, and bundle.json records its
    sha256 and that of its study table."""
    root = make_project(tmp_path / "own")
    csv = write(root / "data" / "my.csv", "a,y\n1,2\n3,4\n")
    outside = write(tmp_path / "elsewhere.csv", "a,y\n5,6\n")
    config = {"study": "toy", "runs": {"toy-a": {}, "toy-b": {}},
              "datasets": {"toy": {"path": "data/my.csv", "target": "y"},
                           "far": {"path": str(outside), "target": "y"}}}
    resolved = {name: {"dataset": "toy"} for name in RESOLVED}
    made = bundle.create_bundle("toy", root=root, out=tmp_path / "out", config=config, resolved=resolved, date=DATE)
    members = read_members(made.path)
    top = next(iter(members)).split("/")[0] + "/data"
    assert members[f"{top}/data/my.csv"] == csv.read_bytes()
    assert members[f"{top}/bundle/datasets/far/elsewhere.csv"] == outside.read_bytes()
    meta = json.loads(members[f"{top}/bundle/bundle.json"])
    table = root / "results" / "data" / "tables" / "toy.data"
    assert meta["datasets"] == {"toy": {"table_sha256": hashlib.sha256(table.read_bytes()).hexdigest(),
                                        "source": "data/my.csv",
                                        "source_sha256": hashlib.sha256(csv.read_bytes()).hexdigest()}}
