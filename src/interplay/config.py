"""Study configuration: validation against the JSON schemas, sweep expansion, resolved runs.

A study config has named `runs` and `sweeps` (grids that expand into runs). Every run is resolved to a
complete dict (see docs/DESIGN.md) by layering: run-schema defaults < `defaults` < sweep `base` < grid
point < the run's own keys. Any bad key or value raises `ConfigError` naming the key and what is allowed,
before a single job runs.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from interplay.specs import (
    HOMOGENEOUS_ACTIVATIONS,
    conv_layers,
    conv_leaf_shapes,
    conv_output_shape,
    count_params,
    leaf_shapes,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "workflow" / "schemas"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
TEMPLATE_FIELD = re.compile(r"\{([A-Za-z0-9_.]+)\}")


# A MAMS run's MCLMC burn-in (interplay.samplers.mams): its last fifth samples, thinned to at most 100
# draws (at least every 5th step), for the chain's variances; the fewest steps that leave two draws.
MAMS_BURN_IN_VARIANCE_FRACTION, MAMS_BURN_IN_MAX_DRAWS, MAMS_BURN_IN_MIN_THIN = 0.2, 100, 5
# Sampler steps per chunk of a checkpointed stage (interplay.samplers.checkpoint; config `checkpoint.chunk_steps`).
DEFAULT_CHUNK_STEPS = 1000
MAMS_MIN_BURN_IN_STEPS = 50
MAMS_BURN_IN_PHASES = (0.8, 0.1, 0.1)  # of its MCLMC tuning steps, as MILE's


def mams_burn_in_plan(burn_in_steps: int) -> tuple[int, int, int]:
    """(MCLMC tuning steps, sampling steps, thin) of a MAMS burn-in of `burn_in_steps` (0: none)."""
    if burn_in_steps <= 0:
        return 0, 0, 1
    thin = max(MAMS_BURN_IN_MIN_THIN, math.ceil(burn_in_steps * MAMS_BURN_IN_VARIANCE_FRACTION / MAMS_BURN_IN_MAX_DRAWS))
    steps = int(burn_in_steps * MAMS_BURN_IN_VARIANCE_FRACTION) // thin * thin
    return burn_in_steps - steps, steps, thin


class ConfigError(ValueError):
    """A study config that cannot be run; the message names the key at fault."""


def load_schema(name: str) -> dict:
    with open(SCHEMA_DIR / f"{name}.schema.yaml") as fh:
        return yaml.safe_load(fh)


def _extend_with_defaults(validator_class):
    """A validator that fills in schema defaults while it validates (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(key, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _extend_with_defaults(jsonschema.Draft202012Validator)


def _describe(error: jsonschema.ValidationError, where: str) -> str:
    key = ".".join(str(p) for p in error.absolute_path)
    location = f"{where}.{key}" if key else where
    if error.validator == "additionalProperties" and "properties" in error.schema:
        allowed = ", ".join(sorted(error.schema["properties"]))
        unexpected = sorted(set(error.instance) - set(error.schema["properties"]))
        retired = [name for name in unexpected if f"{key}.{name}" in RETIRED_KEYS]
        if retired:
            return "; ".join(f"{location}.{name}: {RETIRED_KEYS[f'{key}.{name}']}" for name in retired)
        return f"{location}: unknown key(s) {', '.join(map(repr, unexpected))}; allowed: {allowed}"
    if error.validator == "enum":
        return f"{location}: {error.instance!r} is not allowed; choose one of {error.validator_value}"
    if error.validator in ("oneOf", "anyOf"):
        # The branch of the value's own type (a number under `number | array of numbers`) says what is wrong.
        for index, branch in enumerate(error.validator_value):
            if isinstance(branch, Mapping) and _fits(error.instance, branch):
                inner = [e for e in error.context if list(e.relative_schema_path)[:1] == [index]]
                if inner:
                    return _describe(inner[0], where)
        options = [s.get("type", s) for s in error.validator_value]
        return f"{location}: {error.instance!r} is not valid; expected one of the forms {options}"
    if error.validator in _BOUNDS:
        return f"{location}: {error.instance!r} must be {_BOUNDS[error.validator]} {error.validator_value!r}"
    return f"{location}: {error.message}"


# Run settings that were removed, by dotted key: a config that still sets one fails naming it and why.
RETIRED_KEYS = {
    f"sampler.mclmc.{name}": "was retired: MCLMC's phase 3 no longer stores a trace (it streams every "
    "parameter's ESS in memory independent of the phase's length), so there is nothing to bound; remove the key"
    for name in ("ess_max_samples", "ess_max_params")
}
_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def validate_with_defaults(instance: dict, schema: dict, where: str) -> dict:
    """Validate `instance` in place, filling defaults; raise ConfigError listing every problem.

    Integers given where the schema allows only numbers become floats (`scale: 1` is `scale: 1.0`), so
    equal settings have one form, and a non-finite number (.inf, .nan) anywhere is an error naming its key.
    Strings where the schema takes only numbers, booleans or null are read as YAML first (`coerce_scalars`).
    """
    coerce_scalars(instance, schema)
    errors = sorted(_DefaultFillingValidator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e, where) for e in errors))
    _as_schema_floats(instance, schema)
    nonfinite = _nonfinite_keys(instance, where)
    if nonfinite:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(
            f"{key}: {value!r} is not a finite number" for key, value in nonfinite))
    return instance


