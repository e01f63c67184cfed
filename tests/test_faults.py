"""Bad input, faults and concurrency, probed from outside (issue 13, item 7; docs/faults.md).

Every case goes through the command line (`lfsearch.cli.main`, what `python -m lfsearch`
runs, or the real `python -m lfsearch` in a subprocess where a signal or a second process is
involved) and checks what a user gets: exit status 2, exactly one line
`lfsearch: error: ...` naming the field and what is allowed, and nothing lost or
half-written: a refused run never creates its folder, and an existing one stays byte for
byte as it was.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from lfsearch.cli import main as cli_main
from lfsearch.experiments import study as study_mod
from lfsearch.search import config as config_mod

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--device", "cpu"]


# ------------------------------------------------------------------ helpers
def lfsearch(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Run the CLI in-process: (exit status, non-empty stderr lines)."""
    capsys.readouterr()
    try:
        code = cli_main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own exit
        code = exc.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def refused(argv: list[str], capsys, *words: str) -> str:
    """The one error line of a refused command (exit 2), checked for `words`."""
    code, lines = lfsearch(argv, capsys)
    assert code == 2, lines
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("lfsearch: error: "), line
    assert "Traceback" not in line and "[Errno" not in line, line
    for word in words:
        assert word in line, (word, line)
    return line


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def variant(tmp_path: Path, name: str, old: str, new: str, base: str = "cosface") -> Path:
    """A copy of a bundled search space with `old` replaced by `new` (once)."""
    text = config_mod.find_space(base).read_text()
    assert old in text, old
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lfsearch", *args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """A complete 2-epoch cosface run (checkpoint.pt: epoch 2, checkpoint.prev.pt: epoch 1)."""
    out = tmp_path_factory.mktemp("runs") / "done"
    assert cli_main(["search", "cosface", "--epochs", "2", "--device", "cpu", "--out",
                     str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def run_copy(done_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(done_run, target)
    return target


# ------------------------------------------------------------------ 7.1 NaN candidates
def random_cosface_search(tmp_path, capsys, name, init, low, high):
    """cosface with s drawn log-uniform in [low, high] by a random controller, 4 candidates,
    2 epochs; returns (run folder, epochs.csv) after checking that the run ended with exit 0."""
    space = variant(tmp_path, name, "s = 16.0\n",
                    f"\n[loss.params.s]\ninit = {init}\nlow = {low}\nhigh = {high}\nlog = true\n")
    space.write_text(space.read_text().replace('kind = "fixed"\ncandidates = 1',
                                               'kind = "random"\ncandidates = 4'))
    out = tmp_path / "r"
    code, lines = lfsearch(["search", space, "--epochs", "2", "--candidates", "4", "--out", out,
                            "--device", "cpu", "--quiet"], capsys)
    assert code == 0, lines
    return out, pd.read_csv(out / "epochs.csv")


def test_candidates_whose_weights_turn_nan_are_diverged_and_the_run_goes_on(tmp_path, capsys):
    """cosface with s log-uniform in [1e15, 1e36]: every candidate's logits overflow."""
    out, rows = random_cosface_search(tmp_path, capsys, "nan", "1e20", "1e15", "1e36")
    assert len(rows) == 8 and set(rows["status"]) == {"diverged"}
    assert (rows["reward"] == 0).all() and not rows["chosen"].any()
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert "test" in json.loads((out / "results.json").read_text())


def test_a_diverged_candidate_is_never_chosen_while_the_others_go_on(tmp_path, capsys):
    out, rows = random_cosface_search(tmp_path, capsys, "mixed", "16.0", "1.0", "1e36")
    assert {"ok", "diverged"} <= set(rows["status"]), rows[["s", "status"]]
    assert (rows.loc[rows["status"] == "diverged", "reward"] == 0).all()
    for epoch, group in rows.groupby("epoch"):
        ok = group[group["status"] == "ok"]
        chosen = group[group["chosen"]]
        # the best of the candidates that trained is kept; none when all diverged
        assert len(chosen) == min(len(ok), 1), group
        if len(ok):
            assert chosen["reward"].iloc[0] == ok["reward"].max()
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


