"""Conversion of original UCI files to the study tables, verified against the pinned sha256."""

import hashlib
import re
import shutil
from pathlib import Path

import openpyxl
import pytest

from interplay.data import (
    DATASETS,
    ChecksumError,
    DataError,
    MalformedFile,
    UnknownDataset,
    make_table,
)

HOUR_HEADER = (
    b"instant,dteday,season,yr,mnth,hr,holiday,weekday,workingday,weathersit,temp,atemp,hum,windspeed,"
    b"casual,registered,cnt\n"
)
RAW_ORIGINALS = {
    "concrete": "Concrete_Data.xls",
    "energy": "ENB2012_data.xlsx",
    "bikesharing": "hour.csv",
    "yacht": "yacht_hydrodynamics.data",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mirror_sums(mirror_dir: Path) -> dict[str, str]:
    lines = (mirror_dir / "SHA256SUMS").read_text().split("\n")
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def table_cells(mirror_dir: Path, dataset: str) -> list[list[str]]:
    return [line.split(" ") for line in (mirror_dir / f"{dataset}.data").read_text().splitlines()]


def download_dir_with(
    tmp_path: Path, name: str, content: bytes | None = None, src: Path | None = None
) -> Path:
    download_dir = tmp_path / "download"
    download_dir.mkdir(exist_ok=True)
    if src is not None:
        shutil.copyfile(src, download_dir / name)
    else:
        (download_dir / name).write_bytes(content)
    return download_dir


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.mirror
def test_pinned_hashes_match_the_mirror(mirror_dir):
    sums = mirror_sums(mirror_dir)
    assert {name: source.table_sha256 for name, source in DATASETS.items()} == {
        name: sums[f"{name}.data"] for name in DATASETS
    }


@pytest.mark.mirror
@pytest.mark.parametrize("dataset", sorted(RAW_ORIGINALS))
def test_raw_original_converts_to_the_pinned_table(dataset, mirror_dir, tmp_path):
    member = RAW_ORIGINALS[dataset]
    assert DATASETS[dataset].member == member
    download_dir = download_dir_with(tmp_path, member, src=mirror_dir / "raw" / member)
    out = make_table(dataset, download_dir, tmp_path / "tables" / f"{dataset}.data")
    assert sha256(out) == DATASETS[dataset].table_sha256
    assert out.read_bytes() == (mirror_dir / f"{dataset}.data").read_bytes()


@pytest.mark.mirror
def test_airfoil_tab_separated_original_round_trips(mirror_dir, tmp_path):
    original = "".join("\t".join(row) + "\r\n" for row in table_cells(mirror_dir, "airfoil"))
    download_dir = download_dir_with(tmp_path, "airfoil_self_noise.dat", original.encode())
    out = make_table("airfoil", download_dir, tmp_path / "airfoil.data")
    assert sha256(out) == DATASETS["airfoil"].table_sha256


@pytest.mark.mirror
def test_protein_csv_with_target_first_round_trips(mirror_dir, tmp_path):
    header = "RMSD," + ",".join(f"F{i}" for i in range(1, 10)) + "\n"
    body = "".join(",".join([row[-1], *row[:-1]]) + "\n" for row in table_cells(mirror_dir, "protein"))
    download_dir = download_dir_with(tmp_path, "CASP.csv", (header + body).encode())
    out = make_table("protein", download_dir, tmp_path / "protein.data")
    assert sha256(out) == DATASETS["protein"].table_sha256


def ionosphere_original(mirror_dir: Path) -> str:
    """UCI layout: 5-decimal cells, the constant 0 as 2nd attribute, a g/b label last."""

    def cell(text: str) -> str:
        value = float(text)
        return str(int(value)) if value.is_integer() else f"{value:.5f}"

    lines = []
    for row in table_cells(mirror_dir, "ionosphere"):
        label = {"1": "g", "0": "b"}[row[-1]]
        lines.append(",".join([cell(row[0]), "0", *(cell(c) for c in row[1:-1]), label]) + "\n")
    return "".join(lines)


@pytest.mark.mirror
def test_ionosphere_uci_layout_round_trips(mirror_dir, tmp_path):
    original = ionosphere_original(mirror_dir)
    # The original prints 0.03760 and -0.00039; the table 0.0376 and -3.9e-4: a real re-formatting.
    assert "0.03760" in original and "-0.00039" in original and "e-" not in original
    download_dir = download_dir_with(tmp_path, "ionosphere.data", original.encode())
    out = make_table("ionosphere", download_dir, tmp_path / "ionosphere.data")
    assert sha256(out) == DATASETS["ionosphere"].table_sha256


@pytest.mark.mirror
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_table_format_download_passes_through(dataset, mirror_dir, tmp_path):
    download_dir = download_dir_with(tmp_path, f"{dataset}.data", src=mirror_dir / f"{dataset}.data")
    out = make_table(dataset, download_dir, tmp_path / "out" / f"{dataset}.data")
    assert sha256(out) == DATASETS[dataset].table_sha256


@pytest.mark.mirror
def test_checksum_mismatch_names_file_and_both_hashes(mirror_dir, tmp_path):
    text = (mirror_dir / "raw" / "yacht_hydrodynamics.data").read_text()
    first, rest = text.split("\n", 1)
    altered = first.rsplit(" ", 1)[0] + " 0.12\n" + rest  # one resistance value changed
    assert altered != text
    download_dir = download_dir_with(tmp_path, "yacht_hydrodynamics.data", altered.encode())
    out = tmp_path / "tables" / "yacht.data"
    out.parent.mkdir()
    with pytest.raises(ChecksumError) as info:
        make_table("yacht", download_dir, out)
    message = str(info.value)
    assert str(download_dir / "yacht_hydrodynamics.data") in message
    assert DATASETS["yacht"].table_sha256 in message
    reported = set(re.findall(r"\b[0-9a-f]{64}\b", message))
    assert len(reported) == 2  # the actual hash as well as the pinned one
    assert_nothing_written(out)


def test_checksum_mismatch_keeps_an_existing_table(tmp_path):
    out = tmp_path / "yacht.data"
    out.write_text("previous\n")
    download_dir = download_dir_with(tmp_path, "yacht_hydrodynamics.data", b"1 2 3 4 5 6 7\n")
    with pytest.raises(ChecksumError):
        make_table("yacht", download_dir, out)
    assert out.read_text() == "previous\n"


@pytest.mark.parametrize(
    ("dataset", "name", "content", "where"),
    [
        (
            "yacht",
            "yacht_hydrodynamics.data",
            b"1 2 3 4 5 6 7\n1 2 abc 4 5 6 7\n",
            ["line 2", "column 3", "'abc'"],
        ),
        (
            "yacht",
            "yacht_hydrodynamics.data",
            b"1 2 3 4 5 6 7\n\n1 2 3 4 5 6\n",
            ["line 3", "expected 7 columns"],
        ),
        ("airfoil", "airfoil_self_noise.dat", b"800\t0\t0.3\t71.3\tnan\t126.2\n", ["line 1", "column 5"]),
        (
            "bikesharing",
            "hour.csv",
            HOUR_HEADER + b"1,2011-01-01,1,0,1,0,0,6,0,1,0.24,x,0.81,0,3,13,16\n",
            ["line 2", "column 12", "'x'"],
        ),
        ("bikesharing", "hour.csv", b"instant,cnt\n1,2\n", ["lacks column", "yr"]),
        (
            "protein",
            "CASP.csv",
            b"RMSD,F1,F2,F3,F4,F5,F6,F7,F8,F9\n1,2,3,4,5,6,7,8,9,?\n",
            ["line 2", "column 10"],
        ),
        ("ionosphere", "ionosphere.data", b"1,0," + b"0.5," * 32 + b"x\n", ["line 1", "column 35", "'x'"]),
        ("ionosphere", "ionosphere.data", b"1,0.3," + b"0.5," * 32 + b"g\n", ["line 1", "column 2"]),
        ("energy", "ENB2012_data.xlsx", b"this is not a zip file", ["not a readable Excel"]),
        ("concrete", "Concrete_Data.xls", b"this is not a workbook", ["not a readable Excel 97"]),
    ],
)
def test_malformed_file_reports_where(dataset, name, content, where, tmp_path):
    download_dir = download_dir_with(tmp_path, name, content)
    out = tmp_path / f"{dataset}.data"
    with pytest.raises(MalformedFile) as info:
        make_table(dataset, download_dir, out)
    for fragment in where:
        assert fragment in str(info.value)
    assert name in str(info.value)
    assert_nothing_written(out)


def test_malformed_xlsx_cell_reports_row_and_column(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["X1", "X2", "X3", "X4", "X5", "X6", "X7", "X8", "Y1", "Y2"])
    sheet.append([0.98, 514.5, 294, 110.25, 7, 2, 0, 0, 15.55, 21.33])
    sheet.append([0.98, 514.5, "n/a", 110.25, 7, 2, 0, 0, 15.55, 21.33])
    download_dir = tmp_path / "download"
    download_dir.mkdir()
    book.save(download_dir / "ENB2012_data.xlsx")
    with pytest.raises(MalformedFile, match=r"line 3, column 3: 'n/a'"):
        make_table("energy", download_dir, tmp_path / "energy.data")


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(UnknownDataset, match="airfoil"):
        make_table("iris", tmp_path, tmp_path / "iris.data")


def test_empty_download_dir_is_an_error(tmp_path):
    with pytest.raises(DataError, match="expected one of"):
        make_table("airfoil", tmp_path, tmp_path / "airfoil.data")