def _json_types(schema: Mapping) -> set[str]:
    types = schema.get("type", ())
    return {types} if isinstance(types, str) else set(types)


def _fits(value: Any, schema: Mapping) -> bool:
    """Whether `value`'s JSON type is one `schema` names (ints fit "number" too)."""
    types = _json_types(schema)
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return bool(types & {"integer", "number"})
    if isinstance(value, float):
        return "number" in types
    if isinstance(value, list):
        return "array" in types
    if isinstance(value, dict):
        return "object" in types
    return value is None and "null" in types


_SCALAR_TYPES = {"integer", "number", "boolean", "null"}


def _coerce_string(text: str, schemas: Sequence[Mapping]) -> Any:
    """`text` read as a YAML scalar when none of `schemas` takes a string and one takes the result."""
    types = set().union(*(_json_types(s) for s in schemas))
    wanted = types & _SCALAR_TYPES
    if not wanted or "string" in types:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and "number" in wanted:  # YAML 1.1 reads 1e3 as a string
        try:
            value = float(text)
        except ValueError:
            return text
    is_scalar = isinstance(value, (int, float, bool)) or value is None
    return value if is_scalar and _fits(value, {"type": sorted(wanted)}) else text


def _map_schema_scalars(value: Any, schema: Any, leaf) -> Any:
    """`value` with ``leaf(scalar, schema, branches)`` applied to every scalar, following the schema's
    properties, additionalProperties, items and the first oneOf/anyOf branch a dict or list fits
    (`branches`: a scalar's oneOf/anyOf alternatives); dicts and lists are changed in place."""
    if not isinstance(schema, Mapping):
        return value
    branches = [b for b in [*schema.get("oneOf", ()), *schema.get("anyOf", ())] if isinstance(b, Mapping)]
    if not isinstance(value, (dict, list)):
        return leaf(value, schema, branches)
    for branch in branches:
        if _fits(value, branch):
            return _map_schema_scalars(value, branch, leaf)
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            value[key] = _map_schema_scalars(item, properties.get(key, extra), leaf)
    else:
        for index, item in enumerate(value):
            value[index] = _map_schema_scalars(item, schema.get("items"), leaf)
    return value


def coerce_scalars(value: Any, schema: Any) -> Any:
    """`value` with every string that the schema wants as a number, boolean or null read as YAML
    (`"4"` -> 4 for an integer, `"0.5"` -> 0.5, `"false"` -> False, `"null"` -> None), where the result
    has a type the schema takes; dicts and lists are changed in place, other strings are kept.

    Snakemake reads nested `--config` values with YAML's BaseLoader, which gives strings only
    (`--config 'defaults={sampler: {chains: 4}}'` sets chains to "4"); this makes them what YAML
    in a config file would have given.
    """
    def leaf(item, schema, branches):
        return _coerce_string(item, [schema, *branches]) if isinstance(item, str) else item

    return _map_schema_scalars(value, schema, leaf)


def _as_schema_floats(value: Any, schema: Any) -> Any:
    """`value` with every int that `schema` types as a number (not an integer) made a float; dicts and
    lists are changed in place."""
    def leaf(item, schema, branches):
        if not isinstance(item, int) or isinstance(item, bool):
            return item
        schema = next((branch for branch in branches if _fits(item, branch)), schema)
        types = _json_types(schema)
        return float(item) if "number" in types and "integer" not in types else item

    return _map_schema_scalars(value, schema, leaf)


