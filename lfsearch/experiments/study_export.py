"""What a finished study leaves: trials.csv, its figures (history, intermediate values,
parameter importances) and best.toml, the space file with the best trial's values.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import lfsearch
from lfsearch.experiments.study_storage import _quiet_optuna
from lfsearch.search import config as config_mod
from lfsearch.search.study_section import StudyParam, set_values

log = logging.getLogger(__name__)
MIN_TRIALS_FOR_IMPORTANCE = 5


def apply_values(config: dict[str, Any], params: list[StudyParam],
                 values: dict[str, Any]) -> dict[str, Any]:
    """The trial's configuration: `config` (without [study]) with every target set; validated."""
    return config_mod.validate(set_values(config, params, values),
                               source=config.get("_source", "<study>"))


def trials_table(study: Any):
    """One row per trial: number, state, value, start/end, duration_s, params_*, user_attrs_*,
    epochs_reported (how many epochs reported a reward: fewer than E for a pruned trial)."""
    import pandas as pd

    frame = study.trials_dataframe(attrs=("number", "state", "value", "datetime_start",
                                          "datetime_complete", "duration", "params",
                                          "user_attrs"))
    if frame.empty:
        return pd.DataFrame(columns=["number", "state", "value", "duration_s"])
    if "duration" in frame:
        frame.insert(frame.columns.get_loc("duration"), "duration_s",
                     frame["duration"].dt.total_seconds())
        frame = frame.drop(columns=["duration"])
    reported = {t.number: len(t.intermediate_values) for t in study.get_trials(deepcopy=False)}
    frame["epochs_reported"] = frame["number"].map(reported)
    return frame


def write_csv(study: Any, folder: Path) -> Path:
    path = folder / "trials.csv"
    config_mod.atomic_write_text(path, trials_table(study).to_csv(index=False))
    return path


def _title(ax: Any, text: str) -> None:
    """Replace Optuna's own title (it uses the left slot for some plots) by ours."""
    for loc in ("left", "right"):
        ax.set_title("", loc=loc)
    ax.set_title(text)


def _save(ax: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = ax.figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_figures(study: Any, folder: Path, params: list[StudyParam], seed: int) -> list[Path]:
    """Optuna's matplotlib plots as PNG: optimisation history, intermediate values (the
    per-epoch rewards the pruner judged; when trials ran >= 2 epochs) and, with >= 2
    parameters and MIN_TRIALS_FOR_IMPORTANCE complete trials, the fANOVA importances."""
    from matplotlib.ticker import MaxNLocator
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    written = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with _quiet_optuna():
        if complete:
            ax = ovm.plot_optimization_history(study, target_name="validation reward")
            _title(ax, f"{study.study_name}: optimisation history")
            ax.set_xlabel("trial")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _save(ax, figures / "optimization_history.png")
            written.append(figures / "optimization_history.png")
        if any(len(t.intermediate_values) >= 2 for t in study.get_trials(deepcopy=False)):
            ax = ovm.plot_intermediate_values(study)
            _title(ax, f"{study.study_name}: validation reward per epoch (pruned trials stop)")
            ax.set_xlabel("epoch (0 = first, as in epochs.csv)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("validation reward")
            if ax.get_legend() is not None and len(study.trials) > 12:
                ax.get_legend().remove()
            _save(ax, figures / "intermediate_values.png")
            written.append(figures / "intermediate_values.png")
        if len(params) >= 2 and len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
            try:
                ax = ovm.plot_param_importances(
                    study, evaluator=FanovaImportanceEvaluator(seed=seed),
                    target_name="validation reward")
            except (ValueError, RuntimeError) as exc:
                log.warning("parameter importances not plotted: %s", exc)
            else:
                _title(ax, f"{study.study_name}: parameter importances (fANOVA)")
                _save(ax, figures / "param_importances.png")
                written.append(figures / "param_importances.png")
    return written


def export(study: Any, folder: Path, config: dict[str, Any], params: list[StudyParam],
           settings: dict[str, Any], storage_label: str, target: int) -> dict[str, Any]:
    """trials.csv, figures/*.png, study.json and best.toml (the best values applied to the
    space, re-runnable with `lfsearch search`); returns the study.json summary."""
    from optuna.trial import TrialState

    write_csv(study, folder)
    figures = write_figures(study, folder, params, config["run"]["seed"])
    all_trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in all_trials) for s in TrialState}
    summary: dict[str, Any] = {
        "study_name": study.study_name, "storage": storage_label, "folder": str(folder),
        "direction": "maximize",
        "objective": "final validation reward (reward of the chosen candidate, last epoch)",
        "method": config["method"]["name"], "benchmark": config["training"]["benchmark"],
        "epochs": config["training"]["epochs"], "seed": config["run"]["seed"],
        "target_trials": target, "finished_trials": counts["COMPLETE"] + counts["PRUNED"],
        "states": {k: v for k, v in counts.items() if v},
        "params": {p.name: p.as_table() for p in params}, "settings": settings,
        "figures": [str(p.relative_to(folder)) for p in figures], "best": None,
        # every trial's spent compute, a pruned trial's up to where it stopped
        "candidate_epochs": sum(int(t.user_attrs.get("candidate_epochs", 0))
                                for t in all_trials),
        "lfsearch": lfsearch.__version__,
    }
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "run_dir": best.user_attrs.get("run_dir"),
                           **{k: v for k, v in best.user_attrs.items() if k.startswith("test_")}}
        if set(best.params) == {p.name for p in params}:
            best_config = apply_values(config, params, best.params)
            best_config["method"] = {
                "name": f"{config['method']['name']}-study-best",
                "description": f"Best trial {best.number} of study {study.study_name!r} "
                               f"(validation reward {best.value:.4f}): "
                               + ", ".join(f"{k} = {v}" if isinstance(v, str) else
                                           f"{k} = {v:.6g}" for k, v in best.params.items()),
            }
            config_mod.dump(best_config, folder / "best.toml")
    config_mod.atomic_write_text(folder / "study.json",
                                 json.dumps(summary, indent=2, default=str) + "\n")
    return summary


