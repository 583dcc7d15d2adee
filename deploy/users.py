"""MLflow server users: the service users (created at every start of the server) and data scientists' users.

    python -m deploy.users add NAME [--manage]   create a data scientist's user; prints its password once
    python -m deploy.users passwd NAME           give a user a new random password; prints it once

Both talk to the server's REST API (``MLFLOW_TRACKING_URI``, else ``http://$MLFLOW_TRACKING_HOSTPORT``) as an
admin: ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (the admin user, ``admin`` unless
``MLFLOW_AUTH_ADMIN_USERNAME`` says otherwise, with ``MLFLOW_AUTH_ADMIN_PASSWORD``). The password is printed
alone on the last line and stored nowhere else (MLflow keeps only its hash).

Service users (the server has ``default_permission = NO_PERMISSIONS``, so a user sees only what is granted):

| user              | password from (MLflow service env) | grants                                              |
|-------------------|------------------------------------|-----------------------------------------------------|
| diabetes-api      | MLFLOW_API_PASSWORD                | READ on ``$MODEL_NAME`` and its versions' files;    |
|                   |                                    | runs DENY                                           |
| diabetes-app      | MLFLOW_APP_PASSWORD                | READ on ``$MODEL_NAME`` and on experiments (runs)   |
| diabetes-trainer  | MLFLOW_TRAINER_PASSWORD            | MANAGE on ``$MODEL_NAME``, EDIT on experiments      |
| diabetes-monitor  | MLFLOW_MONITOR_PASSWORD            | READ on ``$MODEL_NAME`` and its versions' files;    |
|                   |                                    | EDIT on the monitoring experiment only (its runs)   |

The monitoring experiment (``common.settings.MONITORING_EXPERIMENT``) is created by the admin while provisioning,
so the monitor's user is granted EDIT on that one experiment and can write runs nowhere else.

The trainer is the first-deploy bootstrap's credential. It is armed (created, or its password reset to
``MLFLOW_TRAINER_PASSWORD``) only while ``$MODEL_NAME`` has no ``@champion``; once one exists it is disarmed
(random password nobody knows), and bootstrap disarms it itself right after registering the first champion.
So the API process, which inherits bootstrap's environment, holds a dead credential.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import requests

from common.settings import MONITORING_EXPERIMENT

API_USER, APP_USER, TRAINER_USER = "diabetes-api", "diabetes-app", "diabetes-trainer"
MONITOR_USER = "diabetes-monitor"
EXPERIMENT, REGISTERED_MODEL, RUN = "experiment", "registered_model", "run"
TIMEOUT_S = 15


class UsersError(RuntimeError):
    """The MLflow server refused or failed a user operation; the message says which and why."""


@dataclass(frozen=True)
class Grant:
    resource_type: str
    resource_id: str
    permission: str


@dataclass
class Server:
    """The auth REST API of one MLflow server, called as one user."""

    base_url: str
    username: str
    password: str

    def call(self, method: str, path: str, payload: dict | None = None, ok: tuple[int, ...] = (200,)) -> dict:
        kwargs = {"params": payload} if method == "GET" else {"json": payload}
        response = requests.request(
            method, self.base_url.rstrip("/") + path, auth=(self.username, self.password), timeout=TIMEOUT_S, **kwargs
        )
        if response.status_code not in ok:
            raise UsersError(f"{method} {path} answered {response.status_code}: {_message(response)}")
        return response.json() if response.content else {}

    def user_exists(self, username: str) -> bool:
        try:
            self.call("GET", "/api/2.0/mlflow/users/get", {"username": username})
            return True
        except UsersError as exc:
            if " 404:" in str(exc):
                return False
            raise

    def create_user(self, username: str, password: str) -> None:
        self.call("POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password})

    def set_password(self, username: str, password: str) -> None:
        body = {"username": username, "password": password}
        if username == self.username:  # MLflow asks a user changing their own password for the current one
            body["current_password"] = self.password
        self.call("PATCH", "/api/2.0/mlflow/users/update-password", body)

    def grant(self, username: str, grant: Grant) -> None:
        """Set the user's permission on the resource to exactly ``grant.permission`` (idempotent)."""
        body = {"username": username, "resource_type": grant.resource_type, "resource_id": grant.resource_id}
        try:
            self.call("POST", "/api/3.0/mlflow/users/permissions/grant", body | {"permission": grant.permission})
        except UsersError as exc:
            if "already exists" not in str(exc):
                raise
            self.call("POST", "/api/3.0/mlflow/users/permissions/revoke", body)
            self.call("POST", "/api/3.0/mlflow/users/permissions/grant", body | {"permission": grant.permission})

    def experiment_id(self, name: str) -> str:
        """The id of the experiment ``name``, created (default artifact location) when it does not exist yet."""
        try:
            found = self.call("GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except UsersError as exc:
            if " 404:" not in str(exc):
                raise
        return str(self.call("POST", "/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"])

    def has_alias(self, model_name: str, alias: str) -> bool:
        try:
            self.call("GET", "/api/2.0/mlflow/registered-models/alias", {"name": model_name, "alias": alias})
            return True
        except UsersError as exc:
            if " 404:" in str(exc):
                return False
            raise


def _message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", ""))[:300]
    except ValueError:
        return response.text[:300]


def service_grants(model_name: str, monitoring_experiment_id: str = "") -> dict[str, list[Grant]]:
    # MLflow judges a model version's files (proxied artifacts under <experiment>/models/<id>/) by READ on the
    # experiment, so the readers need it; the API's user is then denied every run (metrics, params, dataset
    # profiles, run artifacts), leaving it the registered model and its versions' files. The app shows run
    # metrics and plots on its model page, so it keeps READ on runs.
    reader = [Grant(REGISTERED_MODEL, model_name, "READ"), Grant(EXPERIMENT, "*", "READ")]
    return {
        API_USER: [*reader, Grant(RUN, "*", "DENY")],
        APP_USER: reader,
        TRAINER_USER: [Grant(REGISTERED_MODEL, model_name, "MANAGE"), Grant(EXPERIMENT, "*", "EDIT")],
        # Reads the model's reference distributions; writes runs into the monitoring experiment only.
        MONITOR_USER: [*reader, Grant(EXPERIMENT, monitoring_experiment_id, "EDIT")],
    }


def scientist_grants(model_name: str, manage: bool) -> list[Grant]:
    grants = [Grant(EXPERIMENT, "*", "EDIT"), Grant(REGISTERED_MODEL, "*", "EDIT")]
    return grants + [Grant(REGISTERED_MODEL, model_name, "MANAGE")] if manage else grants


def ensure_user(server: Server, username: str, password: str, grants: list[Grant]) -> None:
    if server.user_exists(username):
        server.set_password(username, password)
    else:
        server.create_user(username, password)
    for grant in grants:
        server.grant(username, grant)


def provision(env: Mapping[str, str], base_url: str) -> list[str]:
    """Create or update every service user whose password is configured; returns what was done."""
    admin = Server(base_url, env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin", env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    model_name = env.get("MODEL_NAME") or "diabetes-t2"
    monitoring = admin.experiment_id(MONITORING_EXPERIMENT) if env.get("MLFLOW_MONITOR_PASSWORD") else ""
    grants = service_grants(model_name, monitoring)
    done = []
    for username, variable in ((API_USER, "MLFLOW_API_PASSWORD"), (APP_USER, "MLFLOW_APP_PASSWORD"),
                               (MONITOR_USER, "MLFLOW_MONITOR_PASSWORD")):  # fmt: skip
        if env.get(variable):
            ensure_user(admin, username, env[variable], grants[username])
            done.append(f"{username}: ready")
    if env.get("MLFLOW_TRAINER_PASSWORD"):
        if admin.has_alias(model_name, "champion"):
            if admin.user_exists(TRAINER_USER):
                admin.set_password(TRAINER_USER, secrets.token_urlsafe(32))
            done.append(f"{TRAINER_USER}: disarmed ({model_name}@champion exists)")
        else:
            ensure_user(admin, TRAINER_USER, env["MLFLOW_TRAINER_PASSWORD"], grants[TRAINER_USER])
            done.append(f"{TRAINER_USER}: armed until {model_name}@champion exists")
    return done


def disarm_own_password(base_url: str, username: str, password: str) -> None:
    """Replace the caller's own password with a random one that is thrown away (MLflow lets a user change
    their own password). Used by bootstrap once its one job is done."""
    Server(base_url, username, password).set_password(username, secrets.token_urlsafe(32))


def wait_ready(base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise UsersError(f"the MLflow server did not answer /health within {timeout_s:g}s")
        time.sleep(0.5)


def provision_in_background(env: Mapping[str, str], base_url: str, server_pid: int) -> None:
    """Fork a short-lived process that provisions the users once the server answers. It is detached (double
    fork) so the server never has to reap it. If provisioning fails it stops the server: a deploy whose
    services cannot log in must fail visibly, not look healthy."""
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    if os.fork():
        os._exit(0)
    code = 0
    try:
        wait_ready(base_url, float(env.get("MLFLOW_USERS_TIMEOUT_S") or 180))
        for line in provision(env, base_url):
            print(f"deploy.users: {line}", file=sys.stderr, flush=True)
    except Exception as exc:  # noqa: BLE001 - any failure must stop the server, with the reason in its log
        print(f"deploy.users: provisioning failed, stopping the server: {exc}", file=sys.stderr, flush=True)
        try:
            os.kill(server_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        code = 1
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    from common.backend import tracking_uri

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create a data scientist's user (EDIT on experiments and registered models)")
    add.add_argument("name")
    add.add_argument("--manage", action="store_true", help="also MANAGE on $MODEL_NAME (may move its aliases)")
    passwd = sub.add_parser("passwd", help="give a user a new random password")
    passwd.add_argument("name")
    args = parser.parse_args(argv)
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        parser.error("MLFLOW_TRACKING_URI must be the MLflow server's URL (http://... or https://...)")
    username, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not username or not password:
        parser.error("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an admin user of the server")
    admin = Server(uri, username, password)
    new_password = secrets.token_urlsafe(24)
    try:
        if args.command == "add":
            if admin.user_exists(args.name):
                print(f"error: user {args.name!r} already exists (use passwd to reset its password)", file=sys.stderr)
                return 2
            admin.create_user(args.name, new_password)
            grants = scientist_grants(os.environ.get("MODEL_NAME") or "diabetes-t2", args.manage)
            for grant in grants:
                admin.grant(args.name, grant)
            print(f"created {args.name}: " + ", ".join(f"{g.permission} on {g.resource_type} {g.resource_id}"
                                                      for g in grants))  # fmt: skip
        else:
            admin.set_password(args.name, new_password)
            print(f"new password for {args.name}")
    except (UsersError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(new_password)
    return 0


if __name__ == "__main__":
    sys.exit(main())
