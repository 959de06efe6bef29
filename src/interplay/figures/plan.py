"""Which runs, posteriors and analysis tables each figure needs, from the config's `figures:` section.

Resolved when the Snakefile is parsed: a figure whose runs or sweep are missing from the study, or
whose runs cannot make that figure (e.g. a Dirichlet figure of a tanh net), fails here with a message
naming them, before any job runs. A study that leaves a figure out of `figures:` gets no rule for it.

Every figure names its runs the same way (workflow/schemas/config.schema.yaml, property `figures`):
``under`` / ``over`` for the two nets compared, and either ``sweep: <sweep name>`` or
``runs: [<run>, ...]`` for a set of runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from interplay.config import ConfigError

# figure name -> (role keys it needs, needs a run set, posteriors of: roles / set, tables of the set)
FIGURES = ("bivariate", "toy_grid", "conformity", "correlations", "cumulative_lppd", "balancedness",
           "dirichlet", "lppd_grid", "uci_benchmark", "sampler_bias", "bias_marginals", "flat_likelihood", "jacobian")
ROLES = {"bivariate": ("under", "over"), "conformity": ("under", "over")}
NEEDS_SET = {"toy_grid", "conformity", "correlations", "cumulative_lppd", "balancedness", "dirichlet",
             "lppd_grid", "uci_benchmark", "sampler_bias", "bias_marginals", "flat_likelihood", "jacobian"}
SET_POSTERIORS = {"toy_grid", "correlations", "dirichlet"}
SET_TABLES = {"conformity": "conformity", "cumulative_lppd": "cumulative_lppd", "balancedness": "balancedness",
              "dirichlet": "reallocation", "lppd_grid": "predictive", "uci_benchmark": "predictive",
              "sampler_bias": ("balancedness", "predictive", "diagnostics"),
              "bias_marginals": "bias_marginals", "flat_likelihood": "flat_likelihood", "jacobian": "jacobian"}
# Extra outputs beyond results/figures/{name}.{pdf,png}.
EXTRA_OUTPUTS = {"uci_benchmark": {"csv": "csv", "tex": "tex"}}


@dataclass(frozen=True)
class FigurePlan:
    """What one figure draws on: `roles` (under/over -> run), `members` (its run set, in order),
    `posterior_runs` (runs whose merged posterior it reads), `tables` ((run, analysis) pairs)."""

    name: str
    spec: dict
    roles: dict = field(default_factory=dict)
    members: tuple = ()
    posterior_runs: tuple = ()
    tables: tuple = ()

    @property
    def runs(self) -> tuple:
        """Every run the figure involves (roles first), without repeats."""
        return tuple(dict.fromkeys([*self.roles.values(), *self.members]))

    def as_params(self) -> dict:
        """Plain-data form for Snakemake params (compared across runs by the params rerun trigger)."""
        return {"name": self.name, "spec": dict(self.spec), "roles": dict(self.roles),
                "members": list(self.members), "posterior_runs": list(self.posterior_runs),
                "tables": [list(t) for t in self.tables]}


def _hidden(run: Mapping) -> list:
    return list(run["model"]["hidden"])


def _is_toy_net(run: Mapping) -> bool:
    """A 1-M-1 identity net without bias (the reallocation toy model)."""
    model = run["model"]
    return model["activation"] == "identity" and len(model["hidden"]) == 1 and not model["bias"]


def _scalar_tau(run: Mapping) -> bool:
    return not isinstance(run["prior"]["scale"], list)


def _check_members(name: str, members: Sequence[str], runs: Mapping[str, dict]) -> list[str]:
    """Figure-specific checks of the run set: what each figure can draw from."""
    problems = []
    where = f"figures.{name}"
    chosen = {m: runs[m] for m in members}
    if name in ("toy_grid", "dirichlet"):
        bad = [m for m, r in chosen.items() if not _is_toy_net(r)]
        if bad:
            problems.append(f"{where}: runs {bad} are not 1-M-1 identity nets without bias "
                            "(model: {hidden: [M], activation: identity, bias: false})")
        bad = [m for m, r in chosen.items() if not _scalar_tau(r)]
        if bad:
            problems.append(f"{where}: runs {bad} have per-layer prior scales; the grid needs one tau per run")
        cells: dict = {}
        for m, r in chosen.items():
            if _is_toy_net(r) and _scalar_tau(r):
                cells.setdefault((_hidden(r)[0], float(r["prior"]["scale"])), []).append(m)
        for (width, tau), names in cells.items():
            if len(names) > 1:
                problems.append(f"{where}: runs {names} share M={width}, tau={tau:g}; one run per grid cell")
        if name == "dirichlet" and chosen and all(_hidden(r)[:1] == [1] for r in chosen.values()):
            problems.append(f"{where}: every run has M = 1 unit; shares need M >= 2")
    if name == "correlations":
        bad = [m for m, r in chosen.items() if r["sampler"]["kind"] == "de"]
        if bad:
            problems.append(f"{where}: runs {bad} are deep ensembles (one draw per chain): "
                            "within-chain correlations need a sampler or MFVI")
    if name in ("balancedness", "sampler_bias"):
        bad = [m for m, r in chosen.items() if not _hidden(r)]
        if bad:
            problems.append(f"{where}: runs {bad} have no hidden layer (balancedness needs one)")
    if name == "bias_marginals":
        bad = [m for m, r in chosen.items() if not r["model"]["bias"] or r["prior"].get("bias") == "flat"]
        if bad:
            problems.append(f"{where}: runs {bad} have no biases or a flat bias prior (nothing to compare)")
    if name in ("flat_likelihood", "jacobian"):
        bad = [m for m, r in chosen.items() if not _hidden(r) or r["model"]["activation"] not in ("relu", "identity")]
        if bad:
            problems.append(f"{where}: runs {bad} are not ReLU (or identity) nets with a hidden layer")
    if name == "lppd_grid":
        bad = [m for m, r in chosen.items() if not _scalar_tau(r)]
        if bad:
            problems.append(f"{where}: runs {bad} have per-layer prior scales; the x-axis needs one tau per run")
    return problems


def _plan(name: str, spec: Mapping, runs: Mapping[str, dict], sweeps: Mapping[str, list[str]]
          ) -> tuple[FigurePlan | None, list[str]]:
    where = f"figures.{name}"
    problems = []
    roles = {}
    for role in ROLES.get(name, ()):
        run = spec.get(role)
        if run is None:
            problems.append(f"{where}.{role}: missing (name the {role}parametrized run)")
        elif run not in runs:
            problems.append(f"{where}.{role}: run {run!r} is not in the study")
        else:
            roles[role] = run
    members: list[str] = []
    if name in NEEDS_SET:
        if ("sweep" in spec) == ("runs" in spec):
            problems.append(f"{where}: give either `sweep: <name>` or `runs: [...]` (exactly one)")
        elif "sweep" in spec:
            # one sweep, or several whose runs are pooled (e.g. the UCI benchmark's MCMC and single-fit sweeps)
            names = [spec["sweep"]] if isinstance(spec["sweep"], str) else list(spec["sweep"])
            missing = [sweep for sweep in names if sweep not in sweeps]
            problems += [f"{where}.sweep: sweep {sweep!r} is not in the study (sweeps: {sorted(sweeps) or 'none'})"
                         for sweep in missing]
            if not missing:
                members = list(dict.fromkeys(member for sweep in names for member in sweeps[sweep]))
        else:
            missing = [r for r in spec["runs"] if r not in runs]
            if missing:
                problems.append(f"{where}.runs: run(s) {missing} are not in the study")
            members = [r for r in dict.fromkeys(spec["runs"]) if r in runs]
    if problems:
        return None, problems
    problems = _check_members(name, members, runs)
    if problems:
        return None, problems
    posterior_runs = list(roles.values())
    if name in SET_POSTERIORS:
        posterior_runs += members
    if name == "dirichlet":  # a single unit has no shares (and no reallocation fit)
        posterior_runs = [m for m in posterior_runs if _hidden(runs[m])[0] >= 2]
    table_runs = members
    if name == "dirichlet":
        table_runs = [m for m in members if _hidden(runs[m])[0] >= 2]
    analyses = SET_TABLES.get(name, ())
    analyses = (analyses,) if isinstance(analyses, str) else analyses
    tables = tuple((m, analysis) for m in table_runs for analysis in analyses)
    return FigurePlan(name=name, spec=dict(spec), roles=roles, members=tuple(members),
                      posterior_runs=tuple(dict.fromkeys(posterior_runs)), tables=tables), []


def figure_plans(figures: Mapping[str, Mapping], runs: Mapping[str, dict], sweeps: Mapping[str, list[str]]
                 ) -> dict[str, FigurePlan]:
    """The plan of every figure in the config's `figures:` section (schema-validated already).

    Raises ConfigError listing every figure whose runs or sweep are missing or unsuitable.
    """
    plans, problems = {}, []
    for name, spec in figures.items():
        if name not in FIGURES:
            problems.append(f"figures.{name}: unknown figure; known: {', '.join(FIGURES)}")
            continue
        plan, found = _plan(name, spec or {}, runs, sweeps)
        problems += found
        if plan is not None:
            plans[name] = plan
    if problems:
        raise ConfigError("figures that the study cannot make:\n  " + "\n  ".join(problems))
    return plans


def posterior_path(run: str) -> str:
    return f"results/posteriors/{run}.nc"


def table_path(run: str, analysis: str) -> str:
    return f"results/analysis/{run}/{analysis}.csv"


def figure_outputs(name: str) -> dict[str, str]:
    """Output files of one figure rule by kind: pdf, png and any extras (uci_benchmark: csv, tex)."""
    outputs = {"pdf": f"results/figures/{name}.pdf", "png": f"results/figures/{name}.png"}
    for key, suffix in EXTRA_OUTPUTS.get(name, {}).items():
        outputs[key] = f"results/figures/{name}.{suffix}"
    return outputs
