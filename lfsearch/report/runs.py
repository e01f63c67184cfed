"""A run folder read back for the report: its configuration, epochs.csv, controller.csv,
snr.csv and results.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lfsearch.experiments import run_plan
from lfsearch.search import config as config_mod


# ------------------------------------------------------------------------------------ runs
@dataclass
class Run:
    """What a run folder holds, read once."""

    dir: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    results: dict[str, Any] | None
    epochs: pd.DataFrame
    controller: pd.DataFrame
    specs: list = field(default_factory=list)
    snr: pd.DataFrame = field(default_factory=pd.DataFrame)  # snr.csv (reward signal-to-noise)

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    @property
    def seed(self) -> int:
        return int(self.config["run"]["seed"])

    @property
    def benchmark(self) -> str:
        return self.config["training"]["benchmark"]

    @property
    def kind(self) -> str:
        return self.config["controller"]["kind"]

    @property
    def loss_name(self) -> str:
        return self.config["loss"]["name"]

    @property
    def searched(self) -> bool:
        return self.kind != "fixed" and bool(self.specs)

    @property
    def status(self) -> str:
        return run_plan.run_state(self.dir)

    def final_params(self) -> dict[str, float]:
        """The parameters of the last chosen candidate (the loss the final model trained with)."""
        chosen = (self.results or {}).get("chosen_params") or []
        if chosen:
            return {k: float(v) for k, v in chosen[-1].items()}
        if not self.epochs.empty and "chosen" in self.epochs:
            rows = self.epochs[self.epochs["chosen"].astype(bool)]
            if not rows.empty:
                return {s.name: float(rows.iloc[-1][s.name]) for s in self.specs}
        return {s.name: s.init for s in self.specs}


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def load_run(folder: str | os.PathLike) -> Run:
    """Read a run folder (config.toml, manifest.json, epochs.csv, controller.csv, results.json)."""
    folder = Path(folder)
    if not (folder / "config.toml").is_file():
        raise FileNotFoundError(f"{folder} is not a run folder: it has no config.toml")
    cfg = config_mod.load(folder / "config.toml")
    manifest = json.loads((folder / "manifest.json").read_text()) \
        if (folder / "manifest.json").is_file() else {}
    results = json.loads((folder / "results.json").read_text()) \
        if (folder / "results.json").is_file() else None
    epochs = _read_csv(folder / "epochs.csv")
    if "chosen" in epochs:
        epochs["chosen"] = epochs["chosen"].astype(str).str.lower().isin(["true", "1"])
    return Run(folder, cfg, manifest, results, epochs, _read_csv(folder / "controller.csv"),
               config_mod.param_specs(cfg), _read_csv(folder / "snr.csv"))
