"""The search: the epoch loop of docs/architecture.md (section 5), its run folder, and resume.

    for each interval of k epochs ([controller] interval = k, default 1):
        params[1..M] = controller.sample(M)
        every candidate starts from the same start state, then trains k epochs on its own
        weights with its own params (rewards measured after every epoch)
        controller.update(params, rewards of the interval's last epoch)
        start        = state of the best candidate (weights and optimiser state)
    test(start) on the benchmark's test split — never seen by the search

A run folder holds config.toml, manifest.json, epochs.csv, controller.csv, checkpoint.pt
(written atomically after every completed interval: every epoch when k = 1; a run killed
inside an interval resumes from that interval's start and repeats it, with the same
results), results.json and discovered.toml (the chosen parameters per epoch as a schedule
the fixed controller replays). With k > 1, epochs.csv marks the interval's winner as chosen
in each of its epochs and has a column `compete`: true where the rewards reached the
controller (docs/search.md). The checkpoint before the last one is kept as
checkpoint.prev.pt.

Nothing is written before every input has been checked: the configuration, the benchmark,
the model, the reward metric and, on --resume, the checkpoint (docs/faults.md). So bad input
never leaves a half-written folder, and --force never deletes a run for a command that
cannot start. When every candidate of an epoch diverges, the epoch is recorded and the next
one starts again from the same state (the previous best).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import lfsearch
from lfsearch import data, losses, models
from lfsearch.evaluation import heldout, overlap, reward_noise, validation_pairs
from lfsearch.evaluation import metrics as metrics_mod
from lfsearch.search import accel as accel_mod
from lfsearch.search import broadcast as broadcast_mod
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import checkpoint as checkpoint_mod
from lfsearch.search import config as config_mod
from lfsearch.search import controllers, tracking
from lfsearch.search import data_parallel as data_parallel_mod
from lfsearch.search import distributed as distributed_mod
from lfsearch.search import memory as memory_mod
from lfsearch.search import packing_trial
from lfsearch.search import population as population_mod
from lfsearch.search.run_folder import (
    _git_commit,
    _now,
    _read_manifest,
    _save_checkpoint,
    _write_csv,
    _write_json,
    check_run_dir,
)
from lfsearch.search.run_folder import held as run_folder_held

log = logging.getLogger(__name__)

@dataclass
class Progress:
    """One progress event: a candidate finished (kind='candidate') or an epoch ended ('epoch')."""

    kind: str
    epoch: int
    epochs: int
    candidate: int
    candidates: int
    reward: float
    best_reward: float
    best_params: dict[str, float]


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed derived deterministically from the run seed and labels (CRC32 of their text)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; "
                         "allowed here: auto, cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not known; allowed: auto, cpu, cuda")
    return torch.device(name)


def default_run_name(config: dict[str, Any]) -> str:
    """runs/<method>-<benchmark>-seed<seed>, with the benchmark spec made file-name safe."""
    bench = "".join(c if c.isalnum() or c in "-_." else "_" for c in config["training"]["benchmark"])
    return f"{config['method']['name']}-{bench.strip('_')}-seed{config['run']['seed']}"


def default_metric(split: Any) -> str:
    """accuracy for closed-set classification, verification_accuracy for pairs."""
    return "verification_accuracy" if isinstance(split, data.VerificationSplit) else "accuracy"

class Search:
    """A configured search: builds the benchmark, modules and controller, then runs epochs."""

    def __init__(self, config: dict[str, Any], out: Path,
                 progress: Callable[[Progress], None] | None = None,
                 group: distributed_mod.Group | None = None, *,
                 callbacks: list[Any] | None = None, tensorboard: bool | None = None):
        self.config = config
        self.out = out
        self.progress = progress
        # trackers (search/tracking.py): TensorBoard events in the run folder, user callbacks
        self.callbacks = tracking.check_callbacks(callbacks)
        self.tensorboard = tracking.resolve_tensorboard(tensorboard)
        self.group = group  # under torchrun: this rank's place; rank 0 alone writes the run folder
        self.writes = group is None or group.is_main
        training, run = config["training"], config["run"]
        self.seed = run["seed"]
        if run["threads"]:
            # CPU intra-op threads; results on CPU depend on it (the order of float sums)
            torch.set_num_threads(run["threads"])
        self.device = resolve_device(run["device"])
        if group is not None:
            self.device = group.local_device(self.device)
        self.benchmark = data.load(training["benchmark"], seed=self.seed, device=self.device)
        if self.benchmark.train is None:
            raise ValueError(f"training.benchmark {training['benchmark']!r} has no training split; "
                             "train on digits, mnist:DIR, cifar10:DIR, cifar100:DIR or folder:DIR "
                             "and name it under [reward] validation instead")
        self.model_name = (self.benchmark.default_model if training["model"] == "auto"
                           else training["model"])
        self.specs = config_mod.param_specs(config)
        self.validations = self._validations()
        self.candidates = config["controller"]["candidates"]
        self.interval = config["controller"].get("interval", 1)
        option = functools.partial(config_mod.search_option, config)
        self.broadcast = option("broadcast")
        self.reject = ((option("reject_after"), option("reject_margin"))
                       if option("reject_after") > 0 else None)
        if group is not None and (self.broadcast != "best" or self.reject is not None):
            raise ValueError("controller.broadcast and controller.reject_after need one "
                             "process; under torchrun allowed: broadcast = \"best\", "
                             "reject_after = 0")
        # [training] parallel = "data" under torchrun: the ranks train each candidate together
        self.data_parallel = group is not None and training["parallel"] == "data"
        if self.data_parallel and training["batch_size"] < 2 * group.world_size:
            raise ValueError(f"training.batch_size must be >= 2 × {group.world_size} ranks with "
                             f"training.parallel = \"data\" (each rank trains on its slice "
                             f"of a batch; got {training['batch_size']})")
        self.dp: data_parallel_mod.DataParallelTrainee | None = None
        self.epochs = training["epochs"]
        self.augment = (self.benchmark.augment if training["augment"] == "auto"
                        else training["augment"])
        self.accel = accel_mod.Accel.for_device(self.device, compile=training["compile"],
                                              amp=training["amp"])
        self.backends = accel_mod.apply_backends(self.device)  # cudnn.benchmark on CUDA
        if self.device.type != "cuda" and training["amp"] in ("bf16", "fp16"):
            log.warning("training.amp = %r applies on CUDA only; training in float32 on %s",
                        training["amp"], self.device)
        self.test_benchmarks = config.get("test", {}).get("benchmarks", [])
        for spec in self.test_benchmarks:  # a missing file fails now, not after the search
            _kind, path, _options = config_mod.normalise_spec(spec)
            if path is not None and not os.path.exists(path):
                raise FileNotFoundError(f"test.benchmarks: {spec!r}: {path} does not exist")
        self._ready: tuple[Any, ...] | None = None
        self.packing: memory_mod.PackingPlan | None = None

    def preflight(self, *, resume: bool = False) -> None:
        """Build the modules and the controller, and on resume read the checkpoint, before
        anything is written: a bad model name or a damaged checkpoint ends here."""
        if self._ready is not None:
            return
        trainee = self.build_trainee()
        self.packing = self._choose_packing(trainee, resume)
        if self.data_parallel:  # this rank's trainee: the head sharded or replicated
            t = self.config["training"]
            self.dp = data_parallel_mod.DataParallelTrainee(trainee, functools.partial(
                candidate_mod.make_optimizer, t["optimizer"], lr=t["lr"],
                momentum=t["momentum"], weight_decay=t["weight_decay"]))
        controller = self.build_controller() if self.writes else None  # lives on rank 0 only
        ckpt, source = None, None
        if resume and self.writes:
            ckpt, source = checkpoint_mod.load(self.out, map_location=self.device)
        self._ready = (trainee, controller, ckpt, source)

    def _choose_packing(self, trainee: candidate_mod.Trainee,
                        resume: bool) -> packing_trial.PackingChoice:
        """[training] packing -> the path: the memory guard's plan, and for auto on CUDA a
        speed trial on copies of the start state (search/packing_trial.py)."""
        t = self.config["training"]
        plan = lambda: memory_mod.plan_for(  # noqa: E731
            trainee.model, trainee.loss, trainee.optimizer, candidates=self.candidates,
            batch_size=t["batch_size"], num_classes=self.benchmark.num_classes,
            image_shape=(self.benchmark.in_channels, *self.benchmark.image_size),
            device=self.device, autocast=self.accel.autocast)
        trial = lambda chunk: packing_trial.measure(  # noqa: E731
            trainee, self.benchmark.train, {s.name: s.init for s in self.specs},
            candidates=self.candidates, chunk=chunk, batch_size=t["batch_size"],
            lr=self.lr_at(0), accel=self.accel, augment=self.augment,
            seed=derive_seed(self.seed, "packing-trial"))
        previous = (_read_manifest(self.out / "manifest.json").get("packing")
                    if resume and self.writes else None)
        setting = "sequential" if self.data_parallel else t["packing"]  # data: one at a time
        return packing_trial.decide(setting, self.device, self.accel, plan=plan,
                                    trial=trial, reject=self.reject is not None,
                                    torchrun=self.group is not None,
                                    previous=previous if isinstance(previous, dict) else None)

    def _validations(self) -> list[candidate_mod.Validation]:
        out = []
        metric = self.config["reward"]["metric"]
        for entry in self.config["reward"]["validation"]:
            spec = entry["benchmark"]
            bench = self.benchmark if spec == "main" else data.load(spec, seed=self.seed,
                                                                    device=self.device)
            split = bench.val
            if split is None:
                raise ValueError(f"reward.validation benchmark {spec!r} has no validation split")
            if split.protocol not in ("classification", "verification"):
                raise ValueError(f"reward.validation benchmark {spec!r} is a {split.protocol} "
                                 "benchmark, for [test] benchmarks and `lfsearch evaluate` only; "
                                 "allowed here: pair (verification) or classification benchmarks")
            if spec != "main" and self.benchmark.test is not None:
                overlap.refuse_overlap(spec, split.images, self.benchmark.test.images)
            name = "val" if spec == "main" else f"val:{spec}"
            if self.config["reward"].get("pairs", 0):
                split = validation_pairs.redraw(split, self.config["reward"]["pairs"],
                                                derive_seed(self.seed, "reward-pairs", spec), name)
            measured = ("accuracy",) if split.protocol == "classification" else tuple(
                m for m in config_mod.REWARD_METRICS if m not in ("auto", "accuracy")
                and ((m != "rank1" and not m.endswith("_all")) or split.labels is not None))
            if metric != "auto" and metric not in measured:
                raise ValueError(f"{self.config.get('_source', '<config>')}: "
                                 f"reward.metric {metric!r} is not measured on {name} (a "
                                 f"{split.protocol} split); allowed: auto, {', '.join(measured)}")
            out.append(candidate_mod.Validation(
                name, split, default_metric(split) if metric == "auto" else metric,
                float(entry["weight"])))
        return out

    def build_trainee(self) -> candidate_mod.Trainee:
        """Backbone, loss head and optimiser, initialised from the run seed."""
        training = self.config["training"]
        torch.manual_seed(derive_seed(self.seed, "init"))
        model = models.build(self.model_name, embedding_size=training["embedding_size"],
                             in_channels=self.benchmark.in_channels,
                             image_size=self.benchmark.image_size).to(self.device)
        loss = losses.build(self.config["loss"]["name"], embedding_size=training["embedding_size"],
                            num_classes=self.benchmark.num_classes,
                            **config_mod.loss_arguments(self.config)).to(self.device)
        initial = {s.name: s.init for s in self.specs}
        if initial:
            loss.set_params(**initial)
        n, batch = len(self.benchmark.train), training["batch_size"]
        loss.plan_training(self.epochs * (n // batch if n > batch else 1))  # as train_one_epoch
        optimizer = candidate_mod.make_optimizer(
            training["optimizer"], list(model.parameters()) + list(loss.parameters()),
            lr=training["lr"], momentum=training["momentum"], weight_decay=training["weight_decay"])
        scaler = (candidate_mod.make_grad_scaler(self.device)
                  if self.accel.autocast == torch.float16 else None)
        return candidate_mod.Trainee(model, loss, optimizer, scaler)

    def build_controller(self) -> Any:
        c = self.config["controller"]
        return controllers.build(c["kind"], self.specs, seed=derive_seed(self.seed, "controller"),
                                 horizon=config_mod.controller_updates(self.config),
                                 **config_mod.controller_settings(self.config))

    def lr_at(self, epoch: int) -> float:
        t = self.config["training"]
        return candidate_mod.learning_rate(epoch, base=t["lr"], epochs=t["epochs"],
                                        schedule=t["lr_schedule"], steps=t["lr_steps"],
                                        gamma=t["lr_gamma"], power=t["lr_power"],
                                        warmup_epochs=t["warmup_epochs"])

    def run_epoch(self, trainee: candidate_mod.Trainee, start: Any, epoch: int,
                  params: list[dict[str, float]], on_candidate,
                  keep_all: bool = False) -> list[candidate_mod.CandidateResult]:
        """Train and reward this epoch's candidates: one after another, or packed together
        (self.packing, decided in preflight). Under torchrun rank r trains the candidates
        i ≡ r (mod K) and every rank gets every result. `start`: one state, or
        one per candidate inside an interval; keep_all: every candidate keeps its state (a
        rank keeps those of its own candidates)."""
        def train(indices, on_candidate):
            training = self.config["training"]
            own = start if isinstance(start, dict) else [start[i] for i in indices]
            population = population_mod.Population(self.packing.mode, self.accel,
                                                   self.packing.chunk)
            return population.run_epoch(
                trainee, own, [params[i] for i in indices], train=self.benchmark.train,
                validations=self.validations, batch_size=training["batch_size"],
                lr=self.lr_at(epoch), data_seed=derive_seed(self.seed, "data", epoch),
                candidate_seeds=[derive_seed(self.seed, "candidate", epoch, i) for i in indices],
                augment=self.augment, on_candidate=on_candidate, keep_all=keep_all,
                **({"reject": self.reject} if self.reject is not None else {}))

        if self.dp is not None:  # every rank trains every candidate on its slice of a batch
            training = self.config["training"]
            population = population_mod.Population.choose("sequential", self.device, self.accel)
            return data_parallel_mod.run_epoch(
                self.group, self.dp, trainee, start, params,
                train=population.prepare(self.dp, self.benchmark.train),
                validations=self.validations, batch_size=training["batch_size"],
                lr=self.lr_at(epoch), data_seed=derive_seed(self.seed, "data", epoch),
                candidate_seeds=[derive_seed(self.seed, "candidate", epoch, i)
                                 for i in range(len(params))],
                augment=self.augment, on_candidate=on_candidate,
                autocast_dtype=self.accel.autocast, keep_all=keep_all)
        if self.group is not None:
            return distributed_mod.run_epoch(self.group, train, len(params), self.device,
                                         on_candidate, epoch=epoch, keep_all=keep_all)
        return train(list(range(len(params))), on_candidate)

    def run(self, *, resume: bool = False) -> dict[str, Any]:
        """Run (or continue) every epoch, then test; returns the results dict of results.json."""
        self.preflight(resume=resume)
        callbacks = list(self.callbacks) if self.writes else []
        if self.writes and self.tensorboard:
            callbacks.append(tracking.TensorBoardWriter(self.out))
        self.trackers = tracking.Trackers(callbacks)
        try:
            return self._run(resume)
        finally:
            self.trackers.close()

    def _steps_per_epoch(self) -> int:
        n, batch = len(self.benchmark.train), self.config["training"]["batch_size"]
        return n // batch if n > batch else 1  # as train_one_epoch (the last short batch dropped)

    def _track_epoch(self, epoch: int, results: list[candidate_mod.CandidateResult],
                     chosen: int | None, controller: Any) -> None:
        self.trackers.epoch(tracking.EpochEvent(
            epoch, [dict(r.params) for r in results], [r.reward for r in results],
            [r.train_loss for r in results], [r.status for r in results], chosen,
            controller.describe() if controller is not None else {}, self.lr_at(epoch)))

    def _run(self, resume: bool) -> dict[str, Any]:
        out = self.out
        trainee, controller, ckpt, source = self._ready
        rows: list[dict[str, Any]] = []
        controller_rows: list[dict[str, Any]] = []
        snr_rows: list[dict[str, Any]] = []
        first_epoch = 0
        manifest = self._manifest()
        checkpoint_path = out / checkpoint_mod.NAME
        # a damaged checkpoint.pt is replaced, not kept as checkpoint.prev.pt
        keep_previous = source is None or source.name == checkpoint_mod.NAME
        option = functools.partial(config_mod.search_option, self.config)
        broadcast = broadcast_mod.Broadcast(
            self.broadcast, option("broadcast_k"), option("broadcast_decay"),
            {n for n, _ in trainee.loss.named_parameters()})
        if ckpt is not None:
            broadcast.ema = ckpt.get("ema")
            trainee.load(ckpt["state"])
            controller.load_state_dict(ckpt["controller"])
            rows, controller_rows = ckpt["rows"], ckpt["controller_rows"]
            snr_rows = list(ckpt.get("snr_rows", []))
            first_epoch = ckpt["epoch"] + 1
            old = _read_manifest(out / "manifest.json")
            manifest["started"] = old.get("started", manifest["started"])
            manifest["resumed"] = old.get("resumed", []) + [manifest["now"]]
        if self.writes:
            config_mod.dump(self.config, out / "config.toml")
            manifest["status"] = "running"
            _write_json(out / "manifest.json", manifest)

        start = trainee.state()
        if self.group is not None:  # rank 0's first epoch and start state (fresh or resumed)
            first_epoch, start = self.group.share_start(first_epoch, start, self.device)
        best_reward, best_params = -math.inf, {}
        for r in rows:
            if r["chosen"] and r["reward"] > best_reward:
                best_reward, best_params = r["reward"], {s.name: r[s.name] for s in self.specs}
        t0 = time.perf_counter()
        k = self.interval
        try:
            epoch = first_epoch
            while epoch < self.epochs:
                first, end = epoch, min((epoch // k + 1) * k, self.epochs)  # this interval
                epoch = end
                params = controller.sample(self.candidates) if controller is not None else None
                if self.group is not None:
                    params = self.group.broadcast_object(params,
                                                         f"sharing epoch {first}'s candidates")

                def on_candidate(i: int, result: candidate_mod.CandidateResult, e: int) -> None:
                    nonlocal best_reward, best_params
                    if self.trackers.callbacks:
                        first_step, lr = e * self._steps_per_epoch(), self.lr_at(e)
                        for j, value in enumerate(result.step_losses):
                            self.trackers.step(tracking.StepEvent(e, i, first_step + j,
                                                                  value, lr))
                    if result.status == "ok" and result.reward > best_reward:
                        best_reward, best_params = result.reward, dict(result.params)
                    if self.progress:
                        self.progress(Progress("candidate", e, self.epochs, i,
                                               len(params), result.reward, best_reward,
                                               best_params))

                # k epochs, each candidate on its own weights; only the last keeps one state
                starts: Any = start
                interval: list[list[candidate_mod.CandidateResult]] = []
                for e in range(first, end):
                    results = self.run_epoch(trainee, starts, e, params,
                                             lambda i, r, e=e: on_candidate(i, r, e),
                                             keep_all=e < end - 1 or broadcast.keeps_all)
                    interval.append(results)
                    starts = [r.state if r.status == "ok" else None for r in results]
                results = interval[-1]
                chosen = candidate_mod.choose_best(results)
                if chosen is None:
                    log.warning("epoch %d/%d: every candidate diverged (non-finite loss, "
                                "embeddings or weights); the next epoch starts again from the "
                                "same state", end, self.epochs)
                else:
                    start = broadcast.next_start(results, chosen)
                extra: dict[str, Any] = {}
                if self.broadcast != "best":  # the model the rule carries on, on validation
                    extra["broadcast_reward"] = self._reward(trainee, broadcast.final(start))
                stopped: dict[int, str] = {}  # rejected earlier in this interval
                for e, epoch_results in zip(range(first, end), interval):
                    for i, r in enumerate(epoch_results):
                        status = stopped.get(i, r.status) if r.steps == 0 else r.status
                        if status == "rejected":
                            stopped[i] = status
                        rows.append({"epoch": e, "candidate": i, **r.params, "reward": r.reward,
                                     "train_loss": r.train_loss, "status": status,
                                     "chosen": i == chosen, "lr": self.lr_at(e),
                                     **({"compete": e == end - 1} if k > 1 else {}),
                                     **({"averaged": e == end - 1 and i in broadcast.averaged}
                                        if self.broadcast == "top_k_average" else {}),
                                     **({"steps": r.steps} if self.reject is not None else {}),
                                     **r.metrics})
                snr_rows.append({"epoch": end - 1, **self._epoch_snr(results, chosen, end - 1)})
                for r in results:
                    r.samples = []
                del starts
                if not self.writes:
                    del interval
                    continue
                controller.update([r.params for r in results], [r.reward for r in results])
                controller_rows.append({**controller.describe(), "epoch": end - 1, **extra})
                for e, epoch_results in zip(range(first, end), interval):
                    self._track_epoch(e, epoch_results, chosen, controller)
                del interval
                _write_csv(out / "epochs.csv", rows)
                _write_csv(out / "controller.csv", controller_rows)
                _write_csv(out / "snr.csv", snr_rows)
                _save_checkpoint(checkpoint_path, {
                    "epoch": end - 1, "state": start, "controller": controller.state_dict(),
                    "rows": rows, "controller_rows": controller_rows, "snr_rows": snr_rows,
                    "config": self.config,
                    **({"ema": broadcast.ema} if broadcast.ema is not None else {})},
                    keep_previous=keep_previous)
                keep_previous = True
                if self.progress:
                    reward = results[chosen].reward if chosen is not None else math.nan
                    self.progress(Progress("epoch", end - 1, self.epochs, len(params) - 1,
                                           len(params), reward, best_reward, best_params))
        except BaseException:
            if self.writes:
                manifest["status"] = "interrupted"
                manifest["ended"] = _now()
                _write_json(out / "manifest.json", manifest)
            raise

        if not self.writes:  # rank 0 tests and writes the results
            return {"rank": self.group.rank, "run_dir": str(out)}
        trainee.load(broadcast.final(start))
        results = self._test(trainee, rows)
        if self.broadcast != "best":
            results["chosen_validation_reward"] = results["final_validation_reward"]
            results["final_validation_reward"] = next(
                (r["broadcast_reward"] for r in reversed(controller_rows)
                 if "broadcast_reward" in r), None)
            results["broadcast"] = self.broadcast
        if self.reject is not None:
            results.update(self._compute(rows))
        results["reward_snr"] = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                                 for k, v in reward_noise.summarise_snr(
                                     snr_rows, warn=self.config["controller"]["kind"] != "fixed"
                                 ).items()}  # a fixed controller's candidates are one loss
        _write_json(out / "results.json", results)
        self._write_discovered(rows)
        manifest.update(status="complete", ended=_now(),
                        search_seconds_this_session=round(time.perf_counter() - t0, 3))
        _write_json(out / "manifest.json", manifest)
        return {**results, "run_dir": str(out)}

    def _reward(self, trainee: candidate_mod.Trainee, state: dict[str, Any]) -> float:
        """The validation reward of `state` (the worst when it is not finite)."""
        trainee.load(state)
        try:
            return candidate_mod.reward_of(trainee, self.validations)[0]
        except ValueError:
            return candidate_mod.WORST_REWARD

    def _compute(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Candidate-epochs with early rejection: spent = Σ steps / S over every row, saved =
        Σ (S − steps) / S over the rejected rows (S: steps per epoch)."""
        s = candidate_mod.steps_per_epoch(len(self.benchmark.train),
                                          self.config["training"]["batch_size"])
        return {"steps_per_epoch": s,
                "candidate_epochs_spent": round(sum(r["steps"] for r in rows) / s, 6),
                "candidate_epochs_saved": round(sum(s - r["steps"] for r in rows
                                                    if r["status"] == "rejected") / s, 6),
                "rejected": sum(r["status"] == "rejected" for r in rows)}
    def _epoch_snr(self, results: list[candidate_mod.CandidateResult], chosen: int | None,
                   epoch: int) -> dict[str, float]:
        """The competing epoch's reward spread, the chosen reward's bootstrap noise and their
        ratio (evaluation/reward_noise.py), from the scores the rewards were computed on."""
        noise = math.nan
        if chosen is not None:
            noise = reward_noise.reward_noise(results[chosen].samples,
                                              seed=derive_seed(self.seed, "snr", epoch))
        return reward_noise.epoch_snr([r.reward for r in results if r.status == "ok"], noise)

    def _test(self, trainee: candidate_mod.Trainee, rows: list[dict[str, Any]]) -> dict[str, Any]:
        split = self.benchmark.test
        flip = bool(self.benchmark.flip)  # test-time flip augmentation (face benchmarks)
        metrics = metrics_mod.evaluate(trainee.model, trainee.loss, split, flip=flip)
        chosen = [r for r in rows if r["chosen"]]
        return {
            "method": self.config["method"]["name"],
            "benchmark": self.config["training"]["benchmark"],
            "model": self.model_name,
            "seed": self.seed,
            "epochs": self.epochs,
            "candidates": self.candidates,
            "candidate_epochs": len(rows),
            "test_metric": default_metric(split),
            "test_flip": flip,
            # NaN (a metric the split is too small for) is written as null: valid JSON
            "test": {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()},
            "final_validation_reward": chosen[-1]["reward"] if chosen else None,
            "chosen_params": [{s.name: r[s.name] for s in self.specs} for r in chosen],
            **({"test_benchmarks": self._test_benchmarks(trainee)}
               if self.test_benchmarks else {}),
        }

    def _test_benchmarks(self, trainee: candidate_mod.Trainee) -> dict[str, Any]:
        """[test] benchmarks: each one's metrics, or the error that stopped it (the run keeps
        its results; `lfsearch evaluate` can test it again)."""
        out = heldout.evaluate_benchmarks(
            trainee.model, trainee.loss, self.test_benchmarks, seed=self.seed,
            device=self.device, image_shape=(self.benchmark.in_channels,
                                             *self.benchmark.image_size), keep_going=True,
            seen=[(name, images) for name, images in
                  [("training", getattr(self.benchmark.train, "images", None))]
                  + [(v.name, v.split.images) for v in self.validations] if images is not None])
        for spec, entry in out.items():
            if "error" in entry:
                log.warning("test benchmark %s failed: %s", spec, entry["error"])
        return out

    def _write_discovered(self, rows: list[dict[str, Any]]) -> None:
        """The chosen parameters per epoch as a schedule the fixed controller replays."""
        if not self.specs:
            return
        schedule = [{s.name: float(r[s.name]) for s in self.specs} for r in rows if r["chosen"]]
        if not schedule:
            return
        discovered = {k: v for k, v in self.config.items() if not k.startswith("_")}
        discovered = json.loads(json.dumps(discovered))  # a deep copy of plain data
        discovered["method"] = {
            "name": f"{self.config['method']['name']}-discovered",
            "description": f"The loss schedule found by {self.config['method']['name']} on "
                           f"{self.config['training']['benchmark']} (seed {self.seed}), replayed "
                           "epoch by epoch by the fixed controller.",
        }
        discovered["controller"] = {"kind": "fixed", "candidates": 1, "schedule": schedule}
        config_mod.dump(discovered, self.out / "discovered.toml")

    def _manifest(self) -> dict[str, Any]:
        now = _now()
        return {
            "lfsearch": lfsearch.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "device": str(self.device), "seed": self.seed, "git_commit": _git_commit(),
            "cpu_threads": torch.get_num_threads(),
            "method": self.config["method"]["name"], "benchmark": self.config["training"]["benchmark"],
            "model": self.model_name, "started": now, "now": now,
            # what `lfsearch evaluate` rebuilds the backbone from (lfsearch/evaluation/heldout.py)
            "backbone": {"name": self.model_name,
                         "embedding_size": self.config["training"]["embedding_size"],
                         "in_channels": self.benchmark.in_channels,
                         "image_size": list(self.benchmark.image_size),
                         "num_classes": self.benchmark.num_classes},
            "autocast": str(self.accel.autocast).replace("torch.", "") if self.accel.autocast
            else "off", "augment": self.augment, "backends": self.backends,
            "packing": self.packing.describe(),  # the path and why (packing_trial.py)
            **({"test_benchmarks": list(self.test_benchmarks)} if self.test_benchmarks else {}),
            **({"distributed": self.group.describe()} if self.group is not None else {}),
            **({"parallel": "data"} if self.data_parallel else {}),
        }

