"""Original UCI files -> the study's table format, verified against the pinned sha256.

Each reader returns rows of floats in table column order (target last); `make_table` prints them with
the dataset's number format (`interplay.data.numbers`) and refuses to write a table whose sha256
differs from the pinned one.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from interplay.data.atomic import write_bytes_atomic
from interplay.data.errors import ChecksumError, DataError, MalformedFile
from interplay.data.numbers import format_rows
from interplay.data.sources import MIRROR_CONFIG_KEY, MIRROR_ENV, DatasetSource, get_source

log = logging.getLogger(__name__)

Rows = list[list[float]]

ENERGY_KEPT = ("X1", "X2", "X3", "X4", "X5", "X6", "X7", "X8", "Y1")
IONOSPHERE_LABELS = {"g": 1.0, "b": 0.0}  # "good" radar returns are class 1 in the authors' table


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks of `chunk` bytes (the one file hash of the project)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_number(text: str, path: str | Path, line: int, column: int) -> float:
    """A finite float, or MalformedFile naming the file, line and column (both 1-based)."""
    try:
        value = float(text)
    except ValueError:
        raise MalformedFile(f"{path}: line {line}, column {column}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise MalformedFile(f"{path}: line {line}, column {column}: {text!r} is not a finite number")
    return value


def _check_width(path: Path, line: int, cells: Sequence, expected: int) -> None:
    if len(cells) != expected:
        raise MalformedFile(f"{path}: line {line}: expected {expected} columns, found {len(cells)}")


def _check_rows(path: Path, rows: Rows) -> Rows:
    if not rows:
        raise MalformedFile(f"{path}: no data rows")
    return rows


def read_whitespace(path: Path, source: DatasetSource) -> Rows:
    """Numbers separated by any whitespace (airfoil's tabs, yacht's double/trailing spaces); blank lines skipped."""
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for line_no, line in enumerate(handle, start=1):
            cells = line.split()
            if not cells:
                continue
            _check_width(path, line_no, cells, len(source.columns))
            rows.append([parse_number(cell, path, line_no, col) for col, cell in enumerate(cells, start=1)])
    return _check_rows(path, rows)


def _read_csv_with_header(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise MalformedFile(f"{path}: empty file, expected a header line") from None
        body = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    return header, body


def _select_columns(path: Path, header: list[str], wanted: Sequence[str]) -> list[int]:
    missing = [name for name in wanted if name not in header]
    if missing:
        raise MalformedFile(f"{path}: header lacks column(s) {missing}; found {header}")
    return [header.index(name) for name in wanted]


def read_csv_columns(path: Path, source: DatasetSource) -> Rows:
    """A CSV file with a header line: the table's columns (`source.columns`), picked by name in the table's
    order (bike sharing's hour.csv: instant, yr .. windspeed, cnt of its 17; protein's CASP.csv: the
    target RMSD comes first there, last in the table)."""
    header, body = _read_csv_with_header(path)
    indices = _select_columns(path, header, source.columns)
    rows = []
    for line_no, cells in body:
        _check_width(path, line_no, cells, len(header))
        rows.append([parse_number(cells[i], path, line_no, i + 1) for i in indices])
    return _check_rows(path, rows)


def read_ionosphere(path: Path, source: DatasetSource) -> Rows:
    """ionosphere.data: 34 attributes and a g/b label; the 2nd attribute (always 0) is dropped."""
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            cells = [cell.strip() for cell in line.split(",")]
            _check_width(path, line_no, cells, 35)
            values = [parse_number(cell, path, line_no, col) for col, cell in enumerate(cells[:34], start=1)]
            if values[1] != 0:
                raise MalformedFile(
                    f"{path}: line {line_no}, column 2: expected the constant attribute 0, found {cells[1]!r}"
                )
            label = IONOSPHERE_LABELS.get(cells[34])
            if label is None:
                raise MalformedFile(
                    f"{path}: line {line_no}, column 35: label {cells[34]!r} is not 'g' or 'b'"
                )
            rows.append([values[0], *values[2:], label])
    return _check_rows(path, rows)


def read_concrete_xls(path: Path, source: DatasetSource) -> Rows:
    """Concrete_Data.xls: one header row, 8 features then the strength, full double precision."""
    import xlrd

    try:
        book = xlrd.open_workbook(str(path))
    except Exception as exc:  # xlrd raises several unrelated types for broken files
        raise MalformedFile(f"{path}: not a readable Excel 97 (.xls) workbook: {exc}") from exc
    sheet = book.sheet_by_index(0)
    rows = []
    for r in range(1, sheet.nrows):
        cells = sheet.row(r)
        if all(cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK) for cell in cells):
            continue
        _check_width(path, r + 1, cells, len(source.columns))
        row = []
        for c, cell in enumerate(cells):
            if cell.ctype != xlrd.XL_CELL_NUMBER:
                raise MalformedFile(f"{path}: line {r + 1}, column {c + 1}: {cell.value!r} is not a number")
            row.append(parse_number(repr(cell.value), path, r + 1, c + 1))
        rows.append(row)
    return _check_rows(path, rows)


def read_energy_xlsx(path: Path, source: DatasetSource) -> Rows:
    """ENB2012_data.xlsx: header X1..X8,Y1,Y2; keep X1..X8,Y1; all-empty rows and columns are dropped."""
    import zipfile

    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise MalformedFile(f"{path}: not a readable Excel (.xlsx) workbook: {exc}") from exc
    try:
        sheet_rows = [
            (line_no, row)
            for line_no, row in enumerate(book.worksheets[0].iter_rows(values_only=True), start=1)
            if any(value is not None for value in row)
        ]
    finally:
        book.close()
    if not sheet_rows:
        raise MalformedFile(f"{path}: the first sheet is empty")
    header = ["" if value is None else str(value).strip() for value in sheet_rows[0][1]]
    indices = _select_columns(path, header, ENERGY_KEPT)
    rows = []
    for line_no, cells in sheet_rows[1:]:
        row = []
        for i in indices:
            value = cells[i] if i < len(cells) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise MalformedFile(f"{path}: line {line_no}, column {i + 1}: {value!r} is not a number")
            row.append(parse_number(repr(float(value)), path, line_no, i + 1))
        rows.append(row)
    return _check_rows(path, rows)


def read_table(path: Path, source: DatasetSource | None = None) -> Rows:
    """A study-format table: one space between cells, no header; every row as wide as the first."""
    rows: Rows = []
    width = len(source.columns) if source is not None else None
    with open(path, encoding="utf-8", newline="") as handle:
        for line_no, line in enumerate(handle, start=1):
            cells = line.split()
            if not cells:
                raise MalformedFile(f"{path}: line {line_no}: empty line in a table file")
            if width is None:
                width = len(cells)
            _check_width(path, line_no, cells, width)
            rows.append([parse_number(cell, path, line_no, col) for col, cell in enumerate(cells, start=1)])
    return _check_rows(path, rows)


READERS: dict[str, Callable[[Path, DatasetSource], Rows]] = {
    "whitespace": read_whitespace,
    "concrete_xls": read_concrete_xls,
    "energy_xlsx": read_energy_xlsx,
    "csv_columns": read_csv_columns,
    "ionosphere_csv": read_ionosphere,
}


def generate_synthetic_regression_1x() -> Rows:
    """The 1-M-1 toy set: x = linspace(-3, 3, 1000), y = x + N(0, 0.3^2) noise.

    The authors drew the noise with NumPy's legacy generator seeded 42 (RandomState(42).normal); this
    reproduces their table byte for byte, and NumPy keeps that legacy stream fixed.
    """
    import numpy as np

    x = np.linspace(-3.0, 3.0, 1000)
    y = x + np.random.RandomState(42).normal(0.0, 0.3, size=x.shape)
    return [[a, b] for a, b in zip(x.tolist(), y.tolist(), strict=True)]


def find_download(dataset: str, download_dir: str | Path) -> Path:
    """The file `download` left for `dataset`: the archive member, else the table `<dataset>.data`."""
    source = get_source(dataset)
    download_dir = Path(download_dir)
    if not download_dir.is_dir():
        raise DataError(
            f"{dataset}: download directory {download_dir} does not exist; run the download first"
        )
    files = sorted(p for p in download_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    for name in (source.member, source.table_name):
        if name is not None and (download_dir / name).is_file():
            return download_dir / name
    expected = [n for n in (source.member, source.table_name) if n]
    raise DataError(f"{dataset}: {download_dir} holds {[p.name for p in files]}, expected one of {expected}")


def convert_rows(dataset: str, path: Path) -> Rows:
    """Rows of the study table read from a downloaded file (original format or table format)."""
    source = get_source(dataset)
    if path.name == source.table_name and not (path.name == source.member and _looks_comma_separated(path)):
        return read_table(path, source)
    return READERS[source.original_format](path, source)


def _looks_comma_separated(path: Path) -> bool:
    """Ionosphere's UCI member and its study table share a name; the original is comma-separated."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return "," in line
    return False


