"""Memory of each Render service, started as render.yaml starts it (deploy.rehearse), after use.

    .venv/bin/python benchmarks/service_memory.py [--pg postgresql://postgres@127.0.0.1:5432/postgres] [--out PATH]
    .venv/bin/python benchmarks/service_memory.py --mlflow-auth   # diabetes-mlflow alone: auth on vs off

Creates a throwaway Postgres database, starts diabetes-mlflow, diabetes-api (which bootstraps a champion)
and diabetes-streamlit, exercises each one (API: 500 predictions; MLflow: UI page and registry searches;
Streamlit: every page in headless Chromium with a form submitted), then reads RSS and PSS of each service's
process tree from /proc (PSS is what a container's memory limit sees: shared pages counted once). Render's
starter instance has 512 MB. Writes JSON and prints a table. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from serving_benchmark import memory_mib  # noqa: E402

from deploy import rehearse  # noqa: E402

LIMIT_MB = 512


def wait(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not healthy within {timeout_s}s")


def exercise_app(url: str, features: list[dict], login: tuple[str, str]) -> None:
    """Log in, score one patient through the form, then open every page (in one headless Chromium each)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from deploy_helpers import CHROMIUM, CHROMIUM_ARGS, example_patient, log_in, probability_shown_by_app
    from playwright.sync_api import sync_playwright

    probability_shown_by_app(url, features, example_patient(features), login=login)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        log_in(page, login)
        page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"] a').first.wait_for(timeout=60_000)
        for link in page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"] a').all():
            link.click()
            page.wait_for_timeout(4000)
        browser.close()


