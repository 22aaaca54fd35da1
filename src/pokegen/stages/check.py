"""Stage check: params.yaml is valid and each listed model's plugin code is fingerprinted.

dvc.yaml marks it always_changed, so it runs first on every `dvc repro`, `dvc exp run` and
pipeline run, even when nothing else changed: a typo anywhere in params.yaml stops the run
before any other stage starts. Its outputs are stable, so nothing downstream re-runs unless
a plugin's fingerprint changed (a pip upgrade, or an edit to an editable install).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pokegen
from pokegen.fileio import write_bytes_atomic, write_folder_atomic
from pokegen.layout import Layout
from pokegen.params import load_params, model_specs
from pokegen.registry import code_fingerprint, hash_code

log = logging.getLogger(__name__)

CHECKED = {"params": "params.yaml", "valid": True}  # the same bytes every run: download depends on it


def run_check(layout: Layout) -> dict[str, dict[str, str]]:
    """Validate params.yaml and write checks/params.json and checks/plugins/NAME.json; return the fingerprints.

    The listed models' settings are checked against their plugins (which imports them, and torch)
    only when params.yaml, a plugin or pokegen changed since the last success here, so a no-op
    run stays fast. Raises ParamsError naming every bad key; then nothing is written.
    """
    params = load_params(layout.params, check_models=False)  # every core section and model name; no plugin import
    fingerprints = {name: code_fingerprint(name) for name in params.pipeline.models}
    key = hashlib.sha256(
        json.dumps(
            {"params": hashlib.sha256(layout.params.read_bytes()).hexdigest(), "plugins": fingerprints, "pokegen": hash_code(Path(pokegen.__file__).parent)},
            sort_keys=True,
        ).encode()
    ).hexdigest()
    stamp = layout.check_stamp
    if not (stamp.is_file() and stamp.read_text() == key):
        model_specs(params, str(layout.params))
        write_bytes_atomic(stamp, key.encode())
    files = {"params.json": _json(CHECKED), **{f"plugins/{name}.json": _json(record) for name, record in fingerprints.items()}}
    write_folder_atomic(layout.checks_dir, files)
    log.info("check: %s is valid; plugins %s", layout.params.name, ", ".join(f"{r['model']} {r['distribution']} {r['version']}" for r in fingerprints.values()) or "none")
    return fingerprints


def _json(payload: dict) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
