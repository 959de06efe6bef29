"""Analysis tables on disk."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_table(table: pd.DataFrame, out_path) -> Path:
    """Write a table as CSV (``.csv``) or NetCDF (``.nc``), creating the directory."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".csv":
        table.to_csv(out_path, index=False)
    elif out_path.suffix == ".nc":
        table = table.reset_index(drop=True)
        for column in table.columns[table.dtypes == object]:  # mixed columns (e.g. bool with NaN) as text
            table[column] = table[column].astype(str)
        table.to_xarray().rename({"index": "row"}).to_netcdf(out_path)
    else:
        raise ValueError(f"analysis output {out_path} must end in .csv or .nc")
    return out_path