def verify_table(dataset: str, data: bytes, origin: str | Path) -> str:
    """sha256 of `data`; ChecksumError naming `origin` and both hashes unless it is the pinned one."""
    source = get_source(dataset)
    actual = sha256_bytes(data)
    if actual != source.table_sha256:
        raise ChecksumError(
            f"{dataset}: table converted from {origin} has sha256 {actual}, "
            f"expected the pinned {source.table_sha256}; the source file differs from the one the study used"
        )
    return actual


def make_table(
    dataset: str, download_dir: str | Path, out_path: str | Path, *, remove_bad_download: bool = False
) -> Path:
    """Convert the download of `dataset` to the study table at `out_path`, verified against its pinned sha256.

    A table-format download (from a mirror) is re-printed from its parsed values, so it must already be
    in the exact study format. Nothing is written when the hash differs; with `remove_bad_download`
    (the pipeline's `table` rule, which owns results/data/download/) the download directory is then
    deleted too, so that the next run fetches it again instead of failing on the same bad file.
    """
    source = get_source(dataset)
    path = find_download(dataset, download_dir)
    data = format_rows(convert_rows(dataset, path), source.number_format).encode("ascii")
    if len(data.splitlines()) != source.n_rows:
        log.warning("%s: %d rows, the study's table has %d", dataset, len(data.splitlines()), source.n_rows)
    try:
        digest = verify_table(dataset, data, path)
    except ChecksumError as error:
        if not remove_bad_download:
            raise
        shutil.rmtree(download_dir, ignore_errors=True)
        raise ChecksumError(
            f"{error}. The bad download {download_dir} was removed, so the next run fetches it again: "
            f"fix the source (the mirror of config key `{MIRROR_CONFIG_KEY}` or ${MIRROR_ENV}; unset, the UCI "
            "archive), then rerun snakemake"
        ) from None
    write_bytes_atomic(data, out_path)
    log.info("%s: wrote %s (sha256 %s) from %s", dataset, out_path, digest, path)
    return Path(out_path)
