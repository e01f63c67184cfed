"""The README's optuna-dashboard command, tried: the server is started on 127.0.0.1 against the
storage an `lfsearch study` wrote (its default SQLite file, and a journal file) and the study is
read back through the dashboard's HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lfsearch.experiments import study as study_mod

optuna = pytest.importorskip("optuna")

from test_study import load_study, stub  # noqa: E402,F401  (stub: a fixture)


def _dashboard_command() -> str:
    script = Path(sys.executable).parent / "optuna-dashboard"
    found = str(script) if script.is_file() else shutil.which("optuna-dashboard")
    if found is None:
        pytest.fail("optuna-dashboard is missing: it is a [test] dependency "
                    "(pip install -e '.[test]', or pip install optuna-dashboard)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _serve(storage_arg: str, log: Path):
    port = _free_port()
    proc = subprocess.Popen([_dashboard_command(), storage_arg, "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(f"{base}/api/meta")
            return proc, base
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"optuna-dashboard did not serve {storage_arg}: {log.read_text()}")
            time.sleep(0.3)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("journal", marks=pytest.mark.slow)])
def test_optuna_dashboard_serves_the_study_that_lfsearch_wrote(tmp_path, stub, kind):
    out = tmp_path / "study"
    if kind == "sqlite":  # the default storage: OUT/study.db
        summary = study_mod.run_study("cosface", trials=3, epochs=2, out=out)
        storage = f"sqlite:///{out / 'study.db'}"
        argument = storage  # README: optuna-dashboard sqlite:///OUT/study.db
    else:  # --storage journal:PATH; the dashboard takes the file's path itself
        storage = f"journal:{out / 'study.journal'}"
        summary = study_mod.run_study("cosface", trials=3, epochs=2, out=out, storage=storage)
        argument = str(out / "study.journal")
    assert summary["finished_trials"] == 3
    want = (load_study(f"sqlite:///{out / 'study.db'}") if kind == "sqlite"
            else optuna.load_study(study_name="cosface-digits",
                                   storage=study_mod.open_storage(storage)))
    proc, base = _serve(argument, tmp_path / "dashboard.log")
    try:
        studies = _get(f"{base}/api/studies")["study_summaries"]
        (entry,) = [s for s in studies if s["study_name"] == "cosface-digits"]
        assert entry["directions"] == ["maximize"]
        detail = _get(f"{base}/api/studies/{entry['study_id']}")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    trials = sorted(detail["trials"], key=lambda t: t["number"])
    assert [t["number"] for t in trials] == [t.number for t in want.trials]
    for served, stored in zip(trials, want.trials):
        assert served["state"].upper() == stored.state.name
        assert served["values"] == pytest.approx(stored.values)
        params = {p["name"]: p["param_internal_value"] for p in served["params"]}
        assert params == pytest.approx(stored.params)  # cosface: s and m
        steps = {v["step"]: v["value"] for v in served["intermediate_values"]}
        assert steps == pytest.approx(stored.intermediate_values)  # one reward per epoch
    best = detail["best_trials"][0]
    assert best["number"] == want.best_trial.number == summary["best"]["number"]