# ------------------------------------------------------------------ 7.2 / 7.7 / 7.8 bad input
#: (name, space edit (old, new[, base]) or None, extra arguments, words of the one line)
BAD_INPUT = [
    ("s_text", ("s = 16.0", 's = "16"'), [], ["s must be a number", "(0, inf)", "text '16'"]),
    ("momentum_50", ("momentum = 0.9", "momentum = 50"), [],
     ["training.momentum", "[0, 1)", "got 50"]),
    ("weight_decay_inf", ("weight_decay = 0.0005", "weight_decay = inf"), [],
     ["training.weight_decay", "finite number >= 0", "got inf"]),
    ("modulated_low_below_one", ("low = 1.0", "low = 0.5", "search_softmax_paper"), [],
     ["loss.params.a.low", "must be >= 1", "[1, inf)", "got 0.5"]),
    ("lr_steps_text", ('lr_schedule = "cosine"', 'lr_schedule = "step"\nlr_steps = ["a"]'), [],
     ["training.lr_steps", "increasing epoch numbers >= 1", "['a']"]),
    ("lr_steps_decreasing", ('lr_schedule = "cosine"', 'lr_schedule = "step"\nlr_steps = [5, 3]'),
     [], ["training.lr_steps", "increasing epoch numbers >= 1", "[5, 3]"]),
    ("lr_steps_zero", ('lr_schedule = "cosine"', 'lr_schedule = "step"\nlr_steps = [0]'), [],
     ["training.lr_steps", "increasing epoch numbers >= 1", "[0]"]),
    ("lr_steps_not_a_list", ('lr_schedule = "cosine"', 'lr_schedule = "step"\nlr_steps = 10'), [],
     ["training.lr_steps", "a list of increasing epoch numbers"]),
    ("reward_metric_unknown", ('metric = "auto"', 'metric = "nosuch"'), [],
     ["reward.metric", "auto, verification_accuracy", "'nosuch'"]),
    # found only once the benchmark is loaded: still before anything is written
    ("reward_metric_not_measured", ('metric = "auto"', 'metric = "accuracy"'), [],
     ["reward.metric 'accuracy' is not measured on val", "allowed: auto, verification_accuracy"]),
    ("model_unknown", None, ["--model", "nosuchnet"],
     ["training.model", "auto or one of", "digits_net", "'nosuchnet'"]),
    ("benchmark_empty_folder", None, ["--benchmark", "folder:{empty}"],
     ["found 0 identity sub-folders", "DIR/<identity>/<image>"]),
    ("benchmark_missing", None, ["--benchmark", "mnist:{tmp}/nowhere"], ["does not exist"]),
    ("test_benchmark_missing", None, ["--test-benchmark", "bin:{tmp}/nowhere.bin"],
     ["test.benchmarks", "nowhere.bin does not exist"]),
    ("seed_huge", None, ["--seed", "99999999999999999999999"],
     ["run.seed", "[0, 4294967295]"]),
    ("epochs_zero", None, ["--epochs", "0"], ["training.epochs", "integer >= 1", "got 0"]),
    ("threads_negative", None, ["--threads", "-1"], ["run.threads", "integer >= 0"]),
    ("binary_toml", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", [],
     ["binary_toml.toml", "not a TOML text file", "byte 0x89", "not UTF-8"]),
]


def _bad_input(tmp_path: Path, case) -> tuple[list[str], list[str]]:
    name, edit, extra, words = case
    (tmp_path / "empty").mkdir(exist_ok=True)
    if edit is None:
        space = "cosface"
    elif isinstance(edit, bytes):
        space = tmp_path / f"{name}.toml"
        space.write_bytes(edit)
    else:
        space = variant(tmp_path, name, *edit)
    extra = [a.format(empty=tmp_path / "empty", tmp=tmp_path) for a in extra]
    words = [w.replace("binary_toml.toml", str(tmp_path / "binary_toml.toml")) for w in words]
    return ["search", str(space), *TINY, "--quiet", *extra], words


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    argv, words = _bad_input(tmp_path, case)
    out = tmp_path / "r"
    refused(argv + ["--out", out], capsys, *words)
    assert not out.exists()


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_force_with_bad_input_keeps_the_existing_run(tmp_path, capsys, run_copy, case):
    argv, words = _bad_input(tmp_path, case)
    before = snapshot(run_copy)
    refused(argv + ["--out", run_copy, "--force"], capsys, *words)
    assert snapshot(run_copy) == before


