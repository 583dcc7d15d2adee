"""Checks for the Render deployment files: render.yaml, Procfile, runtime.txt, .python-version, deploy/.

1. render.yaml validates against Render's official Blueprint JSON schema, vendored in
   ``deploy/render/render.schema.json`` (provenance and hash in ``deploy/render/SOURCE.md``; missing or altered
   file = failure, never a skip).
2. Semantic checks the schema cannot make, as plain ``check_*`` functions returning a list of problems;
   ``test_checker_reports_mutation`` breaks a copy of the blueprint in one way per check and asserts the
   matching checker reports it, so no check can silently pass everything.
3. ``deploy.mlflow_server.build_command`` unit tests, and a smoke test that starts the launcher against a
   throwaway Postgres database on 127.0.0.1:5432 (skipped if Postgres is unreachable, failed if CI=true).
"""

from __future__ import annotations

import copy
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from deploy.mlflow_server import build_command  # noqa: E402

SCHEMA_PATH = REPO_ROOT / "deploy" / "render" / "render.schema.json"
SCHEMA_SHA256 = "665539cb0c191856ba38d292b985a963880bb69b030d666e5fe7788e78e7e696"
BLUEPRINT_PATH = REPO_ROOT / "render.yaml"
LAUNCHER_MODULE = "deploy.mlflow_server"

API, UI, MLFLOW, DB = "diabetes-api", "diabetes-streamlit", "diabetes-mlflow", "diabetes-db"
MONITOR = "diabetes-monitor"

# The start commands are the contract with the engineers writing pipeline/, serving/ and ui/.
EXPECTED_START = {
    API: "python -m pipeline.bootstrap && python -m serving",
    UI: "streamlit run ui/app.py --server.port $PORT --server.address 0.0.0.0 --server.headless true",
    MLFLOW: f"python -m {LAUNCHER_MODULE}",
}
EXPECTED_ENV = {
    API: {"PYTHON_VERSION", "MLFLOW_TRACKING_HOSTPORT", "DATABASE_URL", "MODEL_NAME", "MODEL_ALIAS", "WEB_CONCURRENCY",
          "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_BOOTSTRAP_USERNAME",
          "MLFLOW_BOOTSTRAP_PASSWORD", "MODEL_SIGNING_KEY"},
    UI: {"PYTHON_VERSION", "API_HOSTPORT", "MLFLOW_TRACKING_HOSTPORT", "MODEL_NAME", "MLFLOW_TRACKING_USERNAME",
         "MLFLOW_TRACKING_PASSWORD"},
    MLFLOW: {"PYTHON_VERSION", "DATABASE_URL", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_FLASK_SERVER_SECRET_KEY",
             "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_API_PASSWORD", "MLFLOW_APP_PASSWORD", "MLFLOW_TRAINER_PASSWORD",
             "MODEL_NAME"},
}  # fmt: skip
# Who may hold which credential (least privilege). Each service's MLflow password is a copy of the password the
# MLflow service generated for that service's own user; the signing key exists only where training and serving run.
OWN_MLFLOW_PASSWORD = {API: "MLFLOW_API_PASSWORD", UI: "MLFLOW_APP_PASSWORD", MONITOR: "MLFLOW_MONITOR_PASSWORD"}
BOOTSTRAP_COPY = (API, "MLFLOW_BOOTSTRAP_PASSWORD", "MLFLOW_TRAINER_PASSWORD")
SIGNING_KEY_HOLDER = API
# The registry's store; the API for bootstrap's advisory lock, its keys and the inference log; the app for clinician
# logins and the monitoring page; the monitor job for the inference log.
DATABASE_HOLDERS = {MLFLOW, API, UI, MONITOR}
# What each long-running command serves as a health endpoint.
#   python -m serving             -> the FastAPI app's /health (serving's own tests check the route)
#   streamlit run                 -> Streamlit's built-in /_stcore/health
#   python -m deploy.mlflow_server -> MLflow's /health (exempt from host validation; the smoke test hits it)
HEALTH_PATHS_BY_PROGRAM = {
    "python -m serving": {"/health"},
    "streamlit run": {"/_stcore/health"},
    f"python -m {LAUNCHER_MODULE}": {"/health"},
}
SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "KEY")
DEFAULT_RENDER_PORT = "10000"  # reserved for public traffic; unusable on Render's private network

Blueprint = dict[str, Any]


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def load_blueprint(path: Path = BLUEPRINT_PATH) -> Blueprint:
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    if not path.is_file():
        pytest.fail(
            f"Render Blueprint schema not found at {path}: it is vendored in deploy/render/ (see SOURCE.md there)."
        )
    return yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML; avoids a second parser


def services(bp: Blueprint) -> list[dict[str, Any]]:
    return list(bp.get("services") or [])


def web_services(bp: Blueprint) -> list[dict[str, Any]]:
    """The services that run our code (Render Key Value instances are services too, without a runtime)."""
    return [svc for svc in services(bp) if svc.get("type") == "web"]


def databases(bp: Blueprint) -> list[dict[str, Any]]:
    return list(bp.get("databases") or [])


def service(bp: Blueprint, name: str) -> dict[str, Any]:
    for svc in services(bp):
        if svc.get("name") == name:
            return svc
    raise KeyError(name)


