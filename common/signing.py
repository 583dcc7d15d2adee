"""Signed model versions: no path from the registry to code in the API.

A registered version is a folder of files, one of them Python (models-from-code ``risk_model.py``) that the
API imports. Anyone who can write to the registry could otherwise make the API run their code. So at
registration the trainer computes a SHA-256 digest over every file of the version (as downloaded from the
registry) and signs it with HMAC-SHA256 under ``MODEL_SIGNING_KEY``, a secret only training and the API hold.
The signature covers the registered model name, the version number, the digest and the gate verdict, and is
stored as version tags:

    signature.scheme   hmac-sha256-v1
    signature.digest   sha256 over the version's files (relative path, size and content of each)
    signature.verdict  passed (the gate passed) | failed | manual (promoted by hand with the promote command)
    signature.hmac     HMAC-SHA256(key, "scheme\\nname\\nversion\\ndigest\\nverdict")

The API imports a version only when the HMAC verifies, the files it downloaded have that digest, and the
verdict is ``passed`` or ``manual``. Copying the tags onto another version, editing the verdict or any file
breaks it. Without ``MODEL_SIGNING_KEY`` (local use on loopback) signing is off on both sides and the API's
/health says so.

Python writes ``__pycache__`` folders next to imported code; they are not part of the digest and are removed
before the model is imported, so only the verified source can run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEME = "hmac-sha256-v1"
TAG_SCHEME, TAG_DIGEST, TAG_VERDICT, TAG_HMAC = (
    "signature.scheme",
    "signature.digest",
    "signature.verdict",
    "signature.hmac",
)
SERVABLE_VERDICTS = ("passed", "manual")
KEY_VARIABLE = "MODEL_SIGNING_KEY"
_BYTECODE_DIR = "__pycache__"


class UntrustedModel(Exception):
    """A version that must not be imported; the message says why (it names no secret)."""


def signing_key(env: Mapping[str, str] | None = None) -> bytes | None:
    value = (os.environ if env is None else env).get(KEY_VARIABLE, "")
    return value.encode("utf-8") if value else None


def status(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What /health reports about signing (never the key)."""
    if signing_key(env):
        return {"enabled": True, "detail": "only signed versions whose gate passed (or promoted by hand) are loaded"}
    return {
        "enabled": False,
        "detail": f"{KEY_VARIABLE} is not set: model versions are loaded without signature checks (local use only)",
    }


def _files(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*")):
        if _BYTECODE_DIR in path.relative_to(root).parts:
            continue
        if path.is_symlink():
            raise UntrustedModel(f"the version contains a symbolic link ({path.relative_to(root).as_posix()})")
        if path.is_file():
            out.append(path)
    return out


def tree_digest(root: Path) -> str:
    """SHA-256 over every file under ``root``: its relative path, size and content, in a fixed order."""
    total = hashlib.sha256()
    for path in _files(root):
        content = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                content.update(block)
        total.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
        total.update(content.digest())
    return total.hexdigest()


def _mac(key: bytes, name: str, version: str, digest: str, verdict: str) -> str:
    message = "\n".join((SCHEME, name, str(version), digest, verdict)).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_tags(key: bytes, name: str, version: str, model_dir: Path, verdict: str) -> dict[str, str]:
    digest = tree_digest(model_dir)
    return {
        TAG_SCHEME: SCHEME,
        TAG_DIGEST: digest,
        TAG_VERDICT: verdict,
        TAG_HMAC: _mac(key, name, version, digest, verdict),
    }


def verify(key: bytes, name: str, version: str, tags: Mapping[str, str], model_dir: Path) -> None:
    """Raise UntrustedModel unless ``model_dir`` is exactly what was signed for this name and version and
    its verdict allows serving. Nothing in ``model_dir`` is imported or executed here."""
    if tags.get(TAG_SCHEME) != SCHEME or not tags.get(TAG_HMAC):
        raise UntrustedModel(f"version {version} is not signed")
    digest, verdict = tags.get(TAG_DIGEST, ""), tags.get(TAG_VERDICT, "")
    if not hmac.compare_digest(_mac(key, name, version, digest, verdict), tags[TAG_HMAC]):
        raise UntrustedModel(f"version {version} has an invalid signature (its tags were altered or copied)")
    if verdict not in SERVABLE_VERDICTS:
        raise UntrustedModel(f"version {version} did not pass the gate (verdict {verdict!r}) and was not promoted")
    if not hmac.compare_digest(tree_digest(model_dir), digest):
        raise UntrustedModel(f"version {version}'s files differ from the signed ones")


def check_before_import(meta: Mapping[str, Any], model_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """The API's gate, called before a version's code is imported: verify (when a key is set) and drop any
    bytecode cache so only the verified source can be imported."""
    key = signing_key(env)
    if key is not None:
        verify(key, str(meta["name"]), str(meta["version"]), meta.get("tags") or {}, model_dir)
    for cache in model_dir.rglob(_BYTECODE_DIR):
        shutil.rmtree(cache, ignore_errors=True)


def _download(name: str, version: str, dst: str) -> Path:
    import mlflow

    # The same URI the API downloads (MLflow adds a small `registered_model_meta` file for `models:/` URIs), so
    # both sides digest the same tree.
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=dst))


def sign_registered_version(client: Any, name: str, version: str, verdict: str, key: bytes | None = None) -> bool:
    """Download the version from the registry (as the API will), sign it and store the tags. Returns False,
    signing nothing, when no key is configured."""
    key = key if key is not None else signing_key()
    if key is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        tags = signature_tags(key, name, str(version), _download(name, str(version), tmp), verdict)
    for tag, value in tags.items():
        client.set_model_version_tag(name, str(version), tag, value)
    return True


def load_verified(client: Any, name: str, version: str) -> Any:
    """Load a registered version as a pyfunc in this process only after it passed ``check_before_import``
    (the trainer scores the champion with it, and the trainer holds the signing key)."""
    import mlflow

    tags = dict(client.get_model_version(name, str(version)).tags or {})
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(name, str(version), tmp)
        check_before_import({"name": name, "version": str(version), "tags": tags}, local)
        return mlflow.pyfunc.load_model(str(local))
