"""Read-only access to the MLflow model registry and run artifacts, cached for fast pages.

mlflow is imported lazily: only the Model page needs it, and importing it costs about a second and ~100 MB,
which would otherwise delay the first (form) page.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from ui.settings import load

_TTL_S = load().cache_ttl_s
ARTIFACT_TTL_S = 3600  # run artifacts never change once logged


class RegistryError(Exception):
    """The registry could not be read (down, unreachable, misconfigured)."""


class ModelNotFound(RegistryError):
    """The registry is reachable but holds no model of that name."""


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    load().apply_mlflow_defaults()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _guard(what: str, exc: Exception) -> RegistryError:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return ModelNotFound(what)
    return RegistryError(f"{what}: {type(exc).__name__}")


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def versions(uri: str, name: str) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first, each with its aliases and tags."""
    try:
        client = _client(uri)
        model = client.get_registered_model(name)
        found = client.search_model_versions(f"name='{name}'")
    except Exception as exc:  # noqa: BLE001 - any backend failure (HTTP, SQL, auth) is "registry unreachable"
        raise _guard(f"reading model {name}", exc) from exc
    # search_model_versions leaves .aliases empty on some stores; the registered model has the mapping.
    by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    out = [
        {
            "version": str(v.version),
            "aliases": sorted(by_version.get(str(v.version), [])),
            "created_ms": int(v.creation_timestamp or 0),
            "status": str(v.status),
            "run_id": v.run_id,
            "tags": dict(v.tags or {}),
        }
        for v in found
    ]
    return sorted(out, key=lambda v: int(v["version"]) if v["version"].isdigit() else 0, reverse=True)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def run_data(uri: str, run_id: str) -> dict[str, Any]:
    """A run's metrics and params (held-out metrics are logged as test_*, recomputed baselines as baseline_*)."""
    try:
        run = _client(uri).get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - see versions()
        raise _guard(f"reading run {run_id}", exc) from exc
    return {"metrics": dict(run.data.metrics), "params": dict(run.data.params)}


@st.cache_data(ttl=ARTIFACT_TTL_S, show_spinner=False, max_entries=64)
def run_artifact(uri: str, run_id: str, path: str) -> bytes | None:
    """A run artifact's bytes, or None when the run has no such artifact (older or foreign runs)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = _client(uri).download_artifacts(run_id, path, tmp)
            return Path(local).read_bytes()
    except OSError:
        return None
    except Exception as exc:  # noqa: BLE001 - a missing artifact raises MlflowException on some stores
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException) and exc.error_code in (
            "RESOURCE_DOES_NOT_EXIST",
            "INVALID_PARAMETER_VALUE",
        ):
            return None
        raise _guard(f"downloading {path}", exc) from exc


@st.cache_data(ttl=ARTIFACT_TTL_S, show_spinner=False, max_entries=32)
def model_spec(uri: str, name: str, version: str) -> dict[str, Any] | None:
    """The spec stored inside a registered version (features, bands, metrics, published baselines), read as a
    file (the pyfunc artifact ``model.json``) so the model itself is never loaded; None if absent."""
    doc = model_document(uri, name, version)
    spec = doc.get("spec") if isinstance(doc, dict) else None
    return spec if isinstance(spec, dict) else None


@st.cache_data(ttl=ARTIFACT_TTL_S, show_spinner=False, max_entries=32)
def model_document(uri: str, name: str, version: str) -> dict[str, Any] | None:
    """A registered version's whole ``model.json`` (spec, parameters, reference distributions); None if absent."""
    import json

    try:
        import mlflow

        # Resolve the storage location with our own client: `models:/name/version` URIs are resolved against
        # MLflow's *global* registry URI, whatever registry_uri is passed, so they could read another registry.
        base = _client(uri).get_model_version_download_uri(name, version)
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{base.rstrip('/')}/artifacts/model.json", dst_path=tmp, tracking_uri=uri
            )
            doc = json.loads(Path(local).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - an older or foreign model layout: the page falls back to /model/info
        return None
    return doc if isinstance(doc, dict) else None