def env_vars(svc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(svc.get("envVars") or [])


def env_value(svc: dict[str, Any], key: str) -> Any:
    for var in env_vars(svc):
        if var.get("key") == key:
            return var.get("value")
    return None


def main_program(start_command: str) -> str:
    """The long-running part of a start command: the last step of an ``&&`` chain."""
    return start_command.split("&&")[-1].strip()


def python_module(command: str) -> str | None:
    match = re.match(r"python3?\s+-m\s+([\w.]+)", command)
    return match.group(1) if match else None


def module_source(module: str, root: Path = REPO_ROOT) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


def program_sources(module: str, root: Path = REPO_ROOT) -> list[Path]:
    """The files that `python -m module` runs from: the module, or every file of the package it executes."""
    entry = module_source(module, root)
    if entry is None:
        return []
    return sorted(entry.parent.rglob("*.py")) if entry.name == "__main__.py" else [entry]


# --------------------------------------------------------------------------------------------------------------
# Checkers: each returns a list of human-readable problems (empty = fine)
# --------------------------------------------------------------------------------------------------------------


def _no_remote_retrieval(uri: str) -> Resource:
    # Every $ref in Render's schema is local ("#/definitions/..."). Anything else must not hit the network.
    raise NoSuchResource(ref=uri)


def schema_validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    registry = Registry(retrieve=_no_remote_retrieval).with_resource(schema.get("$id", ""), resource)
    return Draft202012Validator(schema, registry=registry)


def check_schema(bp: Blueprint, schema: dict[str, Any]) -> list[str]:
    validator = schema_validator(schema)
    return [
        f"schema: {'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(bp), key=lambda e: list(map(str, e.absolute_path)))
    ]


def _looks_like_postgres(svc: dict[str, Any], db_names: set[str]) -> bool:
    text = " ".join(
        str(svc.get(field) or "") for field in ("name", "startCommand", "dockerCommand", "dockerfilePath")
    ).lower()
    image = str((svc.get("image") or {}).get("url", "")).lower()
    return (
        svc.get("name") in db_names
        or "postgres" in text
        or "pg_ctl" in text
        or "postgres" in image
        or svc.get("name") == DB
    )


def check_database_placement(bp: Blueprint) -> list[str]:
    problems = []
    db_names = {db.get("name") for db in databases(bp)}
    if DB not in db_names:
        problems.append(f"database: {DB} must be declared under the top-level 'databases:' key")
    for svc in services(bp):
        if _looks_like_postgres(svc, db_names):
            problems.append(
                f"database: service {svc.get('name')!r} (type {svc.get('type')}) runs Postgres; "
                "declare Render Postgres under 'databases:', not as a service"
            )
    names = [s.get("name") for s in services(bp)] + [d.get("name") for d in databases(bp)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"names: duplicated resource names {duplicates}")
    return problems


def check_references(bp: Blueprint) -> list[str]:
    """Every fromService/fromDatabase/fromGroup names something declared, with a matching type."""
    problems = []
    service_types = {svc.get("name"): svc.get("type") for svc in services(bp)}
    db_names = {db.get("name") for db in databases(bp)}
    group_names = {grp.get("name") for grp in bp.get("envVarGroups") or []}
    for svc in services(bp):
        owner = svc.get("name")
        for var in env_vars(svc):
            key = var.get("key")
            if "fromService" in var:
                ref = var["fromService"]
                name, kind = ref.get("name"), ref.get("type")
                if name not in service_types:
                    problems.append(f"reference: {owner}.{key} fromService {name!r} is not a declared service")
                elif service_types[name] != kind:
                    problems.append(
                        f"reference: {owner}.{key} fromService {name!r} has type {kind!r}, "
                        f"but it is declared as {service_types[name]!r}"
                    )
                elif "envVarKey" in ref and ref["envVarKey"] not in {v.get("key") for v in env_vars(service(bp, name))}:
                    problems.append(f"reference: {owner}.{key} reads {name}.{ref['envVarKey']}, which is not declared")
                if "property" not in ref and "envVarKey" not in ref:
                    problems.append(f"reference: {owner}.{key} fromService needs a property or an envVarKey")
            if "fromDatabase" in var:
                name = var["fromDatabase"].get("name")
                if name not in db_names:
                    kind = service_types.get(name)
                    suffix = f" (it is a {kind!r} service)" if kind else ""
                    problems.append(f"reference: {owner}.{key} fromDatabase {name!r} is not under 'databases:'{suffix}")
            if "fromGroup" in var and var["fromGroup"] not in group_names:
                problems.append(f"reference: {owner} fromGroup {var['fromGroup']!r} is not a declared envVarGroup")
    return problems


def check_runtime(bp: Blueprint) -> list[str]:
    return [
        f"runtime: {svc.get('name')} has runtime {svc.get('runtime')!r}, expected 'python'"
        for svc in web_services(bp)
        if svc.get("runtime") != "python"
    ]


def check_python_version(bp: Blueprint, runtime_txt: str, python_version_file: str, running: str) -> list[str]:
    problems = []
    from_runtime = runtime_txt.strip().removeprefix("python-")
    from_file = python_version_file.strip()
    if from_runtime != from_file:
        problems.append(f"python: runtime.txt says {from_runtime}, .python-version says {from_file}")
    if running != from_file:
        problems.append(f"python: tests run on Python {running}, .python-version says {from_file}")
    for svc in web_services(bp):
        value = env_value(svc, "PYTHON_VERSION")
        if value is None:
            problems.append(f"python: {svc.get('name')} does not set PYTHON_VERSION")
        elif str(value) != from_file:
            problems.append(f"python: {svc.get('name')} PYTHON_VERSION={value}, .python-version says {from_file}")
    return problems


def served_health_paths(start_command: str) -> set[str] | None:
    program = main_program(start_command)
    for prefix, paths in HEALTH_PATHS_BY_PROGRAM.items():
        if program == prefix or program.startswith(prefix + " "):
            return paths
    return None


def check_health_checks(bp: Blueprint) -> list[str]:
    problems = []
    for svc in services(bp):
        if svc.get("type") != "web":
            continue
        name, path = svc.get("name"), svc.get("healthCheckPath")
        paths = served_health_paths(svc.get("startCommand", ""))
        if not path:
            problems.append(f"health: web service {name} has no healthCheckPath")
        elif paths is None:
            problems.append(f"health: {name} starts {svc.get('startCommand')!r}; no known health endpoint for it")
        elif path not in paths:
            problems.append(f"health: {name} checks {path}, but its start command serves {sorted(paths)}")
    return problems


def check_start_commands(bp: Blueprint) -> list[str]:
    problems = []
    for name, expected in EXPECTED_START.items():
        try:
            actual = service(bp, name).get("startCommand")
        except KeyError:
            problems.append(f"start: service {name} is missing")
            continue
        if actual != expected:
            problems.append(f"start: {name} startCommand is {actual!r}, the contract is {expected!r}")
    for svc in web_services(bp):
        if svc.get("buildCommand") != "pip install -r requirements.txt":
            problems.append(f"build: {svc.get('name')} buildCommand is {svc.get('buildCommand')!r}")
    return problems


def check_port_binding(bp: Blueprint, root: Path = REPO_ROOT) -> list[str]:
    """Every web service listens on 0.0.0.0:$PORT."""
    problems = []
    for svc in services(bp):
        if svc.get("type") != "web":
            continue
        name = svc.get("name")
        program = main_program(svc.get("startCommand", ""))
        if program.startswith("streamlit run"):
            args = shlex.split(program)
            pairs = dict(zip(args, args[1:], strict=False))
            if pairs.get("--server.port") != "$PORT":
                problems.append(f"port: {name} must pass --server.port $PORT")
            if pairs.get("--server.address") != "0.0.0.0":
                problems.append(f"port: {name} must pass --server.address 0.0.0.0")
        elif module := python_module(program):
            sources = program_sources(module, root)
            if not sources:
                if module == LAUNCHER_MODULE:
                    problems.append(f"port: {name} starts {module}, whose source is missing")
                # Other modules (serving) belong to other engineers; they are checked once they exist.
                continue
            text = "\n".join(path.read_text(encoding="utf-8") for path in sources)
            if not re.search(r"""["']PORT["']""", text):
                problems.append(f"port: {name} starts {module}, which never reads PORT")
            if module == LAUNCHER_MODULE and "0.0.0.0" not in text:
                problems.append(f"port: {module} does not bind 0.0.0.0")
        else:
            problems.append(f"port: {name} runs {program!r}; cannot tell whether it binds $PORT")
    return problems


def check_private_ports(bp: Blueprint) -> list[str]:
    """Services reached over the private network must not listen on Render's reserved public port 10000."""
    targets = {var["fromService"]["name"] for svc in services(bp) for var in env_vars(svc) if "fromService" in var}
    problems = []
    for svc in web_services(bp):  # a Key Value instance listens on its own port
        if svc.get("name") in targets:
            port = env_value(svc, "PORT")
            if port is None or str(port) == DEFAULT_RENDER_PORT:
                problems.append(
                    f"port: {svc.get('name')} receives private-network traffic, so it must set PORT "
                    f"to something other than {DEFAULT_RENDER_PORT}"
                )
    return problems


def check_plans_and_region(bp: Blueprint) -> list[str]:
    """Free web services cannot receive private traffic or have a disk; the private network is per region."""
    problems = []
    targets = {var["fromService"]["name"] for svc in services(bp) for var in env_vars(svc) if "fromService" in var}
    for svc in web_services(bp):  # free Key Value instances are reachable on the private network
        name, plan = svc.get("name"), svc.get("plan", "starter")
        if name in targets and plan == "free":
            problems.append(f"plan: {name} receives private-network traffic; free web services cannot")
        if svc.get("disk") and plan == "free":
            problems.append(f"plan: {name} has a disk; disks need a paid instance type")
    regions = {r.get("region") for r in services(bp) + databases(bp)}
    if len(regions) != 1 or None in regions:
        problems.append(f"region: all services and databases must share one explicit region, got {regions}")
    return problems


def check_env_contract(bp: Blueprint) -> list[str]:
    problems = []
    for name, keys in EXPECTED_ENV.items():
        try:
            declared = {var.get("key") for var in env_vars(service(bp, name))}
        except KeyError:
            continue  # reported by check_start_commands
        missing = keys - declared
        if missing:
            problems.append(f"env: {name} is missing {sorted(missing)}")
    return problems


def check_secrets(bp: Blueprint) -> list[str]:
    """Secrets come from generateValue / fromDatabase / fromService, never a literal value."""
    problems = []
    owners = [(svc.get("name"), env_vars(svc)) for svc in services(bp)]
    owners += [(grp.get("name"), grp.get("envVars") or []) for grp in bp.get("envVarGroups") or []]
    for owner, variables in owners:
        for var in variables:
            key = str(var.get("key", ""))
            if "value" not in var:
                continue
            if any(word in key.upper() for word in SECRET_WORDS):
                problems.append(f"secret: {owner}.{key} has a literal value; use generateValue or fromDatabase")
            elif re.search(r"://[^/\s]*:[^/\s]*@", str(var["value"])):
                problems.append(f"secret: {owner}.{key} has a literal URL with credentials")
    return problems


def _is_credential(var: dict[str, Any]) -> bool:
    key = str(var.get("key", "")).upper()
    return any(word in key for word in SECRET_WORDS) or "fromDatabase" in var


def check_secret_sources(bp: Blueprint) -> list[str]:
    """Every credential is generated by Render (generateValue), entered by hand (sync: false), Render's database
    URL, or a copy of another service's variable; never a literal, never missing a source."""
    problems = []
    owners = [(svc.get("name"), env_vars(svc)) for svc in services(bp)]
    owners += [(grp.get("name"), grp.get("envVars") or []) for grp in bp.get("envVarGroups") or []]
    for owner, variables in owners:
        for var in variables:
            if not _is_credential(var):
                continue
            sourced = (
                var.get("generateValue") is True
                or var.get("sync") is False
                or "fromDatabase" in var
                or "envVarKey" in (var.get("fromService") or {})
            )
            if not sourced:
                problems.append(
                    f"secret: {owner}.{var.get('key')} must be generateValue, sync: false, fromDatabase or a "
                    "fromService envVarKey copy"
                )
    return problems


def _copies(bp: Blueprint) -> list[tuple[str, str, str, str]]:
    """(service, key, source service, source key) for every fromService envVarKey copy."""
    return [
        (svc.get("name"), var.get("key"), var["fromService"].get("name"), var["fromService"]["envVarKey"])
        for svc in services(bp)
        for var in env_vars(svc)
        if "envVarKey" in (var.get("fromService") or {})
    ]


def check_least_privilege(bp: Blueprint) -> list[str]:
    """Each service gets only the credentials it uses."""
    problems = []
    copies = _copies(bp)
    copied_keys = {(src, src_key) for _, _, src, src_key in copies}
    # The MLflow admin password and the signing key are never copied anywhere.
    for src, src_key in copied_keys:
        if src_key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MODEL_SIGNING_KEY"):
            problems.append(f"privilege: {src}.{src_key} is copied to another service")
    # Each service logs in to MLflow as its own user.
    for name, expected in OWN_MLFLOW_PASSWORD.items():
        got = [(src, src_key) for svc, key, src, src_key in copies if svc == name and key == "MLFLOW_TRACKING_PASSWORD"]
        if got != [(MLFLOW, expected)]:
            problems.append(f"privilege: {name}.MLFLOW_TRACKING_PASSWORD must copy {MLFLOW}.{expected}, got {got}")
    # The trainer's (bootstrap) password goes to the API's bootstrap only, under a name MLflow's client ignores.
    for svc, key, _src, src_key in copies:
        if src_key == BOOTSTRAP_COPY[2] and (svc, key) != BOOTSTRAP_COPY[:2]:
            problems.append(f"privilege: {svc}.{key} holds the trainer's password; only {API}'s bootstrap may")
    # The signing key: generated on the API service (bootstrap trains there), declared nowhere else.
    holders = [svc.get("name") for svc in services(bp) for v in env_vars(svc) if v.get("key") == "MODEL_SIGNING_KEY"]
    holders += [grp.get("name") for grp in bp.get("envVarGroups") or [] for v in grp.get("envVars") or []
                if v.get("key") == "MODEL_SIGNING_KEY"]  # fmt: skip
    if holders != [SIGNING_KEY_HOLDER]:
        problems.append(f"privilege: MODEL_SIGNING_KEY must be declared on {SIGNING_KEY_HOLDER} only, got {holders}")
    # Database credentials only where the database is used.
    for svc in services(bp):
        if svc.get("name") not in DATABASE_HOLDERS and any("fromDatabase" in v for v in env_vars(svc)):
            problems.append(f"privilege: {svc.get('name')} receives a database connection string it does not use")
    return problems


def check_mlflow_service(bp: Blueprint, builder: Callable[[dict[str, str]], list[str]] = build_command) -> list[str]:
    problems = []
    try:
        svc = service(bp, MLFLOW)
    except KeyError:
        return [f"mlflow: service {MLFLOW} is missing"]
    disk = svc.get("disk")
    if not disk or not disk.get("mountPath"):
        problems.append(f"mlflow: {MLFLOW} needs a persistent disk for artifacts")
    destination = env_value(svc, "MLFLOW_ARTIFACTS_DESTINATION")
    if disk and disk.get("mountPath") and not str(destination or "").startswith(disk["mountPath"].rstrip("/") + "/"):
        problems.append(f"mlflow: MLFLOW_ARTIFACTS_DESTINATION={destination} is not on the disk ({disk['mountPath']})")
    if python_module(main_program(svc.get("startCommand", ""))) != LAUNCHER_MODULE:
        problems.append(f"mlflow: {MLFLOW} must start {LAUNCHER_MODULE}")
    env = {str(v["key"]): str(v["value"]) for v in env_vars(svc) if "value" in v}
    env.update({"DATABASE_URL": "postgres://u:p@db:5432/x", "PORT": env.get("PORT", "10000")})
    command = builder(env)
    if "--allowed-hosts" not in command:
        problems.append(f"mlflow: {LAUNCHER_MODULE} does not pass --allowed-hosts (MLflow 3.5+ would answer 403)")
    if "--serve-artifacts" not in command:
        problems.append(f"mlflow: {LAUNCHER_MODULE} does not pass --serve-artifacts")
    # Authentication: the admin password is a generated secret, which turns on MLflow's basic-auth app.
    admin = next((v for v in env_vars(svc) if v.get("key") == "MLFLOW_AUTH_ADMIN_PASSWORD"), None)
    if not admin or admin.get("generateValue") is not True:
        problems.append(f"mlflow: {MLFLOW} needs MLFLOW_AUTH_ADMIN_PASSWORD with generateValue: true")
    else:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = "generated"
    command = builder(env)
    if "basic-auth" not in command or command[command.index("basic-auth") - 1] != "--app-name":
        problems.append(f"mlflow: {LAUNCHER_MODULE} does not run --app-name basic-auth (anyone could write models)")
    return problems


def check_procfile(bp: Blueprint, procfile_text: str) -> list[str]:
    web = [line for line in procfile_text.splitlines() if line.startswith("web:")]
    if len(web) != 1:
        return [f"procfile: expected exactly one 'web:' line, found {len(web)}"]
    command = web[0].removeprefix("web:").strip()
    try:
        api = service(bp, API).get("startCommand")
    except KeyError:
        return [f"procfile: service {API} is missing"]
    return [] if command == api else [f"procfile: web command {command!r} differs from {API} startCommand {api!r}"]


def all_semantic_problems(bp: Blueprint) -> list[str]:
    return (
        check_database_placement(bp)
        + check_references(bp)
        + check_runtime(bp)
        + check_python_version(bp, *_version_files(), platform.python_version())
        + check_health_checks(bp)
        + check_start_commands(bp)
        + check_port_binding(bp)
        + check_private_ports(bp)
        + check_plans_and_region(bp)
        + check_env_contract(bp)
        + check_secrets(bp)
        + check_secret_sources(bp)
        + check_least_privilege(bp)
        + check_mlflow_service(bp)
        + check_procfile(bp, (REPO_ROOT / "Procfile").read_text(encoding="utf-8"))
    )


def _version_files() -> tuple[str, str]:
    return (
        (REPO_ROOT / "runtime.txt").read_text(encoding="utf-8"),
        (REPO_ROOT / ".python-version").read_text(encoding="utf-8"),
    )


# --------------------------------------------------------------------------------------------------------------
# Tests on the real files
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blueprint() -> Blueprint:
    return load_blueprint()


def test_schema_is_draft_2020_12_with_only_local_refs() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    refs = re.findall(r'"\$ref":\s*"([^"]*)"', SCHEMA_PATH.read_text(encoding="utf-8"))
    assert refs and all(ref.startswith("#") for ref in refs), "remote $ref found; resolve it locally"


def test_vendored_schema_is_the_recorded_file() -> None:
    import hashlib

    assert hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest() == SCHEMA_SHA256, "schema changed: see SOURCE.md"


def test_render_yaml_matches_official_schema(blueprint: Blueprint) -> None:
    assert check_schema(blueprint, load_schema()) == []


def test_schema_validation_can_fail(blueprint: Blueprint) -> None:
    schema = load_schema()
    broken = copy.deepcopy(blueprint)
    service(broken, API)["runtime"] = "python3"
    broken["databases"][0]["plan"] = "gigantic"
    problems = check_schema(broken, schema)
    assert problems, "the schema accepted runtime python3 and an unknown plan"


def test_declares_exactly_the_expected_resources(blueprint: Blueprint) -> None:
    assert sorted(s["name"] for s in web_services(blueprint)) == sorted([API, UI, MLFLOW])
    others = {s["name"]: s["type"] for s in services(blueprint) if s["type"] != "web"}
    assert others == {"diabetes-ratelimit": "keyvalue", MONITOR: "cron"}
    kv = next(s for s in services(blueprint) if s["type"] == "keyvalue")
    assert kv["ipAllowList"] == []  # shared rate-limit counters, private network only
    assert python_module(service(blueprint, MONITOR)["startCommand"]) == "monitor.job"
    assert module_source("monitor.job") is not None
    assert [d["name"] for d in databases(blueprint)] == [DB]


@pytest.mark.parametrize(
    "check",
    [
        check_database_placement,
        check_references,
        check_runtime,
        check_health_checks,
        check_start_commands,
        check_port_binding,
        check_private_ports,
        check_plans_and_region,
        check_env_contract,
        check_secrets,
        check_secret_sources,
        check_least_privilege,
        check_mlflow_service,
    ],
    ids=lambda f: f.__name__,
)
def test_semantic_check_passes(blueprint: Blueprint, check: Callable[[Blueprint], list[str]]) -> None:
    assert check(blueprint) == []


def test_python_version_is_consistent(blueprint: Blueprint) -> None:
    assert check_python_version(blueprint, *_version_files(), platform.python_version()) == []


def test_procfile_matches_api_start_command(blueprint: Blueprint) -> None:
    assert check_procfile(blueprint, (REPO_ROOT / "Procfile").read_text(encoding="utf-8")) == []


def test_launcher_source_reads_port() -> None:
    source = module_source(LAUNCHER_MODULE)
    assert source is not None
    assert re.search(r"""env\.get\(\s*["']PORT["']""", source.read_text(encoding="utf-8"))


def test_all_checks_together_pass(blueprint: Blueprint) -> None:
    assert all_semantic_problems(blueprint) == []


@pytest.mark.parametrize("doc", ["deploy.en.md", "deploy.es.md"])
def test_deploy_guide_names_every_resource_and_variable(blueprint: Blueprint, doc: str) -> None:
    text = (REPO_ROOT / "docs" / doc).read_text(encoding="utf-8")
    names = {r["name"] for r in services(blueprint) + databases(blueprint)}
    keys = {v["key"] for svc in services(blueprint) for v in env_vars(svc) if "key" in v}
    keys |= {v["key"] for grp in blueprint.get("envVarGroups") or [] for v in grp["envVars"]}
    names |= {grp["name"] for grp in blueprint.get("envVarGroups") or []}
    keys |= {"MLFLOW_ALLOWED_HOSTS", "MLFLOW_CORS_ALLOWED_ORIGINS", "RENDER_EXTERNAL_HOSTNAME", "RENDER_SERVICE_NAME"}
    started = [svc for svc in services(blueprint) if "startCommand" in svc]
    commands = {svc["startCommand"] for svc in started} | {
        svc["healthCheckPath"] for svc in started if "healthCheckPath" in svc
    }
    missing = sorted(item for item in names | keys | commands if f"`{item}`" not in text)
    assert not missing, f"docs/{doc} does not mention {missing}"
    assert "render.com/pricing" in text


# --------------------------------------------------------------------------------------------------------------
# Every check can fail: break a copy of the blueprint, expect the checker to say so
# --------------------------------------------------------------------------------------------------------------


def _move_db_into_services(bp: Blueprint) -> None:
    db = bp.pop("databases")[0]
    bp["services"].append(
        {"type": "pserv", "name": db["name"], "runtime": "docker", "dockerCommand": "postgres -D /var/lib/pg"}
    )


def _postgres_private_service(bp: Blueprint) -> None:
    bp["services"].append(
        {"type": "pserv", "name": "pg", "runtime": "image", "image": {"url": "docker.io/postgres:16"}}
    )


def _env(bp: Blueprint, name: str, key: str) -> dict[str, Any]:
    return next(v for v in service(bp, name)["envVars"] if v.get("key") == key)


def _set(path: Callable[[Blueprint], dict[str, Any]], field: str, value: Any) -> Callable[[Blueprint], None]:
    def mutate(bp: Blueprint) -> None:
        path(bp)[field] = value

    return mutate


def _delete(path: Callable[[Blueprint], dict[str, Any]], field: str) -> Callable[[Blueprint], None]:
    def mutate(bp: Blueprint) -> None:
        del path(bp)[field]

    return mutate


def _mlflow(bp: Blueprint) -> dict[str, Any]:
    return service(bp, MLFLOW)


def _api(bp: Blueprint) -> dict[str, Any]:
    return service(bp, API)


def _ui(bp: Blueprint) -> dict[str, Any]:
    return service(bp, UI)


def _add_env(path: Callable[[Blueprint], dict[str, Any]], var: dict[str, Any]) -> Callable[[Blueprint], None]:
    def mutate(bp: Blueprint) -> None:
        path(bp)["envVars"].append(var)

    return mutate


def _literal_secret(bp: Blueprint) -> None:
    var = _env(bp, MLFLOW, "MLFLOW_FLASK_SERVER_SECRET_KEY")
    var.pop("generateValue")
    var["value"] = "hunter2"


def _literal_database_url(bp: Blueprint) -> None:
    var = _env(bp, API, "DATABASE_URL")
    var.pop("fromDatabase")
    var["value"] = "postgres://diabetes:s3cret@dpg-xyz/diabetes"


MUTATIONS: list[tuple[str, Callable[[Blueprint], None], Callable[[Blueprint], list[str]], str]] = [
    ("db-as-private-service", _move_db_into_services, check_database_placement, "databases:"),
    ("postgres-image-pserv", _postgres_private_service, check_database_placement, "runs Postgres"),
    ("db-as-service-breaks-ref", _move_db_into_services, check_references, "not under 'databases:'"),
    (
        "fromService-bad-name",
        lambda bp: _env(bp, API, "MLFLOW_TRACKING_HOSTPORT")["fromService"].update(name="diabetes-mlfow"),
        check_references,
        "not a declared service",
    ),
    (
        "fromService-bad-type",
        lambda bp: _env(bp, UI, "API_HOSTPORT")["fromService"].update(type="pserv"),
        check_references,
        "declared as 'web'",
    ),
    (
        "fromDatabase-bad-name",
        lambda bp: _env(bp, MLFLOW, "DATABASE_URL")["fromDatabase"].update(name="diabetes-pg"),
        check_references,
        "diabetes-pg",
    ),
    ("runtime-python3", _set(_ui, "runtime", "python3"), check_runtime, "python3"),
    ("python-version-drift", lambda bp: _env(bp, API, "PYTHON_VERSION").update(value="3.12.1"), None, "3.12.1"),
    ("health-wrong-path", _set(_ui, "healthCheckPath", "/health"), check_health_checks, "/_stcore/health"),
    ("health-missing", _delete(_mlflow, "healthCheckPath"), check_health_checks, "no healthCheckPath"),
    ("start-contract", _set(_api, "startCommand", "python -m serving"), check_start_commands, "contract"),
    (
        "streamlit-fixed-port",
        _set(_ui, "startCommand", EXPECTED_START[UI].replace("$PORT", "8501")),
        check_port_binding,
        "--server.port $PORT",
    ),
    (
        "streamlit-localhost",
        _set(_ui, "startCommand", EXPECTED_START[UI].replace("0.0.0.0", "127.0.0.1")),
        check_port_binding,
        "--server.address 0.0.0.0",
    ),
    ("unknown-program", _set(_mlflow, "startCommand", "mlflow server"), check_port_binding, "cannot tell"),
    (
        "private-target-on-10000",
        lambda bp: _env(bp, MLFLOW, "PORT").update(value=10000),
        check_private_ports,
        "10000",
    ),
    ("private-target-free", _set(_api, "plan", "free"), check_plans_and_region, "free web services cannot"),
    ("mixed-regions", _set(_ui, "region", "frankfurt"), check_plans_and_region, "one explicit region"),
    (
        "env-missing",
        lambda bp: _api(bp).update(envVars=[v for v in _api(bp)["envVars"] if v.get("key") != "MODEL_ALIAS"]),
        check_env_contract,
        "MODEL_ALIAS",
    ),
    ("literal-secret", _literal_secret, check_secrets, "MLFLOW_FLASK_SERVER_SECRET_KEY"),
    ("literal-db-url", _literal_database_url, check_secrets, "credentials"),
    ("mlflow-no-disk", _delete(_mlflow, "disk"), check_mlflow_service, "disk"),
    (
        "artifacts-off-disk",
        lambda bp: _env(bp, MLFLOW, "MLFLOW_ARTIFACTS_DESTINATION").update(value="/tmp/mlartifacts"),
        check_mlflow_service,
        "not on the disk",
    ),
    ("procfile-drift", _set(_api, "startCommand", "python -m serving"), None, "procfile"),
    ("secret-no-source", lambda bp: _env(bp, API, "MODEL_SIGNING_KEY").pop("generateValue"), check_secret_sources,
     "MODEL_SIGNING_KEY"),
    ("signing-key-on-ui", _add_env(_ui, {"key": "MODEL_SIGNING_KEY", "generateValue": True}), check_least_privilege,
     "MODEL_SIGNING_KEY"),
    ("signing-key-copied", _add_env(_ui, {"key": "SIGNING", "fromService": {"type": "web", "name": API,
                                                                           "envVarKey": "MODEL_SIGNING_KEY"}}),
     check_least_privilege, "copied"),
    ("admin-password-copied", lambda bp: _env(bp, API, "MLFLOW_TRACKING_PASSWORD")["fromService"].update(
        envVarKey="MLFLOW_AUTH_ADMIN_PASSWORD"), check_least_privilege, "MLFLOW_AUTH_ADMIN_PASSWORD"),
    ("ui-uses-api-user", lambda bp: _env(bp, UI, "MLFLOW_TRACKING_PASSWORD")["fromService"].update(
        envVarKey="MLFLOW_API_PASSWORD"), check_least_privilege, "must copy"),
    ("trainer-password-on-ui", _add_env(_ui, {"key": "MLFLOW_BOOTSTRAP_PASSWORD", "fromService": {
        "type": "web", "name": MLFLOW, "envVarKey": "MLFLOW_TRAINER_PASSWORD"}}), check_least_privilege, "trainer"),
    # The app now holds the database (logins, monitoring page): the rate-limit store is the service that must not.
    ("database-on-keyvalue", lambda bp: next(s for s in bp["services"] if s["type"] == "keyvalue").setdefault(
        "envVars", []).append({"key": "DATABASE_URL", "fromDatabase": {"name": DB, "property": "connectionString"}}),
     check_least_privilege, "does not use"),
    ("mlflow-without-auth", lambda bp: _mlflow(bp).update(
        envVars=[v for v in _mlflow(bp)["envVars"] if v["key"] != "MLFLOW_AUTH_ADMIN_PASSWORD"]),
     check_mlflow_service, "basic-auth"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "mutate", "check", "expected"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_checker_reports_mutation(
    blueprint: Blueprint,
    label: str,
    mutate: Callable[[Blueprint], None],
    check: Callable[[Blueprint], list[str]] | None,
    expected: str,
) -> None:
    broken = copy.deepcopy(blueprint)
    mutate(broken)
    problems = check(broken) if check else all_semantic_problems(broken)
    assert any(expected in p for p in problems), f"{label}: no problem mentioning {expected!r} in {problems}"


def test_checker_reports_missing_allowed_hosts(blueprint: Blueprint) -> None:
    def without_allowed_hosts(env: dict[str, str]) -> list[str]:
        command = build_command(env)
        i = command.index("--allowed-hosts")
        return command[:i] + command[i + 2 :]

    problems = check_mlflow_service(blueprint, without_allowed_hosts)
    assert any("--allowed-hosts" in p for p in problems)


def test_checker_reports_python_version_mismatches(blueprint: Blueprint) -> None:
    assert check_python_version(blueprint, "python-3.11.7\n", "3.11.7\n", "3.12.0")
    assert check_python_version(blueprint, "python-3.11.6\n", "3.11.7\n", "3.11.7")


def test_checker_reports_launcher_that_ignores_port(blueprint: Blueprint, tmp_path: Path) -> None:
    fake = tmp_path / "deploy"
    fake.mkdir()
    (fake / "mlflow_server.py").write_text('import os\nHOST = "0.0.0.0"\nPORTS = os.environ.get("MY_PORT")\n')
    assert any("never reads PORT" in p for p in check_port_binding(blueprint, tmp_path))
    (fake / "mlflow_server.py").unlink()
    assert any("source is missing" in p for p in check_port_binding(blueprint, tmp_path))


def test_checker_reports_procfile_without_web_line(blueprint: Blueprint) -> None:
    assert check_procfile(blueprint, "worker: python -m serving\n")


# --------------------------------------------------------------------------------------------------------------
# deploy.mlflow_server.build_command
# --------------------------------------------------------------------------------------------------------------


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_build_command_rewrites_postgres_scheme(scheme: str) -> None:
    command = build_command({"DATABASE_URL": f"{scheme}://user:pw@dpg-abc:5432/diabetes"})
    assert _flag(command, "--backend-store-uri") == "postgresql+psycopg2://user:pw@dpg-abc:5432/diabetes"


def test_build_command_defaults() -> None:
    command = build_command({})
    assert command[1:4] == ["-m", "mlflow", "server"]
    assert _flag(command, "--backend-store-uri") == "sqlite:///mlflow.db"
    assert _flag(command, "--artifacts-destination") == "./mlruns"
    assert _flag(command, "--port") == "5000"
    assert _flag(command, "--host") == "0.0.0.0"
    assert _flag(command, "--workers") == "1"
    assert "--serve-artifacts" in command
    hosts = _flag(command, "--allowed-hosts").split(",")
    assert {"localhost", "127.0.0.1"} <= set(hosts)
    assert "--cors-allowed-origins" not in command


def test_build_command_uses_port_and_render_hostnames() -> None:
    env = {
        "PORT": "5001",
        "RENDER_EXTERNAL_HOSTNAME": "diabetes-mlflow.onrender.com",
        "RENDER_SERVICE_NAME": "diabetes-mlflow",
        "MLFLOW_ARTIFACTS_DESTINATION": "/var/data/mlartifacts",
    }
    command = build_command(env)
    assert _flag(command, "--port") == "5001"
    assert _flag(command, "--artifacts-destination") == "/var/data/mlartifacts"
    hosts = _flag(command, "--allowed-hosts").split(",")
    assert {"diabetes-mlflow.onrender.com", "diabetes-mlflow", "diabetes-mlflow:5001"} <= set(hosts)
    assert _flag(command, "--cors-allowed-origins") == "https://diabetes-mlflow.onrender.com"


def test_build_command_allowed_hosts_override() -> None:
    command = build_command({"MLFLOW_ALLOWED_HOSTS": "mlflow.example.org", "RENDER_SERVICE_NAME": "x"})
    assert _flag(command, "--allowed-hosts") == "mlflow.example.org"


def test_build_command_turns_on_basic_auth_with_an_admin_password() -> None:
    assert "--app-name" not in build_command({})  # a laptop: no admin password, no authentication
    command = build_command({"MLFLOW_AUTH_ADMIN_PASSWORD": "generated-by-render"})
    assert _flag(command, "--app-name") == "basic-auth"
    assert "generated-by-render" not in " ".join(command)


def test_auth_config_denies_by_default_and_keeps_the_password_out(tmp_path: Path) -> None:
    import configparser

    from deploy.mlflow_server import write_auth_config

    env = {"DATABASE_URL": "postgres://u:p%40ss@db:5432/x", "MLFLOW_AUTH_ADMIN_PASSWORD": "s3cret-admin-password",
           "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "conf" / "auth.ini")}  # fmt: skip
    path = write_auth_config(env)
    assert path == tmp_path / "conf" / "auth.ini" and path.stat().st_mode & 0o077 == 0
    parser = configparser.ConfigParser()
    parser.read(path)
    assert parser["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert parser["mlflow"]["database_uri"] == "postgresql+psycopg2://u:p%40ss@db:5432/x"  # same DB as the registry
    assert parser["mlflow"]["admin_username"] == "admin"
    assert "s3cret-admin-password" not in path.read_text()


def test_launcher_refuses_an_open_registry_off_loopback() -> None:
    from deploy.mlflow_server import exposure_problem

    assert "without authentication on 0.0.0.0" in exposure_problem({})
    assert exposure_problem({"HOST": "127.0.0.1"}) is None  # the local stack
    assert exposure_problem({"MLFLOW_AUTH_ADMIN_PASSWORD": "x" * 16}) is None  # Render: 0.0.0.0 with auth
    proc = subprocess.run([sys.executable, "-m", LAUNCHER_MODULE], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "PORT": "1"}, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "refusing" in proc.stderr


def test_build_command_is_pure() -> None:
    before = dict(os.environ)
    build_command({"DATABASE_URL": "postgres://a@b/c", "PORT": "1"})
    assert dict(os.environ) == before


# --------------------------------------------------------------------------------------------------------------
# Smoke test: the launcher really starts MLflow on Postgres, and allowed hosts behave
# --------------------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.slow
def test_launcher_smoke(postgres_url: str, tmp_path: Path) -> None:  # fixture: tests/conftest.py (fresh database)
    _run_launcher_smoke(postgres_url, tmp_path)


def _run_launcher_smoke(database_url: str, tmp_path: Path) -> None:
    import requests

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RENDER_"))}
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",  # without MLFLOW_AUTH_ADMIN_PASSWORD the launcher binds loopback only
        DATABASE_URL=database_url,
        MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "mlartifacts"),
        RENDER_SERVICE_NAME="diabetes-mlflow",
        RENDER_EXTERNAL_HOSTNAME="diabetes-mlflow.onrender.com",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
    )
    log_path = tmp_path / "mlflow_server.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", LAUNCHER_MODULE],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: uvicorn workers are stopped with it
        )
    try:
        deadline = time.monotonic() + 60
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                healthy = requests.get(f"{base}/health", timeout=2).status_code == 200
            except requests.RequestException:
                pass
            if healthy:
                break
            time.sleep(0.5)

        def log_text() -> str:
            return log_path.read_text(errors="replace")[-4000:]

        assert proc.poll() is None, f"launcher exited with {proc.returncode}:\n{log_text()}"
        assert healthy, f"/health did not answer 200 within 60 s:\n{log_text()}"

        def get(path: str, host: str) -> int:
            return requests.get(f"{base}{path}", headers={"Host": host}, timeout=10).status_code

        assert get("/", f"127.0.0.1:{port}") == 200, "UI refused its own loopback Host header"
        assert get("/", "evil.example.com") == 403, "unknown Host header was accepted"
        assert get("/health", "evil.example.com") == 200, "health is exempt from host validation"
        # What Render sends: the public hostname, and the internal "<name>-<hash>:<port>" over the private network.
        assert get("/", "diabetes-mlflow.onrender.com") == 200
        assert get("/api/2.0/mlflow/experiments/search?max_results=1", f"diabetes-mlflow-ab12:{port}") == 200
        # The UI's own POSTs carry its public origin; MLflow blocks unlisted origins on state-changing calls.
        response = requests.post(
            f"{base}/ajax-api/2.0/mlflow/experiments/search",
            json={"max_results": 1},
            headers={"Host": "diabetes-mlflow.onrender.com", "Origin": "https://diabetes-mlflow.onrender.com"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        blocked = requests.post(
            f"{base}/ajax-api/2.0/mlflow/experiments/search",
            json={"max_results": 1},
            headers={"Host": "diabetes-mlflow.onrender.com", "Origin": "https://evil.example.com"},
            timeout=10,
        )
        assert blocked.status_code == 403
        # Memory: the CLI and one uvicorn worker only; MLflow's GenAI job runner (seven more processes, ~1.3 GB)
        # would not fit a 512 MB instance.
        tree = subprocess.run(["pgrep", "-f", "--", f"--port {port}"], capture_output=True, text=True).stdout.split()
        assert len(tree) == 2, subprocess.run(["ps", "-ef"], capture_output=True, text=True).stdout[-3000:]
        jobs = subprocess.run(["pgrep", "-f", "mlflow.server.jobs"], capture_output=True, text=True).stdout.split()
        assert not set(jobs) & set(_descendants(proc.pid)), "the job runner was started"
    finally:
        _stop(proc)
    assert proc.poll() is not None


def _descendants(pid: int) -> list[str]:
    out, todo = [], [str(pid)]
    while todo:
        children = subprocess.run(["pgrep", "-P", todo.pop()], capture_output=True, text=True).stdout.split()
        out += children
        todo += children
    return out
