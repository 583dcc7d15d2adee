"""The served model: resolve ``<name>@<alias>`` in the registry, keep a local copy, load it, hot-swap it.

Layout of the cache (``MODEL_CACHE_DIR``)::

    <cache>/<name>/<version>/model/...          the downloaded MLflow model
    <cache>/<name>/<version>/serving-meta.json  name, version, run id, creation time
    <cache>/<name>/@<alias>.json                the last version this alias was seen pointing at

Everything is written to a temporary name and renamed, so a crash or two workers racing never leave
a half-written copy that a later start would trust.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow

from common.backend import redact
from serving import mlflow_adapter
from serving.settings import Settings

log = logging.getLogger("serving.model")

META_FILE = "serving-meta.json"


class RegistryTimeout(RuntimeError):
    """The registry did not answer within REGISTRY_TIMEOUT_S."""


@dataclass(frozen=True)
class ServedModel:
    """One loaded version. Immutable: a swap replaces the whole object, so a request that took a
    reference keeps a consistent model until it finishes."""

    name: str
    version: str
    alias: str
    run_id: str
    created_at: str
    source: str  # "registry" (confirmed by the registry) or "cache" (registry not reachable at load)
    path: Path
    pyfunc: Any
    risk: Any  # the RiskModel (pipeline/risk_model.py as stored inside the model)
    signature: dict[str, Any]
    names: list[str]
    index: dict[str, int]
    categories: dict[int, dict[str, float]]  # column index -> category -> code
    loaded_at: float = field(default_factory=time.time)
    # What the API derives from this version (validator, /model/info, OpenAPI), built by the swap listeners
    # BEFORE the version is made current, so a request never sees a model without them.
    prepared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def spec(self) -> dict[str, Any]:
        return self.risk.spec


def _signature_dict(pyfunc: Any) -> dict[str, Any]:
    sig = pyfunc.metadata.signature
    if sig is None:
        return {}
    # MLflow stores each part as a JSON string; the UI wants real JSON.
    return {k: json.loads(v) if isinstance(v, str) else v for k, v in sig.to_dict().items()}


def load_local(path: Path, meta: dict[str, Any], source: str) -> ServedModel:
    """Load a model from a local directory (no registry access, no `models:/` resolution)."""
    # suppress_warnings skips MLflow's pip-requirement comparison (0.7 s and a map of every installed
    # package at each start); the serving image pins the same versions the model was trained with.
    pyfunc = mlflow.pyfunc.load_model(str(path), suppress_warnings=True)
    risk = pyfunc.unwrap_python_model()
    names = list(risk.names)
    cats = {names.index(n): dict(m) for n, m in risk.categories.items()}
    return ServedModel(
        name=meta["name"],
        version=str(meta["version"]),
        alias=meta["alias"],
        run_id=meta.get("run_id") or "",
        created_at=meta.get("created_at") or "",
        source=source,
        path=path,
        pyfunc=pyfunc,
        risk=risk,
        signature=_signature_dict(pyfunc),
        names=names,
        index={n: i for i, n in enumerate(names)},
        categories=cats,
    )


def _atomic_write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


class _Bounded:
    """Registry calls in a helper thread, so a hung database or server cannot hang the caller; at most one
    pending call per process: while one is still stuck, the next check fails at once instead of leaving one
    more stuck thread behind every check."""

    def __init__(self) -> None:
        self.pending: threading.Thread | None = None

    def __call__(self, fn: Any, timeout: float) -> Any:
        if self.pending is not None and self.pending.is_alive():
            raise RegistryTimeout("an earlier registry call has not returned yet")
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
                box["error"] = exc

        t = threading.Thread(target=run, name="registry-call", daemon=True)
        self.pending = t
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise RegistryTimeout(f"registry did not answer within {timeout:g}s")
        if "error" in box:
            raise box["error"]
        return box["value"]


def _reason(exc: BaseException) -> str:
    """Exception type and the first line of its message (database errors run to a dozen lines)."""
    first = str(exc).strip().split("\n", 1)[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class ModelStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.current: ServedModel | None = None
        self.registry_reachable = False
        self.registry_version: str | None = None  # what the alias pointed at on the last successful check
        self.last_check: float | None = None
        self.started = time.time()
        self._lock = threading.Lock()  # one load/swap at a time within a process
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._listeners: list[Any] = []
        self._client: Any = None
        # Why the service is not fully ok although a model is served (e.g. the alias's version failed to load);
        # cleared when the alias's version is served again.
        self.problem: str | None = None
        self._failed: dict[tuple[str, str], float] = {}  # (version, run id) -> when it last failed to load
        self._call = _Bounded()
        self._pid = os.getpid()
        # MLflow retries a down database for ~100 s inside one call and logs a long traceback per failure:
        # calls are bounded here and retried by the watcher, and each failed check is logged in one line.
        mlflow_adapter.bound_database_retries()
        mlflow_adapter.quiet_database_errors()

    # ---- paths ---------------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.settings.cache_dir / self.settings.model_name.replace("/", "_")

    def _pointer(self) -> Path:
        return self.model_dir / f"@{self.settings.model_alias}.json"

    # ---- registry ------------------------------------------------------------------------------------
    def client(self) -> Any:
        """The registry half of MlflowClient only. MlflowClient also builds a tracking store, which for a
        database backend costs ~1 s and ~50 MB at start-up and is not needed to follow an alias (downloading
        a new version still goes through MLflow's public `models:/` artifact resolution)."""
        if self._client is None:
            uri = self.settings.tracking_uri
            mlflow.set_tracking_uri(uri)
            self._client = mlflow_adapter.registry_client(uri)
        return self._client

    def resolve(self) -> dict[str, Any]:
        """The alias's current version as cache metadata; raises when the registry cannot say."""

        def call() -> dict[str, Any]:
            mv = self.client().get_model_version_by_alias(self.settings.model_name, self.settings.model_alias)
            created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
            return {
                "name": mv.name,
                "version": str(mv.version),
                "alias": self.settings.model_alias,
                "run_id": mv.run_id or "",
                "created_at": created,
            }

        try:
            meta = self._call(call, self.settings.registry_timeout_s)
        except Exception:
            self.registry_reachable = False
            raise
        finally:
            self.last_check = time.time()
        self.registry_reachable = True
        self.registry_version = meta["version"]
        return meta

    def ensure_cached(self, meta: dict[str, Any]) -> Path:
        """Download the version once into the cache; return the local model directory."""
        final = self.model_dir / meta["version"]
        if (final / META_FILE).exists():
            cached = json.loads((final / META_FILE).read_text(encoding="utf-8"))
            if cached.get("run_id") == meta["run_id"]:
                return final / "model"
            # Same name and version from another registry (e.g. a recreated one): never serve the stale copy.
            shutil.rmtree(final, ignore_errors=True)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.model_dir, prefix=f".dl-{meta['version']}-"))
        try:
            uri = f"models:/{meta['name']}/{meta['version']}"
            self._call(
                lambda: mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp / "model")),
                max(60.0, self.settings.registry_timeout_s),
            )
            (tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / META_FILE).exists():  # another worker won the race only if its copy is complete
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final / "model"

    def cached_meta(self) -> dict[str, Any] | None:
        try:
            version = json.loads(self._pointer().read_text(encoding="utf-8"))["version"]
            return json.loads((self.model_dir / str(version) / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError):
            return None

    # ---- loading -------------------------------------------------------------------------------------
    def on_swap(self, fn: Any) -> None:
        self._listeners.append(fn)

    def _activate(self, model: ServedModel) -> None:
        """Prepare everything the listeners derive from ``model``, THEN make it current. A listener that
        raises leaves the old model serving (the caller records why)."""
        for fn in self._listeners:
            fn(model)
        old = self.current
        self.current = model  # one reference assignment: requests see the old or the new model, never a mix
        if old is None or old.version != model.version:
            log.info("serving %s version %s (%s)", model.name, model.version, model.source)

    def _load(self, meta: dict[str, Any]) -> None:
        """Download (once), load and prepare the alias's version; on success it is served and remembered."""
        path = self.ensure_cached(meta)
        self._activate(load_local(path, meta, source="registry"))
        _atomic_write_json(self._pointer(), {"version": meta["version"]})  # only a version that served
        self._failed.pop((meta["version"], meta["run_id"]), None)
        self.problem = None

    def _failure(self, meta: dict[str, Any], exc: BaseException) -> None:
        """A version that cannot be served: log it (type and message; load errors hold no request data),
        keep what is served, and say so in /health."""
        self._failed[(meta["version"], meta["run_id"])] = time.time()
        cur = self.current
        keeping = f"still serving version {cur.version}" if cur is not None else "no model is served"
        self.problem = f"version {meta['version']} could not be loaded ({type(exc).__name__}); {keeping}"
        log.error(
            "loading %s version %s failed (%s: %s); %s",
            meta["name"],
            meta["version"],
            type(exc).__name__,
            str(exc)[:300],
            keeping,
        )

    def _retry_after(self) -> float:
        return max(60.0, 10 * self.settings.reload_interval_s)

    def load_initial(self) -> None:
        """Registry first; if it cannot answer, or its version cannot be served, the last good local copy."""
        s = self.settings
        log.info("registry %s, model %s@%s", redact(s.tracking_uri), s.model_name, s.model_alias)
        with self._lock:
            meta: dict[str, Any] | None = None
            try:
                meta = self.resolve()
            except Exception as exc:  # noqa: BLE001 - any registry failure falls back to the cache
                log.warning("registry load failed (%s); trying the local copy", type(exc).__name__)
            if meta is not None:
                try:
                    self._load(meta)
                    return
                except Exception as exc:  # noqa: BLE001 - a bad version falls back to the last good copy
                    self._failure(meta, exc)
            cached = self.cached_meta()
            if cached is None or (meta is not None and (cached["version"], cached.get("run_id")) in self._failed):
                log.error("no usable local copy in %s: not serving until the registry answers", self.model_dir)
                return
            try:
                self._activate(load_local(self.model_dir / cached["version"] / "model", cached, source="cache"))
            except Exception as exc:  # noqa: BLE001 - a broken copy leaves the service "down", not crashed
                log.error("local copy of version %s failed to load (%s)", cached["version"], type(exc).__name__)
                return
            if meta is not None:
                self.problem = (
                    f"version {meta['version']} could not be loaded; serving the local copy of version "
                    f"{cached['version']}"
                )

    def check_once(self) -> None:
        """One watcher tick: follow the alias; swap when it moved; mark a cached model as confirmed. Nothing
        here may take the served model down: a version that fails to download, load or prepare is logged,
        reported in /health and retried later, while the current one keeps serving."""
        try:
            meta = self.resolve()
        except Exception as exc:  # noqa: BLE001 - unreachable registry: keep serving what we have
            log.warning("registry check failed (%s)", _reason(exc))
            return
        with self._lock:
            cur = self.current
            if cur is not None and cur.version == meta["version"] and cur.run_id in ("", meta["run_id"]):
                if cur.source != "registry":
                    try:
                        self._activate(_replace_source(cur, "registry"))
                    except Exception as exc:  # noqa: BLE001 - keep the cached copy serving
                        self._failure(meta, exc)
                        return
                self.problem = None
                return
            failed_at = self._failed.get((meta["version"], meta["run_id"]))
            if failed_at is not None and time.time() - failed_at < self._retry_after():
                return  # already reported; retried later (a transient download error may clear)
            try:
                self._load(meta)
            except Exception as exc:  # noqa: BLE001 - a bad new version must never take the old one down
                self._failure(meta, exc)

    def start_watcher(self) -> None:
        interval = self.settings.reload_interval_s
        if interval <= 0 or self._watcher is not None:
            return
        self._stop.clear()

        def loop() -> None:
            # A model that failed to load at start is retried sooner than a healthy one is re-checked.
            while not self._stop.wait(interval if self.current is not None else min(interval, 2.0)):
                try:
                    self.check_once()
                except Exception:  # noqa: BLE001 - the watcher must survive anything
                    log.exception("model watcher tick failed")

        self._watcher = threading.Thread(target=loop, name="model-watcher", daemon=True)
        self._watcher.start()

    def stop_watcher(self) -> None:
        self._stop.set()

    def after_fork(self) -> None:
        """In a freshly forked worker (a no-op in the process that made the store): drop the database
        connections and locks inherited from the master (see ``mlflow_adapter.reset_after_fork``), the
        master's registry client and its pending call, and forget the master's threads."""
        if os.getpid() == self._pid:
            return
        self._pid = os.getpid()
        mlflow_adapter.reset_after_fork()
        self._client = None
        self._call = _Bounded()
        self._watcher = None
        self._lock = threading.Lock()

    def health(self) -> dict[str, Any]:
        cur = self.current
        reason: str | None = None
        if cur is None:
            status = "down"
            reason = self.problem or "no model is loaded"
        elif self.registry_reachable and cur.source == "registry" and self.registry_version == cur.version:
            status = "ok"
        else:
            status = "degraded"
            if self.problem:
                reason = self.problem
            elif not self.registry_reachable:
                reason = f"registry not reachable; serving the local copy of version {cur.version}"
            elif self.registry_version != cur.version:
                reason = f"the alias points at version {self.registry_version}; serving version {cur.version}"
            else:
                reason = "serving the local copy; not yet confirmed by the registry"
        return {
            "status": status,
            "reason": reason,
            "model": {
                "name": self.settings.model_name,
                "version": cur.version if cur else None,
                "alias": self.settings.model_alias,
            },
            "registry_reachable": self.registry_reachable,
            "uptime_s": round(time.time() - self.started, 3),
        }


def _replace_source(model: ServedModel, source: str) -> ServedModel:
    from dataclasses import replace

    return replace(model, source=source, prepared={})  # /model/info shows the source: prepared again
