"""`lfsearch study`: Optuna studies whose trials are training runs.

Most tests replace the training run by a stub (a reward computed from the loss values, with
per-epoch reports), so that the study machinery — storage, pruning, stale trials, resume,
several workers on a journal file or a real PostgreSQL server — is tested in seconds. One test
trains for real (digits, 1 epoch).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from lfsearch.experiments import study as study_mod
from lfsearch.search import config as config_mod

optuna = pytest.importorskip("optuna")

from lfsearch.cli import main as cli_main  # noqa: E402

STUB = r'''
import math
import os
import time
from pathlib import Path

from lfsearch.search import Progress


class StubSearch:
    """Stands in for lfsearch.search.Search: no training; the reward is a smooth function of
    the loss values (best at m = 0.3, s = 16) and rises over the epochs, reported like a run."""

    waited = False

    def __init__(self, config, out, progress=None):
        self.config, self.out, self.progress = config, Path(out), progress

    def run(self, resume=False):
        study_dir = self.out.parent.parent
        peers = int(os.environ.get("STUB_PEERS", "1"))
        if peers > 1 and not StubSearch.waited:  # let every worker start before any finishes
            StubSearch.waited = True
            (study_dir / f"ready-{os.getpid()}").touch()
            deadline = time.time() + 60
            while len(list(study_dir.glob("ready-*"))) < peers and time.time() < deadline:
                time.sleep(0.05)
        with open(study_dir / "ran.log", "a") as f:
            f.write(f"{self.out.name} {os.getpid()}\n")
        loss = self.config["loss"]
        m = loss.get("params", {}).get("m", {}).get("init", 0.3)
        s = loss.get("s", 16.0)
        final = 0.9 - (m - 0.3) ** 2 - 0.01 * math.log(s / 16.0) ** 2
        epochs = self.config["training"]["epochs"]
        delay = float(os.environ.get("STUB_EPOCH_SECONDS", "0"))
        for e in range(epochs):
            time.sleep(delay)
            reward = final - 0.2 * (epochs - 1 - e) / epochs
            if self.progress is not None:
                self.progress(Progress("epoch", e, epochs, 0, 1, reward, reward, {}))
        return {"final_validation_reward": final, "test_metric": "accuracy",
                "test": {"accuracy": final}, "candidate_epochs": epochs}
'''

WORKER_MAIN = r'''
import sys

import lfsearch.experiments.study
from lfsearch.cli import main

lfsearch.experiments.study.Search = StubSearch
raise SystemExit(main(sys.argv[1:]))
'''


def stub_class():
    namespace: dict = {}
    exec(STUB, namespace)
    return namespace["StubSearch"]


@pytest.fixture
def stub(monkeypatch):
    cls = stub_class()
    monkeypatch.setattr(study_mod, "Search", cls)
    return cls


def load_study(storage, name="cosface-digits"):
    with study_mod._quiet_optuna():
        return optuna.load_study(study_name=name, storage=storage)


def states(study):
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------
# what a study varies
# ------------------------------------------------------------------------------------------

def test_default_parameters_of_a_fixed_loss_are_its_params_and_s():
    params = {p.name: p for p in study_mod.study_params(config_mod.load("cosface"))}
    assert set(params) == {"m", "s"}
    assert params["m"].target == "loss.params.m" and (params["m"].low, params["m"].high) == (0.0, 0.8)
    assert params["s"].target == "loss.s" and params["s"].log
    assert (params["s"].low, params["s"].high) == (8.0, 32.0)


def test_default_parameters_of_a_search_are_its_own_settings():
    params = {p.name: p for p in study_mod.study_params(config_mod.load("search_softmax"))}
    assert set(params) == {"candidates", "sigma", "lr"}
    assert params["candidates"].type == "int" and params["candidates"].target == "controller.candidates"
    assert params["sigma"].target == "controller.sigma" and params["sigma"].high <= 1.0
    config = config_mod.load("search_softmax")
    trial = study_mod.apply_values(config, list(params.values()),
                                   {"candidates": 3, "sigma": 0.1, "lr": 0.02})
    assert trial["controller"]["candidates"] == 3 and trial["controller"]["sigma"] == 0.1
    assert trial["controller"]["lr"] == 0.02 and trial["controller"]["kind"] == "reinforce"


def test_nothing_to_study_is_an_error_that_says_what_to_add():
    with pytest.raises(ValueError, match=r"study\.params"):
        study_mod.study_params(config_mod.load("softmax"))


SPACE_WITH_STUDY = """
[loss]
name = "cosface"
s = 16.0
[loss.params.m]
init = 0.35
low = 0.0
high = 0.8
[controller]
kind = "fixed"
[training]
epochs = 3
[study]
pruner = "none"
[study.params.m]
low = 0.1
high = 0.6
[study.params.s]
low = 8.0
high = 64.0
log = true
[study.params.batch]
target = "training.batch_size"
low = 32
high = 128
step = 32
"""


def test_a_study_table_is_validated_filled_and_round_trips(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(SPACE_WITH_STUDY)
    config = config_mod.load(path)
    tables = config["study"]["params"]
    assert tables["m"]["target"] == "loss.params.m" and tables["s"]["target"] == "loss.s"
    assert tables["batch"]["type"] == "int" and tables["batch"]["step"] == 32
    assert config["study"]["pruner"] == "none"
    config_mod.dump(config, tmp_path / "again.toml")
    again = config_mod.load(tmp_path / "again.toml")
    assert again["study"] == config["study"]
    params = study_mod.study_params(config)
    trial = study_mod.apply_values(config, params, {"m": 0.5, "s": 20.0, "batch": 96})
    assert trial["loss"]["params"]["m"]["init"] == 0.5 and trial["loss"]["s"] == 20.0
    assert trial["training"]["batch_size"] == 96 and isinstance(trial["training"]["batch_size"], int)
    assert "study" not in trial


@pytest.mark.parametrize("table, field", [
    ("[study.params.m]\nlow = 0.1\nhigh = 2.0\n", "study.params.m"),            # outside [0, 0.8]
    ("[study.params.m]\nlow = 0.5\nhigh = 0.1\n", "study.params.m"),
    ("[study.params.q]\nlow = 0.1\nhigh = 0.2\n", "study.params.q"),            # no such name
    ("[study.params.x]\ntarget = 'run.seed'\nlow = 0\nhigh = 9\n", "study.params.x"),
    ("[study.params.m]\nlow = 0.1\nhigh = 0.5\nlog = true\nstep = 0.1\n", "study.params.m"),
    ("[study.params.m]\nlow = 0.1\nhigh = 0.5\nlo = 1\n", "study.params.m"),
    ("[study]\npruner = 'asha'\n", "study.pruner"),
    ("[study]\ntrials = 3\n", "study.trials"),
])
def test_bad_study_tables_name_the_field_and_the_file(tmp_path, table, field):
    base = SPACE_WITH_STUDY.split("[study]")[0]
    path = tmp_path / "bad.toml"
    path.write_text(base + table)
    with pytest.raises(ValueError) as info:
        config_mod.load(path)
    assert field in str(info.value) and "bad.toml" in str(info.value)


def test_config_does_not_import_the_study_runner(tmp_path):
    """Dependencies run one way: config -> study_section; study -> config. Loading a file with a
    [study] table (checked by config) must not import lfsearch.experiments (Optuna, storage)."""
    path = tmp_path / "space.toml"
    path.write_text(SPACE_WITH_STUDY)
    code = ("import sys; from lfsearch.search import config; c = config.load(sys.argv[1]); "
            "assert 'params' in c['study']; "
            "print(sorted(m for m in sys.modules if m.startswith('lfsearch')))")
    repo = Path(__file__).resolve().parents[1]  # `python -c` imports from its cwd first
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True, cwd=repo).stdout
    loaded = eval(out)
    assert "lfsearch.search.study_section" in loaded and "lfsearch.search.config" in loaded
    assert not [m for m in loaded if m.startswith("lfsearch.experiments")]
    optuna_loaded = subprocess.run([sys.executable, "-c", code.replace(
        "print(sorted(m for m in sys.modules if m.startswith('lfsearch')))",
        "print('optuna' in sys.modules)"), str(path)], capture_output=True, text=True,
        check=True, cwd=repo).stdout.strip()
    assert optuna_loaded == "False"


# ------------------------------------------------------------------------------------------
# studies on a stub run (seconds)
# ------------------------------------------------------------------------------------------

def test_the_median_pruner_stops_poor_trials(tmp_path, stub):
    summary = study_mod.run_study("cosface", trials=10, epochs=4, out=tmp_path / "s")
    study = load_study(f"sqlite:///{tmp_path / 's' / 'study.db'}")
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, states(study)
    assert all(len(t.intermediate_values) < 4 for t in pruned)
    assert summary["finished_trials"] == 10
    # the first pruner_startup_trials (3) finished trials are never pruned
    assert all(t.state.name == "COMPLETE" for t in study.trials[:3])
    table = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert (table["state"] == "PRUNED").sum() == len(pruned)
    assert (table.loc[table["state"] == "PRUNED", "epochs_reported"] < 4).all()


def test_a_budget_stops_the_study_at_exactly_that_many_candidate_epochs(tmp_path, stub):
    # 4-epoch trials, budget 10: two complete trials (8), the third stopped after 2 epochs
    summary = study_mod.run_study("cosface", trials=100, epochs=4, out=tmp_path / "s",
                                  pruner="none", budget=10)
    study = load_study(f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [t.user_attrs["candidate_epochs"] for t in study.trials] == [4, 4, 2]
    assert summary["candidate_epochs"] == 10 and summary["budget"] == 10
    # hyperband prunes on the curve: more trials fit, never more than the budget spent
    hb = study_mod.run_study("cosface", trials=100, epochs=4, out=tmp_path / "h",
                             pruner="hyperband", budget=20)
    assert hb["candidate_epochs"] <= 20 and hb["finished_trials"] > 20 // 4
    with pytest.raises(ValueError, match="--budget must be an integer >= 1"):
        study_mod.run_study("cosface", trials=2, epochs=1, out=tmp_path / "x", budget=0)


def test_a_study_writes_csv_figures_summary_and_best_config(tmp_path, stub):
    out = tmp_path / "s"
    summary = study_mod.run_study("cosface", trials=6, epochs=2, out=out, pruner="none")
    table = pd.read_csv(out / "trials.csv")
    assert list(table["number"]) == list(range(6))
    assert {"number", "state", "value", "duration_s", "params_m", "params_s",
            "user_attrs_run_dir", "user_attrs_worker"} <= set(table.columns)
    assert (table["state"] == "COMPLETE").all() and table["value"].notna().all()
    for name in ("optimization_history.png", "intermediate_values.png", "param_importances.png"):
        assert (out / "figures" / name).stat().st_size > 10_000, name
    saved = json.loads((out / "study.json").read_text())
    assert saved["best"]["value"] == pytest.approx(table["value"].max())
    assert saved["best"] == json.loads(json.dumps(summary["best"]))
    assert saved["states"] == {"COMPLETE": 6} and saved["params"]["s"]["log"] is True
    best = config_mod.load(out / "best.toml")
    assert best["loss"]["params"]["m"]["init"] == pytest.approx(saved["best"]["params"]["m"])
    assert best["loss"]["s"] == pytest.approx(saved["best"]["params"]["s"])
    assert "study" not in best


def test_the_same_seed_gives_the_same_study(tmp_path, stub):
    a = study_mod.run_study("cosface", trials=6, epochs=2, out=tmp_path / "a", seed=3)
    b = study_mod.run_study("cosface", trials=6, epochs=2, out=tmp_path / "b", seed=3)
    ta, tb = (pd.read_csv(tmp_path / x / "trials.csv") for x in ("a", "b"))
    pd.testing.assert_frame_equal(ta[["params_m", "params_s", "value", "state"]],
                                  tb[["params_m", "params_s", "value", "state"]])
    assert a["best"]["params"] == b["best"]["params"]


def test_a_stale_running_trial_is_failed_requeued_and_the_study_reaches_n(tmp_path, stub):
    out = tmp_path / "s"
    study_mod.run_study("cosface", trials=2, epochs=2, out=out)
    storage = f"sqlite:///{out / 'study.db'}"
    study = load_study(storage)
    with study_mod._quiet_optuna():
        left = study.ask()  # a worker of this machine took a trial and died
    left.suggest_float("m", 0.0, 0.8)
    left.suggest_float("s", 8.0, 32.0, log=True)
    left.set_user_attr("worker", f"{socket.gethostname()}:{dead_pid()}")
    left.set_user_attr("worker_boot", study_mod._boot_id())
    summary = study_mod.run_study("cosface", trials=4, epochs=2, out=out)
    study = load_study(storage)
    assert study.trials[left.number].state.name == "FAIL"
    assert summary["finished_trials"] == 4 and states(study).count("RUNNING") == 0
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == left.number]
    assert len(retry) == 1 and retry[0].params == left.params


def test_a_live_workers_running_trial_is_not_stale(tmp_path, stub):
    out = tmp_path / "s"
    study_mod.run_study("cosface", trials=1, epochs=1, out=out)
    study = load_study(f"sqlite:///{out / 'study.db'}")
    with study_mod._quiet_optuna():
        live = study.ask()
    live.set_user_attr("worker", study_mod.worker_id())
    live.set_user_attr("worker_boot", study_mod._boot_id())
    other = study.ask()
    other.set_user_attr("worker", "another-machine:1")
    assert study_mod.recover_stale_trials(study, target=10) == []
    assert states(study).count("RUNNING") == 2


def test_an_interrupted_trial_is_failed_and_its_values_retried_on_resume(tmp_path, stub,
                                                                        monkeypatch):
    class Interrupted(stub):
        def run(self, resume=False):
            if self.out.name == "2":
                raise KeyboardInterrupt
            return super().run(resume)

    out = tmp_path / "s"
    monkeypatch.setattr(study_mod, "Search", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        study_mod.run_study("cosface", trials=5, epochs=2, out=out)
    storage = f"sqlite:///{out / 'study.db'}"
    assert states(load_study(storage)) == ["COMPLETE", "COMPLETE", "FAIL", "WAITING"]
    assert (out / "trials.csv").is_file()
    monkeypatch.setattr(study_mod, "Search", stub)
    summary = study_mod.run_study("cosface", trials=5, epochs=2, out=out)
    study = load_study(storage)
    assert summary["finished_trials"] == 5
    assert study.trials[3].user_attrs["retry_of"] == 2
    assert study.trials[3].params == study.trials[2].params
    # a complete study is not extended by running the command again
    again = study_mod.run_study("cosface", trials=5, epochs=2, out=out)
    assert len(load_study(storage).trials) == len(study.trials) and again["finished_trials"] == 5


def test_continuing_a_study_with_another_configuration_is_refused(tmp_path, stub):
    out = tmp_path / "s"
    study_mod.run_study("cosface", trials=1, epochs=2, out=out)
    with pytest.raises(ValueError, match="training.epochs"):
        study_mod.run_study("cosface", trials=2, epochs=3, out=out)


@pytest.mark.parametrize("argv, words", [
    (["--trials", "0"], "--trials"),
    (["--trials", "2", "--storage", "nonsense"], "journal:PATH"),
    (["--trials", "2", "--storage", "postgres://u:secret@h/db"], "postgresql://"),
])
def test_the_cli_reports_bad_study_arguments_on_one_line(tmp_path, capsys, argv, words):
    code = cli_main(["study", "cosface", "--out", str(tmp_path / "s"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "secret" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_study_trains_for_real_and_writes_db_csv_plots(tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["study", "cosface", "--trials", "2", "--epochs", "1", "--device", "cpu",
            "--threads", "1", "--out", str(out), "--seed", "1"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "trial 1 COMPLETE" in printed and "2/2 finished" in printed
    assert (out / "study.db").is_file() and (out / "figures" / "optimization_history.png").is_file()
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == 2 and (table["state"] == "COMPLETE").all()
    assert table["value"].between(0.5, 1.0).all()
    for number in (0, 1):
        run = out / "trials" / str(number)
        results = json.loads((run / "results.json").read_text())
        assert results["final_validation_reward"] == pytest.approx(table["value"][number])
        config = config_mod.load(run / "config.toml")
        assert config["loss"]["s"] == pytest.approx(table["params_s"][number])
        assert config["run"]["threads"] == 1  # --threads reaches every trial (default 0)
    study = load_study(f"sqlite:///{out / 'study.db'}")
    assert all(0 in t.intermediate_values for t in study.trials)


# ------------------------------------------------------------------------------------------
# worker processes: kill and resume; two workers on one journal file or one PostgreSQL server
# ------------------------------------------------------------------------------------------

def write_worker(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(STUB + WORKER_MAIN)
    return path


def start_worker(worker: Path, args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(worker), "study", "cosface", "--quiet", *args],
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=worker.parent)


def wait_for_lines(path: Path, n: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


def test_a_stopped_or_killed_worker_resumes_with_the_same_command(tmp_path):
    worker, out = write_worker(tmp_path), tmp_path / "s"
    args = ["--trials", "4", "--epochs", "4", "--out", str(out), "--pruner", "none"]
    storage, ran = f"sqlite:///{out / 'study.db'}", out / "ran.log"
    # SIGTERM (like Ctrl-C): the running trial is marked FAIL and its values queued again
    proc = start_worker(worker, args, STUB_EPOCH_SECONDS="0.3")
    wait_for_lines(ran, 2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert states(load_study(storage)) == ["COMPLETE", "FAIL", "WAITING"]
    # SIGKILL: no chance to clean up, the trial (the retry of 1) stays RUNNING
    proc = start_worker(worker, args, STUB_EPOCH_SECONDS="0.3")
    wait_for_lines(ran, 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert states(load_study(storage)) == ["COMPLETE", "FAIL", "RUNNING"]
    # the same command again: the dead worker's trial is failed, retried, the study completes
    proc = start_worker(worker, args)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    study = load_study(storage)
    assert states(study) == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert study.trials[2].user_attrs["retry_of"] == 1
    assert study.trials[3].user_attrs["retry_of"] == 2
    assert study.trials[3].params == study.trials[1].params
    assert len(pd.read_csv(out / "trials.csv")) == 6


def run_two_workers(tmp_path: Path, storage: str, trials: int = 8) -> None:
    worker, out = write_worker(tmp_path), tmp_path / "s"
    args = ["--trials", str(trials), "--epochs", "3", "--out", str(out), "--pruner", "none",
            "--storage", storage]
    procs = [start_worker(worker, args, STUB_EPOCH_SECONDS="0.1", STUB_PEERS="2")
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output
    storage_obj = study_mod.open_storage(storage)
    study = load_study(storage_obj)
    trials_ = study.get_trials(deepcopy=False)
    # every trial recorded once, none lost: numbers 0..n-1, all complete, each run once
    assert [t.number for t in trials_] == list(range(len(trials_)))
    assert trials <= len(trials_) <= trials + 1, states(study)
    assert set(states(study)) == {"COMPLETE"}
    ran = [line.split() for line in (out / "ran.log").read_text().splitlines()]
    assert sorted(int(n) for n, _ in ran) == list(range(len(trials_)))
    workers = {t.user_attrs["worker"] for t in trials_}
    assert workers == {f"{socket.gethostname()}:{p.pid}" for p in procs}
    assert {f"{socket.gethostname()}:{pid}" for _, pid in ran} == workers
    assert len(pd.read_csv(out / "trials.csv")) == len(trials_)


def test_two_workers_share_one_journal_file(tmp_path):
    run_two_workers(tmp_path, f"journal:{tmp_path / 'study.journal'}")


# --- a real PostgreSQL server on loopback ---

PG_TOOLS = ("initdb", "pg_ctl", "postgres")


def postgres_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: PATH, or Debian's /usr/lib/postgresql."""
    found = [shutil.which(t) for t in PG_TOOLS]
    if all(found):
        return Path(os.path.realpath(found[0])).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for folder in reversed(candidates):
        if all((folder / t).is_file() for t in PG_TOOLS):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """Start a throw-away PostgreSQL server on 127.0.0.1 (trust auth); yield its URL; stop it."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH "
                    "or in /usr/lib/postgresql/*/bin: install Debian's package "
                    "(apt-get install -y postgresql; .ci/run does this when they are missing)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.fail("the PostgreSQL driver psycopg2 is missing: pip install -e '.[test]' "
                    "(or 'lfsearch[postgres]')")
    run_as: dict = {}
    base = Path(tempfile.mkdtemp(prefix="lfsearch-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root: use the package's postgres user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root and there is no 'postgres' user to run the server as "
                        "(Debian's postgresql package creates it)")
        os.chown(base, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data, port = base / "data", free_port()
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(base)}

    def pg(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=base, env=env,
                              capture_output=True, text=True, timeout=timeout, **run_as)

    try:
        done = pg("initdb", "-D", str(data), "-U", "lfsearch", "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        assert done.returncode == 0, f"initdb failed: {done.stdout}{done.stderr}"
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} "
                   "-c fsync=off -c max_connections=40")
        done = pg("pg_ctl", "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")
        assert done.returncode == 0, (f"pg_ctl start failed: {done.stdout}{done.stderr}"
                                      + (base / "server.log").read_text(errors="replace")
                                      if (base / "server.log").exists() else "")
        yield f"postgresql://lfsearch@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_one_postgresql_server(tmp_path, postgres_url):
    run_two_workers(tmp_path, postgres_url)
