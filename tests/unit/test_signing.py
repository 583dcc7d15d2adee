"""Signed model versions (common.signing): what verifies, what is refused and why; and the synthetic input example."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from common import signing
from pipeline import synthetic
from pipeline.config import load_config
from tests.conftest import ROOT

KEY = b"k" * 32


def model_dir(root: Path) -> Path:
    (root / "artifacts").mkdir(parents=True)
    (root / "MLmodel").write_text("python_function: {}\n")
    (root / "risk_model.py").write_text("class RiskModel: pass\n")
    (root / "artifacts" / "model.json").write_text('{"spec": {}}')
    return root


def signed(tmp_path: Path, verdict: str = "passed") -> tuple[Path, dict[str, str]]:
    path = model_dir(tmp_path / "m")
    return path, signing.signature_tags(KEY, "diabetes-t2", "3", path, verdict)


def test_a_signed_version_verifies(tmp_path: Path) -> None:
    path, tags = signed(tmp_path)
    signing.verify(KEY, "diabetes-t2", "3", tags, path)
    manual_path, manual = signed(tmp_path / "b", "manual")
    signing.verify(KEY, "diabetes-t2", "3", manual, manual_path)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda p, t: (p / "risk_model.py").write_text("import os\nos.system('touch /tmp/x')\n"), "files differ"),
        (lambda p, t: (p / "artifacts" / "extra.py").write_text("x = 1\n"), "files differ"),
        (lambda p, t: (p / "artifacts" / "model.json").unlink(), "files differ"),
        (lambda p, t: (p / "artifacts" / "model.json").rename(p / "artifacts" / "model2.json"), "files differ"),
        (lambda p, t: t.update({signing.TAG_VERDICT: "manual"}), "invalid signature"),
        (lambda p, t: t.update({signing.TAG_DIGEST: "0" * 64}), "invalid signature"),
        (lambda p, t: t.pop(signing.TAG_HMAC), "not signed"),
        (lambda p, t: t.clear(), "not signed"),
    ],
    ids=["code", "added-file", "removed-file", "renamed-file", "verdict", "digest", "no-hmac", "no-tags"],
)
def test_tampering_is_refused(tmp_path: Path, tamper, reason: str) -> None:
    path, tags = signed(tmp_path)
    tamper(path, tags)
    with pytest.raises(signing.UntrustedModel, match=reason):
        signing.verify(KEY, "diabetes-t2", "3", tags, path)


def test_signature_is_bound_to_name_version_and_key(tmp_path: Path) -> None:
    path, tags = signed(tmp_path)
    for name, version, key in (("diabetes-t2", "4", KEY), ("other", "3", KEY), ("diabetes-t2", "3", b"x" * 32)):
        with pytest.raises(signing.UntrustedModel, match="invalid signature"):
            signing.verify(key, name, version, tags, path)


def test_a_failed_gate_is_refused_even_when_signed(tmp_path: Path) -> None:
    path, tags = signed(tmp_path, "failed")
    with pytest.raises(signing.UntrustedModel, match="did not pass the gate"):
        signing.verify(KEY, "diabetes-t2", "3", tags, path)


def test_symlinks_are_refused(tmp_path: Path) -> None:
    path, tags = signed(tmp_path)
    (path / "link.py").symlink_to("/etc/passwd")
    with pytest.raises(signing.UntrustedModel, match="symbolic link"):
        signing.verify(KEY, "diabetes-t2", "3", tags, path)


def test_bytecode_is_outside_the_digest_and_removed_before_import(tmp_path: Path) -> None:
    path, tags = signed(tmp_path)
    cache = path / "__pycache__"
    cache.mkdir()
    (cache / "risk_model.cpython-311.pyc").write_bytes(b"planted bytecode")
    meta = {"name": "diabetes-t2", "version": "3", "tags": tags}
    signing.check_before_import(meta, path, {"MODEL_SIGNING_KEY": KEY.decode()})
    assert not cache.exists(), "a planted bytecode cache would be imported instead of the verified source"


def test_without_a_key_signing_is_off_and_says_so(tmp_path: Path) -> None:
    path = model_dir(tmp_path / "m")
    signing.check_before_import({"name": "n", "version": "1", "tags": {}}, path, {})  # no key: nothing checked
    with pytest.raises(signing.UntrustedModel, match="not signed"):
        signing.check_before_import({"name": "n", "version": "1", "tags": {}}, path, {"MODEL_SIGNING_KEY": "s" * 32})
    off, on = signing.status({}), signing.status({"MODEL_SIGNING_KEY": "secret-value-1234"})
    assert off["enabled"] is False and "MODEL_SIGNING_KEY is not set" in off["detail"]
    assert on["enabled"] is True and "secret-value-1234" not in str(on)


def test_input_example_is_synthetic_and_inside_the_declared_ranges() -> None:
    config = load_config(ROOT / "data" / "pima" / "dataset.yaml")
    example = synthetic.input_example(config)
    assert list(example.columns) == [f.name for f in config.features] and len(example) == 3
    for f in config.features:
        assert example[f.name].between(f.min, f.max).all(), f.name
        if f.integer:
            assert (example[f.name] % 1 == 0).all(), f.name
    # No row of the bundled training or test data (real people) appears in it.
    real = pd.concat([pd.read_csv(ROOT / "data" / "pima" / name) for name in ("pima_tr.csv", "pima_te.csv")])
    columns = {f.name: f.column for f in config.features}
    real = real[[columns[n] for n in example.columns]].set_axis(list(example.columns), axis=1).astype(float)
    assert example.astype(float).merge(real, how="inner").empty