def search(space: str | os.PathLike, *, benchmark: str | None = None, epochs: int | None = None,
           candidates: int | None = None, seed: int | None = None, device: str | None = None,
           model: str | None = None, out: str | os.PathLike | None = None, resume: bool = False,
           force: bool = False, threads: int | None = None, runs_dir: str | os.PathLike = "runs",
           progress: Callable[[Progress], None] | None = None,
           dist_timeout: float | None = None,
           test_benchmarks: list[str] | None = None, tensorboard: bool | None = None,
           callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Run a search described by a search-space file (a path or a name in search_spaces/).

    Returns the run's results (also written to <out>/results.json). With resume=True the run
    folder's own config.toml is used and the run continues after its last completed epoch.
    Under torchrun the ranks share each epoch's candidates (lfsearch.search.distributed; collectives
    time out after dist_timeout seconds); rank 0 reads the configuration and writes the run
    folder, the other ranks return {"rank": r, "run_dir": ...}. test_benchmarks replaces the
    file's [test] benchmarks (tested at the end, never searched on: lfsearch/evaluation/heldout.py).
    tensorboard: event files in the run folder (None: when the tensorboard package is
    installed); callbacks: objects with on_step(event) / on_epoch(event) methods
    (lfsearch/search/tracking.py, docs/search.md "Tracking").
    """
    overrides = dict(benchmark=benchmark, epochs=epochs, candidates=candidates, seed=seed,
                     device=device, model=model, threads=threads,
                     test_benchmarks=test_benchmarks)

    def prepare() -> tuple[dict[str, Any], Path]:
        nonlocal out
        if resume:
            if out is None:
                raise ValueError("--resume needs --out: the run folder to continue")
            out = Path(out)
            check_run_dir(out, resume=True, force=force)
            config = config_mod.load(out / "config.toml")
            given = {k: v for k, v in overrides.items() if v is not None}
            # where and on how many threads a run continues does not change what it is
            # (as in compare); a CPU run repeats bit-exactly only with the same thread count
            execution = {k: given.pop(k) for k in ("device", "threads") if k in given}
            changed = sorted(k for k, v in given.items()
                             if config_mod.resolve(config, **{k: v}) != config)
            if execution and not changed:
                config = config_mod.resolve(config, **execution)
            if changed:
                def was(key: str) -> Any:
                    if key == "test_benchmarks":
                        return config.get("test", {}).get("benchmarks", [])
                    return config[config_mod.OVERRIDE_SECTIONS[key]].get(key)

                told = "; ".join(f"--{k.replace('_', '-')} {given[k]!r}, the run has {was(k)!r}"
                                 for k in changed)
                raise ValueError(f"--resume continues {out} with its own config.toml; drop the "
                                 f"overrides that change it ({told}) or start again with "
                                 "--force; only --threads and --device may differ")
        else:
            config = config_mod.resolve(config_mod.load(space), **overrides)
            out = Path(out) if out is not None else Path(runs_dir) / default_run_name(config)
            check_run_dir(out, resume=False, force=force)
        return config, out

    with distributed_mod.session(dist_timeout) as group:
        main = group is None or group.is_main
        config, out = distributed_mod.on_main(group, prepare, "sharing the configuration")
        # every input is checked (benchmark, model, metric, checkpoint) before the folder
        # is created or, with force, emptied
        runner = Search(config, out, progress if main else None, group=group,
                        callbacks=callbacks, tensorboard=tensorboard)
        runner.preflight(resume=resume)
        if not main:
            return runner.run(resume=resume)
        with run_folder_held(out, resume=resume, force=force):  # one process per run folder
            return runner.run(resume=resume)