def test_compare_seeds_too_many_is_one_line(tmp_path, capsys):
    refused(["compare", "--seeds", "99999999999999999999999", "--out", tmp_path / "c"], capsys,
            "--seeds must be a count in [1, 1000] or a list")
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------ 7.6 paths
def _commands(out: str) -> dict[str, list[str]]:
    return {"search": ["search", "cosface", *TINY, "--quiet", "--out", out],
            "compare": ["compare", "--spaces", "softmax", "--seeds", "1", *TINY, "--quiet",
                        "--out", out],
            "study": ["study", "cosface", "--trials", "1", *TINY, "--quiet", "--out", out]}


@pytest.mark.parametrize("command", ["search", "compare", "study"])
def test_an_out_under_sys_cannot_be_created_one_line(capsys, command):
    line = refused(_commands("/sys/lfsearch-x")[command], capsys,
                   "cannot create --out /sys/lfsearch-x:")
    assert "permission denied" in line or "read-only" in line
    assert not Path("/sys/lfsearch-x").exists()


@pytest.mark.parametrize("command", ["search", "compare", "study"])
def test_an_out_under_a_file_is_one_line_in_words(tmp_path, capsys, command):
    (tmp_path / "afile").write_text("x")
    refused(_commands(str(tmp_path / "afile" / "sub"))[command], capsys,
            f"cannot create --out {tmp_path / 'afile' / 'sub'}:",
            f"'{tmp_path / 'afile'}' is not a folder")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write in a read-only folder; /sys covers this case here")
@pytest.mark.parametrize("command", ["search", "compare", "study"])
def test_an_out_in_a_read_only_folder_is_one_line(tmp_path, capsys, command):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused(_commands(str(ro / "x"))[command], capsys, "cannot create --out",
                "permission denied")
        assert not (ro / "x").exists()
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("storage,words", [
    ("journal:/sys/lfsearch-x/j.log", "cannot create the journal's folder /sys/lfsearch-x"),
    ("sqlite:////sys/lfsearch-x/s.db", "cannot create the SQLite file's folder /sys/lfsearch-x"),
    ("nonsense", "is not a storage; allowed: journal:PATH, sqlite:///FILE"),
])
def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path, capsys, storage, words):
    out = tmp_path / "s"
    refused(["study", "cosface", "--trials", "1", *TINY, "--out", out, "--storage", storage],
            capsys, words)
    assert not out.exists()


def test_files_written_elsewhere_name_the_file_not_a_temporary_one(tmp_path, capsys, done_run):
    (tmp_path / "afile").write_text("x")
    line = refused(["evaluate", done_run, "--benchmark", "digits", "--device", "cpu",
                    "--out", tmp_path / "afile" / "r.json"], capsys,
                   f"{tmp_path / 'afile' / 'r.json'}: '{tmp_path / 'afile'}' is not a folder")
    assert ".tmp" not in line
    line = refused(["spaces", "copy", "cosface", tmp_path / "afile" / "c.toml"], capsys,
                   f"'{tmp_path / 'afile'}' is not a folder")
    assert ".tmp" not in line
    refused(["spaces", "copy", "cosface", "/sys/lfsearch-x.toml"], capsys,
            "cannot be written: ")
    assert (tmp_path / "afile").read_text() == "x"


# ------------------------------------------------------------------ 7.5 checkpoints
def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"not a checkpoint\n" * 10)
    else:  # a readable torch file that is not an lfsearch checkpoint
        torch.save({"weights": torch.zeros(3)}, path)


DAMAGE = ["empty", "truncated", "garbage", "foreign"]


def test_each_epoch_keeps_the_previous_checkpoint_beside_the_new_one(done_run):
    current = torch.load(done_run / "checkpoint.pt", weights_only=False)
    previous = torch.load(done_run / "checkpoint.prev.pt", weights_only=False)
    assert (current["epoch"], previous["epoch"]) == (1, 0)


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_checkpoint_resumes_from_the_previous_one(run_copy, done_run, capsys, caplog,
                                                             how):
    _damage(run_copy / "checkpoint.pt", how)
    code, lines = lfsearch(["search", "cosface", "--resume", "--out", run_copy, "--quiet"],
                           capsys)
    assert code == 0, lines
    assert lines == []  # nothing but the warning (which pytest's caplog holds)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert str(run_copy / "checkpoint.pt") in warnings[0]
    assert f"resuming from {run_copy / 'checkpoint.prev.pt'} (epoch 1)" in warnings[0]
    # the lost epoch is trained again, to the same results
    for name in ("epochs.csv", "results.json", "controller.csv", "discovered.toml"):
        assert (run_copy / name).read_bytes() == (done_run / name).read_bytes(), name
    assert torch.load(run_copy / "checkpoint.pt", weights_only=False)["epoch"] == 1


