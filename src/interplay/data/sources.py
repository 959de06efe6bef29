"""Where each dataset comes from and the sha256 its study-format table must have.

The hashes are pinned here, in the project, not read from any mirror: they are the sha256 of the
table files the paper's authors use (space-separated, no header, target in the last column).
"""

from __future__ import annotations

from dataclasses import dataclass

from interplay.data.errors import UnknownDataset

UCI_BASE_URL = "https://archive.ics.uci.edu/static/public"
MIRROR_ENV = "INTERPLAY_DATA_MIRROR"
MIRROR_CONFIG_KEY = "data.mirror"


@dataclass(frozen=True)
class DatasetSource:
    """One dataset: its canonical archive, the member to take from it and its pinned table hash.

    `original_format` says how `make_table` reads the member; `number_format` how it prints numbers
    (see `interplay.data.numbers`); `columns` names the table's columns, target last.
    """

    name: str
    task: str  # 'regression' | 'classification'
    url: str | None  # canonical UCI zip, None for generated data
    member: str | None  # file inside the zip
    original_format: str
    table_sha256: str
    columns: tuple[str, ...]
    n_rows: int
    number_format: str = "g15"
    doi: str | None = None

    @property
    def table_name(self) -> str:
        return f"{self.name}.data"

    @property
    def relative_url(self) -> str | None:
        """The archive's path below the UCI base URL (what a mirror must hold at the same place)."""
        if self.url is None:
            return None
        return self.url[len(UCI_BASE_URL) :].lstrip("/")

    @property
    def features(self) -> tuple[str, ...]:
        return self.columns[:-1]

    @property
    def target(self) -> str:
        return self.columns[-1]


_IONOSPHERE_COLUMNS = ("a01", *(f"a{i:02d}" for i in range(3, 35)), "class_good")

DATASETS: dict[str, DatasetSource] = {
    source.name: source
    for source in (
        DatasetSource(
            name="airfoil",
            task="regression",
            url=f"{UCI_BASE_URL}/291/airfoil+self+noise.zip",
            member="airfoil_self_noise.dat",
            original_format="whitespace",
            table_sha256="3c5a45dcbb5f7cece50cb0163076b35421d80677cd0e773cfeddc5e5c38ed499",
            columns=(
                "frequency",
                "angle_of_attack",
                "chord_length",
                "free_stream_velocity",
                "suction_side_displacement_thickness",
                "scaled_sound_pressure",
            ),
            n_rows=1503,
            doi="10.24432/C5VW2C",
        ),
        DatasetSource(
            name="concrete",
            task="regression",
            url=f"{UCI_BASE_URL}/165/concrete+compressive+strength.zip",
            member="Concrete_Data.xls",
            original_format="concrete_xls",
            table_sha256="3af4f47d2f36c0e26a6d5ca423252e8ba36e82e0886c75c61e67185c2475a7af",
            columns=(
                "cement",
                "blast_furnace_slag",
                "fly_ash",
                "water",
                "superplasticizer",
                "coarse_aggregate",
                "fine_aggregate",
                "age",
                "compressive_strength",
            ),
            n_rows=1030,
            doi="10.24432/C5PK67",
        ),
        DatasetSource(
            name="energy",
            task="regression",
            url=f"{UCI_BASE_URL}/242/energy+efficiency.zip",
            member="ENB2012_data.xlsx",
            original_format="energy_xlsx",
            table_sha256="2b67b85eb98de29bba675b95a2cfaf177bcf518500477bae5981c7a834a30acf",
            columns=(
                "relative_compactness",
                "surface_area",
                "wall_area",
                "roof_area",
                "overall_height",
                "orientation",
                "glazing_area",
                "glazing_area_distribution",
                "heating_load",
            ),
            n_rows=768,
            doi="10.24432/C51307",
        ),
        DatasetSource(
            name="yacht",
            task="regression",
            url=f"{UCI_BASE_URL}/243/yacht+hydrodynamics.zip",
            member="yacht_hydrodynamics.data",
            original_format="whitespace",
            table_sha256="547880ac1116f554480d94e856d9230537b52d5907816ff12e52bb67f963d2ed",
            columns=(
                "longitudinal_position_buoyancy",
                "prismatic_coefficient",
                "length_displacement_ratio",
                "beam_draught_ratio",
                "length_beam_ratio",
                "froude_number",
                "residuary_resistance",
            ),
            n_rows=308,
            doi="10.24432/C5XG7R",
        ),
        DatasetSource(
            name="bikesharing",
            task="regression",
            url=f"{UCI_BASE_URL}/275/bike+sharing+dataset.zip",
            member="hour.csv",
            original_format="csv_columns",
            table_sha256="48d3828986f1b06610a1a92441ddd58b3132a60d179a66611e43cde811036889",
            # `instant` is kept and `season` dropped, as in the authors' table
            columns=(
                "instant",
                "yr",
                "mnth",
                "hr",
                "holiday",
                "weekday",
                "workingday",
                "weathersit",
                "temp",
                "atemp",
                "hum",
                "windspeed",
                "cnt",
            ),
            n_rows=17379,
            doi="10.24432/C5W894",
        ),
        DatasetSource(
            name="protein",
            task="regression",
            url=f"{UCI_BASE_URL}/265/physicochemical+properties+of+protein+tertiary+structure.zip",
            member="CASP.csv",
            original_format="csv_columns",
            table_sha256="d35f332707e8a73f21e021039250a1e7b26e14f7dd826a0337ffa8e8e48b9727",
            columns=(*(f"F{i}" for i in range(1, 10)), "RMSD"),
            n_rows=45730,
            doi="10.24432/C5QW3H",
        ),
        DatasetSource(
            name="ionosphere",
            task="classification",
            url=f"{UCI_BASE_URL}/52/ionosphere.zip",
            member="ionosphere.data",
            original_format="ionosphere_csv",
            table_sha256="08038e4eadbe69f7eb4c1682062bf1a46af2525b15b81a08ee4b69fc48da4502",
            columns=_IONOSPHERE_COLUMNS,
            n_rows=351,
            number_format="grisu3",
        ),
        DatasetSource(
            name="synthetic_regression_1x",
            task="regression",
            url=None,
            member=None,
            original_format="generated",
            table_sha256="d1bc645fc80b8ba086c6dd3fe388cf8244d80dca791a261c8af11a42d5fd6337",
            columns=("x", "y"),
            n_rows=1000,
            number_format="repr",
        ),
    )
}


def get_source(dataset: str) -> DatasetSource:
    """The `DatasetSource` of `dataset`, or an error that lists the known names."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise UnknownDataset(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}") from None