def mlflow_auth(pg: str, out: Path) -> int:
    """diabetes-mlflow as render.yaml starts it (basic-auth on) against the same service with auth off (the
    blueprint without MLFLOW_AUTH_ADMIN_PASSWORD) in the same run: RSS/PSS after the UI page, registry searches
    and auth calls, each on a fresh database."""
    import yaml

    results: dict[str, dict] = {}
    for label, auth in (("auth_off", False), ("auth_on", True)):
        work = Path(tempfile.mkdtemp(prefix=f"mlflow-memory-{label}-"))
        blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
        if not auth:
            for svc in blueprint["services"]:
                svc["envVars"] = [v for v in svc.get("envVars", []) if v["key"] != "MLFLOW_AUTH_ADMIN_PASSWORD"]
                svc["envVars"].append({"key": "HOST", "value": "127.0.0.1"})  # the launcher's rule without auth
        path = work / "render.yaml"
        path.write_text(yaml.safe_dump(blueprint))
        db = f"bench_{uuid.uuid4().hex[:10]}"
        admin = psycopg2.connect(pg)
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{db}"')
        url = pg.rsplit("/", 1)[0] + f"/{db}"
        stack = rehearse.start(url.replace("postgresql://", "postgres://", 1), work, path, only={"diabetes-mlflow"})
        try:
            base = stack.url("diabetes-mlflow")
            wait(f"{base}/health", 300)
            creds = ("admin", stack.generated[("diabetes-mlflow", "MLFLOW_AUTH_ADMIN_PASSWORD")]) if auth else None
            if auth:  # the service users are provisioned just after the server answers
                deadline = time.monotonic() + 120
                while "diabetes-trainer" not in (work / "diabetes-mlflow.log").read_text(errors="replace"):
                    if time.monotonic() > deadline:
                        raise SystemExit("service users not provisioned within 120 s")
                    time.sleep(0.5)
                assert requests.get(f"{base}/api/2.0/mlflow/registered-models/search", timeout=10).status_code == 401
            results[label] = {"idle": memory_mib(stack.procs["diabetes-mlflow"].pid)}
            with requests.Session() as s:
                s.auth = creds
                s.get(base, timeout=10).raise_for_status()
                for _ in range(20):
                    s.get(f"{base}/api/2.0/mlflow/registered-models/search", timeout=10).raise_for_status()
                    s.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 5}, timeout=10)
                    if auth:
                        s.get(f"{base}/api/2.0/mlflow/users/get", params={"username": "diabetes-api"}, timeout=10)
            time.sleep(2)
            results[label]["after_use"] = memory_mib(stack.procs["diabetes-mlflow"].pid)
        finally:
            stack.stop()
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            admin.close()
    doc = {"limit_mb": LIMIT_MB, "service": "diabetes-mlflow", "note": "MiB; same run, fresh database each",
           "results": results}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print("| diabetes-mlflow | processes | RSS idle | PSS idle | RSS after use | PSS after use | PSS ≤ 512 MB |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, r in results.items():
        a, b = r["idle"], r["after_use"]
        ok = "yes" if b["pss_mib"] * 1.048576 <= LIMIT_MB else "**no**"
        cells = [label, b["processes"], a["rss_mib"], a["pss_mib"], b["rss_mib"], b["pss_mib"], ok]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", default="")
    parser.add_argument("--mlflow-auth", action="store_true", help="only diabetes-mlflow, with auth on and off")
    args = parser.parse_args()
    if args.mlflow_auth:
        return mlflow_auth(args.pg, Path(args.out or ROOT / "benchmarks" / "results" / "mlflow_auth_memory.json"))
    args.out = args.out or str(ROOT / "benchmarks" / "results" / "service_memory.json")

    db = f"bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(args.pg)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{db}"')
    url = args.pg.rsplit("/", 1)[0] + f"/{db}"
    work = Path(tempfile.mkdtemp(prefix="service-memory-"))
    # The app binds 0.0.0.0 there, so clinicians log in: one user in the app's database, which on Render is the
    # blueprint's Postgres (DATABASE_URL; render.yaml sets no APP_DATABASE_URL).
    from ui import users

    clinician = ("bench", "a long benchmark password")
    users.add(users.engine(url.replace("postgresql://", "postgresql+psycopg2://", 1)), *clinician)
    stack = rehearse.start(url.replace("postgresql://", "postgres://", 1), work)
    results: dict[str, dict] = {}
    try:
        for name, svc in stack.services.items():
            wait(stack.url(name, svc["healthCheckPath"]), 600)
        for name in stack.services:
            results[name] = {"idle": memory_mib(stack.procs[name].pid)}

        api = stack.url("diabetes-api")
        auth = {"Authorization": f"Bearer {stack.envs['diabetes-api']['API_SERVICE_KEY']}"}
        info = requests.get(f"{api}/model/info", headers=auth, timeout=10).json()
        patient = {f["name"]: (f["min"] + f["max"]) / 2 for f in info["features"]}
        for f in info["features"]:
            if f.get("integer"):
                patient[f["name"]] = round(patient[f["name"]])
        with requests.Session() as s:
            for _ in range(500):
                s.post(f"{api}/predict", json=[patient] * 10, headers=auth, timeout=10).raise_for_status()
        mlflow_url = stack.url("diabetes-mlflow")
        # The MLflow server has basic-auth (render.yaml): the UI and searches as its admin.
        creds = ("admin", stack.generated[("diabetes-mlflow", "MLFLOW_AUTH_ADMIN_PASSWORD")])
        requests.get(mlflow_url, auth=creds, timeout=10).raise_for_status()
        for _ in range(20):
            search = f"{mlflow_url}/api/2.0/mlflow/registered-models/search"
            requests.get(search, auth=creds, timeout=10).raise_for_status()
        exercise_app(stack.url("diabetes-streamlit"), info["features"], clinician)
        time.sleep(2)
        for name in stack.services:
            results[name]["after_use"] = memory_mib(stack.procs[name].pid)
    finally:
        stack.stop()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()

    out = {"limit_mb": LIMIT_MB, "note": "MiB; PSS counts shared pages once (what a container limit sees)",
           "services": results}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("| service | processes | RSS idle | PSS idle | RSS after use | PSS after use | PSS ≤ 512 MB |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        a, b = r["idle"], r["after_use"]
        ok = "yes" if b["pss_mib"] * 1.048576 <= LIMIT_MB else "**no**"
        cells = [name, b["processes"], a["rss_mib"], a["pss_mib"], b["rss_mib"], b["pss_mib"], ok]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