@pytest.mark.parametrize("how", DAMAGE)
def test_no_readable_checkpoint_is_one_line_that_says_what_to_do(run_copy, capsys, how):
    _damage(run_copy / "checkpoint.pt", how)
    _damage(run_copy / "checkpoint.prev.pt", "truncated")
    before = snapshot(run_copy)
    refused(["search", "cosface", "--resume", "--out", run_copy, "--quiet"], capsys,
            f"cannot resume: {run_copy / 'checkpoint.pt'} is",
            "no readable checkpoint.prev.pt", "start the run again with --force")
    assert snapshot(run_copy) == before


def test_a_damaged_checkpoint_without_a_previous_one_is_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli_main(["search", "cosface", *TINY, "--out", str(out), "--quiet"]) == 0
    assert not (out / "checkpoint.prev.pt").exists()  # one epoch: nothing before it
    _damage(out / "checkpoint.pt", "truncated")
    before = snapshot(out)
    refused(["search", "cosface", "--resume", "--out", out, "--quiet"], capsys,
            "is damaged or truncated (PytorchStreamReader failed reading zip archive",
            "start the run again with --force")
    assert snapshot(out) == before


def test_resume_removes_the_temporary_files_a_killed_run_left(run_copy, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is no longer running
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [run_copy / f".checkpoint.pt.tmp{dead.pid}",
                 run_copy / f".epochs.csv.tmp{dead.pid}"]
        for p in stale:
            p.write_bytes(os.urandom(195_000))
        busy = run_copy / f".checkpoint.pt.tmp{live.pid}"  # a live writer's: kept
        busy.write_bytes(b"x")
        code, lines = lfsearch(["search", "cosface", "--resume", "--out", run_copy, "--quiet"],
                               capsys)
        assert code == 0, lines
        assert not any(p.exists() for p in stale)
        assert busy.exists()
    finally:
        live.kill()
        live.wait()


# ------------------------------------------------------------------ 7.10 messages
@pytest.mark.parametrize("argv,words", [
    (["search", "cosface", "--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
    (["compare", "--threads", "abc"], "argument --threads: invalid int value: 'abc'"),
    (["study", "cosface", "--trials", "many"], "argument --trials: invalid int value: 'many'"),
    (["study", "cosface"], "the following arguments are required: --trials (see lfsearch study "
     "--help)"),
    (["search", "cosface", "--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
])
def test_a_word_for_a_number_is_one_line_not_the_usage(tmp_path, argv, words):
    done = subprocess.run([sys.executable, "-m", "lfsearch", *argv, "--out", str(tmp_path / "x")],
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lfsearch: error: {words}"), lines
    assert "usage:" not in done.stderr and not (tmp_path / "x").exists()


def test_the_resume_message_lists_only_the_overrides_that_change_the_run(run_copy, capsys):
    before = snapshot(run_copy)
    line = refused(["search", "cosface", "--resume", "--out", run_copy, "--quiet",
                    "--epochs", "5", "--seed", "0", "--threads", "1", "--device", "cpu"], capsys,
                   "drop the overrides that change it (--epochs 5, the run has 2)",
                   "only --threads and --device may differ")
    assert "--seed" not in line and "--threads 1" not in line  # unchanged, or allowed
    assert snapshot(run_copy) == before


# ------------------------------------------------------------------ 7.3 a second study
@pytest.fixture(scope="module")
def done_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("studies") / "s"
    assert cli_main(["study", "cosface", "--trials", "1", *TINY, "--out", str(out),
                     "--study-name", "first", "--quiet"]) == 0
    return out


@pytest.mark.parametrize("storage", [None, "journal"])
def test_a_second_study_in_the_same_out_is_refused(done_study, tmp_path, capsys, storage):
    before = snapshot(done_study)
    extra = [] if storage is None else ["--storage", f"journal:{tmp_path / 'j.log'}"]
    refused(["study", "cosface", "--trials", "1", *TINY, "--out", done_study,
             "--study-name", "second", *extra], capsys,
            f"--out {done_study} holds study 'first'",
            "give study 'second' its own --out", "--study-name first")
    assert snapshot(done_study) == before
    assert not (tmp_path / "j.log").exists()


# ------------------------------------------------------------------ 7.4 SQLite start-up
def _open_at_once(url: str, barrier, errors) -> None:
    import optuna

    pass  # (import moved)

    try:
        barrier.wait(timeout=60)
        storage = study_mod.open_storage(url)
        optuna.create_study(storage=storage, study_name="s", load_if_exists=True,
                            direction="maximize")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"{type(exc).__name__}: {exc}")
        raise SystemExit(1)
    raise SystemExit(0)


@pytest.mark.parametrize("round_", range(4))
def test_workers_starting_at_once_on_a_fresh_sqlite_file_all_open_it(tmp_path, round_):
    import optuna  # noqa: F401  (imported before the fork, so the children start at once)

    pass  # (import moved)

    ctx = multiprocessing.get_context("fork")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    workers = 4
    barrier, errors = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(url, barrier, errors))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    assert [p.exitcode for p in procs] == [0] * workers, messages
    summaries = optuna.get_all_study_summaries(study_mod.open_storage(url))
    assert [s.study_name for s in summaries] == ["s"]


@pytest.mark.slow
def test_two_study_commands_started_at_once_share_a_fresh_default_storage(tmp_path):
    out = tmp_path / "s"
    args = ["study", "cosface", "--trials", "2", *TINY, "--out", str(out), "--pruner", "none"]
    procs = [start(*args) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) >= 2 and set(trials["state"]) == {"COMPLETE"}


# ------------------------------------------------------------------ 7.9 signals
def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_on_a_search_marks_it_interrupted_in_one_line(tmp_path, sig):
    out = tmp_path / "r"
    proc = start("search", "cosface", "--epochs", "200", "--device", "cpu", "--out", str(out),
                 "--quiet")
    _wait_for(lambda: (out / "checkpoint.pt").exists(), proc, "a first checkpoint")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert stderr.splitlines() == ["lfsearch: interrupted"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] >= 0
    assert not list(out.glob(".*.tmp*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_on_a_study_is_one_line_and_the_trial_is_queued_again(tmp_path, sig):
    import optuna

    out = tmp_path / "s"
    log = tmp_path / "stdout.txt"
    with log.open("w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "lfsearch", "study", "cosface",
                                 "--trials", "2", "--epochs", "200", "--device", "cpu",
                                 "--out", str(out), "--study-name", "s"], env=cli_env(),
                                stdout=stdout, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: "trial 0 started" in log.read_text()
                  and (out / "trials" / "0" / "checkpoint.pt").exists(), proc, "a trial epoch")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.splitlines() == ["lfsearch: interrupted"]  # no Optuna traceback
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "WAITING"]
    # the interrupted trial's values are queued again, to be run by the next worker
    assert study.trials[0].params
    assert study.trials[1].system_attrs["fixed_params"] == study.trials[0].params
    assert study.trials[1].user_attrs["retry_of"] == 0


def test_the_study_shield_holds_a_signal_during_a_write_and_raises_it_after():
    """study.InterruptShield: a signal inside writing() waits for the write to end; inside
    training() (and outside any write) it raises at once; the handlers are restored."""
    from lfsearch.experiments.study import InterruptShield

    before = signal.getsignal(signal.SIGINT)
    steps = []
    with InterruptShield() as shield:
        with pytest.raises(KeyboardInterrupt):
            with shield.training():
                with shield.writing():
                    os.kill(os.getpid(), signal.SIGINT)
                    steps.append("write finished")  # not cut short by the signal
                steps.append("after the write")  # never reached: raised on leaving writing()
        assert steps == ["write finished"]
        with pytest.raises(KeyboardInterrupt):
            with shield.training():
                os.kill(os.getpid(), signal.SIGTERM)
                steps.append("unreachable")
        os.kill(os.getpid(), signal.SIGINT)  # between trials: held, raised by raise_pending
        with pytest.raises(KeyboardInterrupt):
            shield.raise_pending()
    assert steps == ["write finished"]
    assert signal.getsignal(signal.SIGINT) is before
