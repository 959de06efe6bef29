"""RO-Crate metadata of a bundled study: ``ro-crate-metadata.json`` in the Workflow Run Crate profile.

The crate's root is the bundle's payload (the project directory), as RO-Crate prescribes for a crate
inside a BagIt bag. It describes the workflow (``Snakefile``, Snakemake), the run of it that made
the results (a ``CreateAction``: its config as ``object``, every result file as ``result``, its
start and end), the software environment (Python and every installed package with its version, as
the workflow's ``softwareRequirements``; ``bundle/environment.json``) and every file with its
media type and size, so that RO-Crate tools and repositories (WorkflowHub, Zenodo) read it.
The JSON is built with the ``rocrate`` library and is deterministic for the same inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath

METADATA_NAME = "ro-crate-metadata.json"
WORKFLOW_NAME = "Snakefile"
PROFILES = (  # Workflow Run Crate 0.6 for RO-Crate 1.3 (rocrate's default version)
    ("https://w3id.org/ro/wfrun/process/0.6", "Process Run Crate", "0.6"),
    ("https://w3id.org/ro/wfrun/workflow/0.6", "Workflow Run Crate", "0.6"),
)
# Media types by suffix (fixed here, not from the system's mime.types, so the JSON is the same
# everywhere); others are application/octet-stream.
MEDIA_TYPES = {
    ".nc": "application/x-netcdf",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".html": "text/html",
    ".zip": "application/zip",
    ".tex": "application/x-tex",
    ".md": "text/markdown",
    ".rst": "text/x-rst",
    ".py": "text/x-python",
    ".smk": "text/x-python",  # Snakemake's language is a Python superset
    ".sh": "text/x-shellscript",
    ".log": "text/plain",
    ".txt": "text/plain",
    ".data": "text/plain",  # the study tables: space-separated numbers
    ".lock": "text/plain",
    ".diff": "text/x-diff",
}
SPECIAL_NAMES = {WORKFLOW_NAME: "text/x-python", "LICENSE": "text/plain"}


@dataclass(frozen=True)
class CrateFile:
    """A file of the crate: its path below the crate root and its size in bytes."""

    path: str
    size: int


def media_type(path: str) -> str:
    name = PurePosixPath(path)
    return SPECIAL_NAMES.get(name.name) or MEDIA_TYPES.get(name.suffix.lower(), "application/octet-stream")


def _package_id(name: str, version: str) -> str:
    return f"https://pypi.org/project/{name}/{version}/"


def workflow_run_crate(
    *,
    name: str,
    description: str,
    date: str,
    files: list[CrateFile],
    inputs: list[str],
    start: str,
    end: str,
    environment: dict,
) -> bytes:
    """``ro-crate-metadata.json`` for a run of the Snakefile at the crate root.

    ``files`` are every file of the crate (``results/...`` ones are the run's results); ``inputs``
    the paths among them that configured the run (the action's ``object``); ``start``/``end`` ISO
    8601 times of the run; ``date`` (YYYY-MM-DD) the crate's datePublished; ``environment`` as
    :func:`interplay.provenance.environment_info` returns it.
    """
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    paths = {f.path for f in files}
    if WORKFLOW_NAME not in paths:
        raise ValueError(f"the crate has no {WORKFLOW_NAME}: a Workflow Run Crate needs its workflow")
    missing = sorted(set(inputs) - paths)
    if missing:
        raise ValueError(f"the run's inputs {missing} are not files of the crate")
    packages = environment.get("packages") or {}
    crate = ROCrate()
    crate.root_dataset["name"] = name
    crate.root_dataset["description"] = description
    crate.root_dataset["datePublished"] = date

    entities = {}
    for item in sorted(files, key=lambda f: f.path):
        properties = {"name": PurePosixPath(item.path).name, "encodingFormat": media_type(item.path),
                      "contentSize": str(item.size)}
        if item.path == WORKFLOW_NAME:
            entities[item.path] = crate.add_workflow(
                dest_path=item.path, main=True, lang="snakemake", lang_version=packages.get("snakemake"),
                properties={**properties, "name": "interplay Snakemake workflow"})
        else:
            entities[item.path] = crate.add_file(dest_path=item.path, properties=properties)
    for profile_id, profile_name, version in PROFILES:
        profile = crate.add(ContextEntity(crate, profile_id, properties={
            "@type": ["CreativeWork", "Profile"], "name": profile_name, "version": version}))
        crate.root_dataset.append_to("conformsTo", profile)

    python = crate.add(ContextEntity(crate, f"#python-{environment.get('python', 'unknown')}", properties={
        "@type": "SoftwareApplication", "name": environment.get("python_implementation", "Python"),
        "softwareVersion": environment.get("python", "unknown"), "url": {"@id": "https://www.python.org"}}))
    requirements = [python]
    for package, version in sorted(packages.items()):
        requirements.append(crate.add(ContextEntity(crate, _package_id(package, version), properties={
            "@type": "SoftwareApplication", "name": package, "softwareVersion": version})))
    workflow = entities[WORKFLOW_NAME]
    workflow["softwareRequirements"] = requirements

    variables = []
    for variable, value in sorted((environment.get("env") or {}).items()):
        variables.append(crate.add(ContextEntity(crate, f"#env-{variable}", properties={
            "@type": "PropertyValue", "name": variable, "value": value})))
    results = [entities[path] for path in sorted(paths) if path.startswith("results/")]
    action = crate.add_action(workflow, identifier="#run", object=[entities[p] for p in inputs], result=results,
                              properties={"@type": "CreateAction", "name": f"Run of the workflow: {name}",
                                          "startTime": start, "endTime": end,
                                          "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"}})
    if variables:
        action["environment"] = variables
    crate.root_dataset.append_to("mentions", action)
    return (json.dumps(crate.metadata.generate(), indent=2) + "\n").encode()