def _nonfinite_keys(value: Any, where: str) -> list[tuple[str, float]]:
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _nonfinite_keys(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _nonfinite_keys(item, f"{where}[{index}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [(where, value)]
    return []


def canonical(value: Any) -> Any:
    """A copy of `value` with the keys of every dict sorted: equal settings repr (and so compare as
    Snakemake params) the same whatever order the config gave them in."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: `override` laid over `base`, recursively for nested dicts (lists are replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def set_dotted(tree: dict, dotted_key: str, value: Any) -> dict:
    """A copy of `tree` with `value` at the dotted path (e.g. "prior.scale")."""
    parts = dotted_key.split(".")
    override: dict = {}
    node = override
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return deep_merge(tree, override)


def get_dotted(tree: dict, dotted_key: str) -> Any:
    node: Any = tree
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted_key)
        node = node[part]
    return node


def format_name_part(value: Any) -> str:
    """A grid value as a run-name fragment: lists as 16x16, floats without trailing noise."""
    if isinstance(value, (list, tuple)):
        return "x".join(format_name_part(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _derived_fields(run: dict) -> dict:
    hidden = run.get("model", {}).get("hidden", [])
    return {"depth": len(hidden), "width": max(hidden) if hidden else 0}


def fill_name_template(template: str, run: dict, sweep_name: str) -> str:
    """A sweep run's name: template fields {dotted.key}, {depth} and {width} filled from the run."""
    fields = _derived_fields(run)

    def fill(match: re.Match) -> str:
        field = match.group(1)
        if field in fields:
            return format_name_part(fields[field])
        try:
            return format_name_part(get_dotted(run, field))
        except KeyError:
            raise ConfigError(
                f"sweeps.{sweep_name}.name: template field {{{field}}} is neither a grid/base key nor one of "
                f"{sorted(fields)}"
            ) from None

    return TEMPLATE_FIELD.sub(fill, template)


def expand_sweep(sweep_name: str, sweep: dict) -> dict[str, dict]:
    """The runs of one sweep: the cartesian product of its grid laid over its base, named by template."""
    keys = list(sweep["grid"])
    template = sweep.get("name") or sweep_name + "".join(
        f"-{k.split('+')[0].split('.')[-1]}{{{k.split('+')[0]}}}" for k in keys
    )
    runs: dict[str, dict] = {}
    for values in itertools.product(*(sweep["grid"][k] for k in keys)):
        run = copy.deepcopy(sweep.get("base", {}))
        for key, value in zip(keys, values):
            # "a.b+c.d" sets several keys to the same value (e.g. one seed for data and sampler).
            for dotted_key in key.split("+"):
                run = set_dotted(run, dotted_key, value)
        name = fill_name_template(template, run, sweep_name)
        if not RUN_NAME.match(name):
            raise ConfigError(f"sweeps.{sweep_name}: run name {name!r} is not a valid run name ({RUN_NAME.pattern})")
        if name in runs:
            raise ConfigError(
                f"sweeps.{sweep_name}: two grid points give the run name {name!r}; add the differing keys to `name`"
            )
        runs[name] = run
    return runs


def _dataset_tasks(config: dict) -> dict[str, str]:
    """Known dataset names and their task (regression / classification)."""
    from interplay.data import DATASETS

    tasks = {name: source.task for name, source in DATASETS.items()}
    from interplay.data.images import IMAGE_DATASETS

    tasks.update({name: "classification" for name in IMAGE_DATASETS})
    tasks.update({name: "regression" for name in config.get("teachers", {})})
    tasks.update({name: entry.get("task", "regression") for name, entry in config.get("datasets", {}).items()})
    return tasks


def own_dataset_tables(config: dict) -> dict:
    """The checked table (`interplay.data.own.OwnTable`) of every data set of the config's `datasets`
    section, by name: file, columns, numbers, rows for the split and pinned sha256, each failure a
    ConfigError naming `datasets.<name>`, the file and the column (config validated first)."""
    from interplay.data import DATASETS, DataError
    from interplay.data.own import load_own_table, own_datasets

    tables = {}
    for name, dataset in own_datasets(config.get("datasets")).items():
        clash = "a UCI data set" if name in DATASETS else "a teacher" if name in config.get("teachers", {}) else None
        if clash:
            raise ConfigError(f"datasets.{name}: the name is taken by {clash}; choose another")
        try:
            tables[name] = load_own_table(dataset)
        except DataError as error:
            raise ConfigError(str(error)) from None
    return tables


def own_data_shapes(config: dict) -> dict[str, dict[str, int]]:
    """`in_dim` and `n` of each own data set, as `sample_resources` reads them for teachers."""
    from interplay.data.own import data_shape

    return {name: data_shape(table) for name, table in own_dataset_tables(config).items()}


def _check_run(run: dict, tasks: dict[str, str]) -> None:
    """Cross-field checks the schema cannot express."""
    where = f"runs.{run['name']}"
    if run["dataset"] not in tasks:
        raise ConfigError(f"{where}.dataset: unknown dataset {run['dataset']!r}; known: {sorted(tasks)}")
    if run["data"]["split"] == "authors" and run["data"]["seed"] >= 2**31:
        raise ConfigError(f"{where}.data.seed: {run['data']['seed']} must be below 2^31 with data.split 'authors' "
                          "(it is the authors' `rng`, a 32-bit JAX seed)")
    model, prior, sampler = run["model"], run["prior"], run["sampler"]
    n_layers = len(model["hidden"]) + 1
    for key in ("scale", "bias_scale"):
        value = prior[key]
        if isinstance(value, list) and len(value) != n_layers:
            raise ConfigError(
                f"{where}.prior.{key}: {len(value)} values given, but the net has {n_layers} layers "
                f"({len(model['hidden'])} hidden + output); give a scalar or one value per layer"
            )
    classification = tasks[run["dataset"]] == "classification"
    if classification != (model["likelihood"] == "class"):
        raise ConfigError(
            f"{where}.model.likelihood: {model['likelihood']!r} does not fit the {tasks[run['dataset']]} "
            f"dataset {run['dataset']!r}; use 'class' for classification and 'regr'/'mean_regr' for regression"
        )
    _check_bias_prior(where, model, prior)
    _check_conv(where, run)
    if model["sigma"] is not None and model["likelihood"] != "mean_regr":
        raise ConfigError(f"{where}.model.sigma: a fixed noise scale needs likelihood 'mean_regr'")
    for block_name in ("mclmc", "mams"):
        phases = sampler[block_name]["phases"]
        if not math.isclose(sum(phases), 1.0, abs_tol=1e-9):
            raise ConfigError(f"{where}.sampler.{block_name}.phases: {phases} must sum to 1")
    laplace = sampler["laplace"]
    if laplace["subset"] == "all" and laplace["hessian"] == "full":
        raise ConfigError(f"{where}.sampler.laplace.hessian: 'full' needs sampler.laplace.subset 'last_layer' "
                          "(the whole network's full GGN is P x P); use hessian 'diagonal' with subset 'all'")
    burn_in = sampler["mams"]["burn_in_steps"]
    if 0 < burn_in < MAMS_MIN_BURN_IN_STEPS:
        raise ConfigError(f"{where}.sampler.mams.burn_in_steps: {burn_in} must be 0 (no burn-in) or at least "
                          f"{MAMS_MIN_BURN_IN_STEPS} (its last fifth, thinned by 5, gives the variances)")
    # Every sampler block that keeps every `thin`-th of `steps` positions (mclmc, mams, ...).
    for block_name, block in sampler.items():
        if isinstance(block, dict) and "steps" in block and "thin" in block:
            steps, thin = block["steps"], block["thin"]
            if steps < thin or steps % thin:
                raise ConfigError(
                    f"{where}.sampler.{block_name}.steps: {steps} must be a positive multiple of "
                    f"sampler.{block_name}.thin ({thin}): a chain keeps every thin-th of its steps"
                )


def _check_conv(where: str, run: dict) -> None:
    """Convolutions only on image data (the data set's declared shape written into `model.image_shape`),
    not with the samplers that assume a fully connected net, and leaving pixels; `prior.conv_scale` one value
    per convolution."""
    from interplay.data.images import IMAGE_DATASETS
    from interplay.specs import conv_layers, conv_output_shape

    model, prior = run["model"], run["prior"]
    source = IMAGE_DATASETS.get(run["dataset"])
    declared = list(source.image_shape) if source is not None else None
    if model["image_shape"] is not None and model["image_shape"] != declared:
        raise ConfigError(f"{where}.model.image_shape: {model['image_shape']} is derived from the data set "
                          f"({run['dataset']!r}: {declared}); leave it unset")
    model["image_shape"] = declared
    if source is not None and run["data"]["split"] != "shuffle":
        raise ConfigError(f"{where}.data.split: image data sets take 'shuffle' only (their canonical test set "
                          "stays the test split; the other rows are shuffled with data.seed)")
    if not model["conv"]:
        return
    if source is None:
        raise ConfigError(f"{where}.model.conv: convolutions need an image data set ({sorted(IMAGE_DATASETS)}); "
                          f"{run['dataset']!r} is tabular")
    if run["sampler"]["kind"] == "laplace":
        raise ConfigError(f"{where}.model.conv: sampler.kind 'laplace' supports fully connected nets only")
    try:
        conv_output_shape(declared, conv_layers(model["conv"]))
    except ValueError as error:
        raise ConfigError(f"{where}.model.conv: {error}") from None
    value = prior["conv_scale"]
    if isinstance(value, list) and len(value) != len(model["conv"]):
        raise ConfigError(f"{where}.prior.conv_scale: {len(value)} values given for {len(model['conv'])} "
                          "convolutions; give a scalar or one value per convolution")


def baseline_noise_sigma(run: Mapping) -> float | None:
    """The fixed noise scale a baseline's sampler block sets (None: the model's own): laplace's
    sqrt(`aleatoric_var`), mfvi's `sigma`; other kinds none."""
    sampler = run["sampler"]
    if sampler["kind"] == "laplace" and sampler["laplace"]["aleatoric_var"] is not None:
        return math.sqrt(sampler["laplace"]["aleatoric_var"])
    if sampler["kind"] == "mfvi" and sampler["mfvi"]["sigma"] is not None:
        return float(sampler["mfvi"]["sigma"])
    return None


def _apply_baseline_noise(run: dict) -> None:
    """Write a baseline's fixed noise (`baseline_noise_sigma`) into `model.sigma`, so that every stage reads
    the likelihood it was fitted with from the model; a different explicit `model.sigma` is an error."""
    where = f"runs.{run['name']}"
    sigma = baseline_noise_sigma(run)
    kind = run["sampler"]["kind"]
    model = run["model"]
    if sigma is not None:
        key = "laplace.aleatoric_var" if kind == "laplace" else "mfvi.sigma"
        if model["likelihood"] != "mean_regr":
            raise ConfigError(f"{where}.sampler.{key}: a fixed observation noise needs model.likelihood "
                              f"'mean_regr', got {model['likelihood']!r}")
        if model["sigma"] is not None and not math.isclose(model["sigma"], sigma, rel_tol=1e-9):
            raise ConfigError(f"{where}.sampler.{key}: gives sigma {sigma:g} but model.sigma is {model['sigma']:g}; "
                              "set one of them")
        model["sigma"] = sigma
    elif kind == "laplace" and (model["likelihood"] != "mean_regr" or model["sigma"] is None):
        raise ConfigError(f"{where}.sampler.laplace.aleatoric_var: null needs model.likelihood 'mean_regr' with "
                          "a fixed model.sigma (last-layer Laplace fixes the noise)")


# Why a flat (improper) prior on every bias gives an improper posterior, by hidden-layer activation.
_IMPROPER_FLAT_BIAS = {
    "relu": "a dead ReLU unit's bias can run to -inf at constant likelihood",
    "tanh": "a saturated tanh unit's bias can run to +-inf while the likelihood tends to a non-zero constant",
    "identity": (
        "the biases of all layers add up to one intercept per output, so every other direction of the "
        "biases leaves the likelihood unchanged (identity nets are no exception)"
    ),
}


def _check_bias_prior(where: str, model: Mapping, prior: Mapping) -> None:
    """`prior.bias: flat` only where the posterior is proper: nets without biases, and linear models
    (hidden: []) with a Gaussian likelihood. With hidden layers no activation makes it proper."""
    if prior["bias"] != "flat" or not model["bias"]:
        return
    fix = (
        "use prior.bias: gaussian (prior.bias_scale sets its width) or model.bias: false; a flat bias prior "
        "is allowed only for linear models (model.hidden: []) with likelihood regr or mean_regr"
    )
    if model["hidden"]:
        activation = model["activation"]
        raise ConfigError(
            f"{where}.prior.bias: 'flat' (improper) with hidden layers and activation {activation!r} gives an "
            f"improper posterior: {_IMPROPER_FLAT_BIAS.get(activation, 'a bias can run off at constant likelihood')}"
            f"; {fix}"
        )
    if model["likelihood"] == "class":
        raise ConfigError(
            f"{where}.prior.bias: 'flat' (improper) with likelihood 'class' gives an improper posterior: the softmax "
            f"is unchanged when the same constant is added to every output bias; {fix}"
        )


def _check_grid_keys(sweep_name: str, sweep: Mapping, run_schema: Mapping) -> None:
    """Every dotted key of a sweep's grid names a run setting; else ConfigError at sweeps.<name>.grid.<key>."""
    for key in sweep.get("grid", {}):
        for dotted in key.split("+"):
            node: Any = run_schema
            for depth, part in enumerate(dotted.split(".")):
                properties = node.get("properties") if isinstance(node, Mapping) else None
                if not properties or part not in properties:
                    parent = ".".join(dotted.split(".")[:depth]) or "a run"
                    allowed = ", ".join(sorted(properties)) if properties else "none (not a mapping)"
                    raise ConfigError(
                        f"sweeps.{sweep_name}.grid.{key}: {parent} has no key {part!r}; allowed: {allowed}"
                    )
                node = properties[part]


def validate_config(config: dict) -> dict:
    """Validate the top level of a study config in place (filling defaults)."""
    return validate_with_defaults(config, load_schema("config"), "config")


def resolve_runs(config: dict) -> dict[str, dict]:
    """Every run of the study, fully resolved and validated, by name (config is validated first)."""
    validate_config(config)
    run_schema = load_schema("run")
    overrides: dict[str, dict] = {}
    for sweep_name, sweep in config["sweeps"].items():
        _check_grid_keys(sweep_name, sweep, run_schema)
        for name, run in expand_sweep(sweep_name, sweep).items():
            if name in overrides:
                raise ConfigError(f"sweeps.{sweep_name}: run {name!r} is also produced by another sweep")
            overrides[name] = run
    for name, run in config["runs"].items():
        if name in overrides:
            raise ConfigError(f"runs.{name}: a sweep already defines a run of this name")
        overrides[name] = run
    own_dataset_tables(config)  # own data sets are checked before any job (file, columns, hash)
    tasks = _dataset_tasks(config)
    resolved = {}
    for name, override in overrides.items():
        run = deep_merge(deep_merge(config["defaults"], override), {"name": name})
        validate_with_defaults(run, run_schema, f"runs.{name}")
        _apply_baseline_noise(run)
        _check_run(run, tasks)
        resolved[name] = canonical(run)
    return resolved


# Run keys that sampling does not read (each has its own rule and params).
NOT_SAMPLING_KEYS = ("merge",)
# The `sampler` sub-blocks each sampler kind reads; the blocks of other kinds are not sampling settings
# of its runs. A kind missing here keeps every block (a needless rerun at worst, never a missed one).
SAMPLER_BLOCKS = {
    "mile": ("warmstart", "mclmc"),
    "nuts": ("warmstart", "nuts"),
    "de": ("warmstart",),
    "mfvi": ("mfvi",),
    "mams": ("warmstart", "mams"),
    "laplace": ("laplace",),
    "sghmc": ("warmstart", "sghmc"),
}


# (section, key, value): run keys that sampling leaves out of its settings at this value (`sampling_run`).
INACTIVE_DEFAULTS = (("model", "conv", []), ("model", "image_shape", None), ("prior", "conv_scale", None))


def sampling_run(run: Mapping) -> dict:
    """What sampling reads of a resolved run: all of it but `merge` and other sampler kinds' blocks
    (`name`, in every path, included), keys sorted. Blocks write it as their `config` attr."""
    settings = {key: copy.deepcopy(value) for key, value in run.items() if key not in NOT_SAMPLING_KEYS}
    sampler = settings["sampler"]
    blocks = [key for key, value in sampler.items() if isinstance(value, Mapping)]
    read = SAMPLER_BLOCKS.get(sampler["kind"], blocks)
    settings["sampler"] = {key: value for key, value in sampler.items() if key not in blocks or key in read}
    # The convolution keys at their defaults (a fully connected net on tabular data) are left out, so that
    # the runs from before they existed keep their settings, and their blocks are not resampled.
    for section, key, inactive in INACTIVE_DEFAULTS:
        if settings.get(section, {}).get(key, "unset") == inactive:
            del settings[section][key]
    return canonical(settings)


def sampling_settings(run: Mapping) -> str:
    """The `sample` rule's params: `sampling_run` as sorted, compact JSON. It changes exactly when a
    block's draws could, so key order, defaults written out or merge/figure keys rerun no sampling."""
    return json.dumps(sampling_run(run), sort_keys=True, separators=(",", ":"), allow_nan=False)


def load_config(path: str | Path) -> dict:
    """A study config file as a dict; a YAML syntax error is a ConfigError naming the file and line."""
    try:
        with open(path) as fh:
            loaded = yaml.safe_load(fh)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and context_mark is not None and context_mark is not mark:
            problem += f" ({context} that starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a study config must be a mapping of keys at the top level")
    return loaded


def n_blocks(run: Mapping) -> int:
    """Number of sampling jobs of a run: ceil(chains / block_size)."""
    try:
        chains, block_size = int(run["sampler"]["chains"]), int(run["sampler"]["block_size"])
    except KeyError as err:
        raise KeyError(f"run {run.get('name')!r} lacks sampler setting {err}") from None
    if chains < 1 or block_size < 1:
        raise ValueError(f"run {run.get('name')!r}: sampler.chains ({chains}) and sampler.block_size "
                         f"({block_size}) must be positive")
    return -(-chains // block_size)


def block_ids(run: dict) -> list[str]:
    """The run's chain blocks as zero-padded ids ("0000", ...), used in sample file names."""
    return [f"{b:04d}" for b in range(n_blocks(run))]


# File-name prefix of the prepared data per `data.split` (workflow/rules/data.smk, wildcard `order`).
SPLIT_PREFIX = {"shuffle": "seed", "authors": "authors"}


def prepared_data_path(run: dict) -> str:
    data = run["data"]
    prefix = SPLIT_PREFIX[data.get("split", "shuffle")]
    return f"results/data/prepared/{run['dataset']}/{prefix}-{data['seed']}_std-{data['standardise']}.nc"


def n_parameters(run: Mapping, in_dim: int, out_dim: int) -> int:
    """Weights and biases of the run's net between `in_dim` inputs and `out_dim` outputs (no log_sigma);
    with convolutions (`model.conv`, on images of `model.image_shape`) theirs too, and the dense part's inputs
    are the convolutions' flattened output."""
    model = run["model"]
    conv = conv_layers(model.get("conv"))
    conv_params = 0
    if conv:
        conv_params = count_params(conv_leaf_shapes(model["image_shape"], conv, bias=model["bias"]))
        in_dim = math.prod(conv_output_shape(model["image_shape"], conv))
    units = [in_dim, *model["hidden"], out_dim]
    return conv_params + count_params(leaf_shapes(units, bias=model["bias"]))


def sample_resources(run: Mapping, teachers: Mapping | None = None, platform: str = "cpu",
                     chunk_steps: int = DEFAULT_CHUNK_STEPS) -> dict[str, int]:
    """One sampling job's `mem_mb` and `runtime` for schedulers, from the run's data sizes and every
    array the job holds: `interplay.resources.sample_resources` (JAX-free; DESIGN.md, "Memory of a block")."""
    from interplay.resources import sample_resources as estimate

    return estimate(run, teachers, platform, chunk_steps)


def sweep_members(config: dict) -> dict[str, list[str]]:
    """The run names of each sweep (config already validated by `resolve_runs`)."""
    return {name: sorted(expand_sweep(name, sweep)) for name, sweep in config["sweeps"].items()}


def applicable_analyses(run: dict) -> list[str]:
    """The analyses that make sense for a run (see workflow/rules/analysis.smk)."""
    analyses = ["predictive", "cumulative_lppd", "diagnostics", "conformity"]
    if run["model"]["hidden"]:
        analyses.append("balancedness")
        # The Dirichlet law concerns identity nets and ReLU units (positively homogeneous), not tanh,
        # and needs at least two units to share the function's weight.
        # Not for conv nets: its unit shares are computed from the inputs by the dense layers alone.
        if (run["model"]["activation"] in HOMOGENEOUS_ACTIVATIONS and max(run["model"]["hidden"]) >= 2
                and not run["model"].get("conv")):
            analyses.append("reallocation")
    return analyses
