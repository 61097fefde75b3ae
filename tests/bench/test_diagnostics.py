"""Benchmark diagnostics: per-epoch histories of every run stacked and plotted."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsigraph.bench.diagnostics import collect_histories, write_diagnostics


def write_history(path: Path, epochs: int, eff: float | None, mass: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = {"epoch": np.arange(1, epochs + 1), "train_loss": np.linspace(1.0, 0.2, epochs),
            "val_loss": np.linspace(0.7, 0.6, epochs), "val_auc": np.linspace(0.5, 0.8, epochs)}
    if eff is not None:
        rows.update(train_ce_full=np.linspace(0.7, 0.1, epochs), val_attn_eff_frac=np.full(epochs, eff),
                    val_attn_lesion_mass=np.full(epochs, mass), val_lesion_frac=np.full(epochs, 0.1))
    pd.DataFrame(rows).to_csv(path, index=False)


def test_collect_and_plot(tmp_path):
    runs = tmp_path / "runs"
    write_history(runs / "coh" / "srmil" / "seed_0" / "fold_0" / "history.csv", 4, 0.9, 0.3)
    write_history(runs / "coh" / "srmil" / "seed_1" / "fold_1" / "history.csv", 4, 0.5, 0.5)
    write_history(runs / "coh" / "abmil" / "seed_0" / "fold_0" / "history.csv", 3, None, None)
    (runs / "coh" / "mean" / "seed_0" / "fold_0").mkdir(parents=True)
    (runs / "coh" / "mean" / "seed_0" / "fold_0" / "history.csv").write_text("")  # unreadable: skipped
    hist = collect_histories(runs)
    assert len(hist) == 11 and set(hist["model"]) == {"srmil", "abmil"}
    s1 = hist[(hist["model"] == "srmil") & (hist["seed"] == 1)]
    assert (s1["fold"] == 1).all() and s1["lesion_enrichment"].to_numpy() == pytest.approx([5.0] * 4)
    ab = hist[hist["model"] == "abmil"]
    assert ab["train_ce_full"].to_numpy() == pytest.approx(ab["train_loss"].to_numpy())  # one-loss model
    assert ab["lesion_enrichment"].isna().all()
    csv, png = write_diagnostics(tmp_path)
    assert pd.read_csv(csv).shape[0] == 11
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_nothing_to_collect(tmp_path):
    assert len(collect_histories(tmp_path / "runs")) == 0
    assert write_diagnostics(tmp_path) is None and not (tmp_path / "diagnostics.csv").exists()
