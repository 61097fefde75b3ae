"""Training diagnostics of a benchmark: per-epoch curves of every run, from the runs' ``history.csv``.

Each fold of a run writes ``history.csv`` (:class:`~wsigraph.train.selection.EpochLog`): training losses
and their parts, validation metrics and, for models whose patch scores are a distribution, the attention
diagnostics of :data:`~wsigraph.train.lightning_module.ATTENTION_KEYS` (the effective share of a slide's
patches attended, and the attention mass on the ground-truth lesion patches against the share those
patches hold). :func:`collect_histories` stacks them into one table; :func:`plot_diagnostics` draws, per
cohort, one line per model (mean over seeds and folds, band = min..max) of:

* the training CE on the complete graph and the validation loss (memorising: the first falls, the second
  does not),
* validation AUC,
* the effective share of patches attended (1 = uniform attention; a readout that does not look at the
  lesions stays near 1 or collapses to a few patches),
* the lesion enrichment of the attention: mass on lesion patches / their share (1 = no better than
  uniform).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("wsigraph")

PANELS = (
    ("train_ce_full", "training CE (complete graph)"),
    ("val_loss", "validation loss"),
    ("val_auc", "validation AUC"),
    ("val_attn_eff_frac", "effective share of patches attended"),
    ("lesion_enrichment", "attention on lesions / lesion share"),
)


def collect_histories(runs_dir: str | os.PathLike) -> Any:
    """All ``runs/<cohort>/<model>/seed_<s>/fold_<k>/history.csv`` under ``runs_dir`` as one DataFrame
    with columns ``cohort, model, seed, fold`` prepended, plus ``lesion_enrichment`` =
    ``val_attn_lesion_mass / val_lesion_frac`` where both exist. Empty DataFrame when there is none."""
    import pandas as pd

    frames = []
    root = Path(runs_dir)
    for path in sorted(root.glob("*/*/seed_*/fold_*/history.csv")):
        fold_dir = path.parent
        seed_dir = fold_dir.parent
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.EmptyDataError) as e:
            log.warning("skipping unreadable %s: %s", path, e)
            continue
        if df.empty:
            continue
        df.insert(0, "fold", int(fold_dir.name.split("_", 1)[1]))
        df.insert(0, "seed", int(seed_dir.name.split("_", 1)[1]))
        df.insert(0, "model", seed_dir.parent.name)
        df.insert(0, "cohort", seed_dir.parent.parent.name)
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    if {"val_attn_lesion_mass", "val_lesion_frac"} <= set(out.columns):
        out["lesion_enrichment"] = out["val_attn_lesion_mass"] / out["val_lesion_frac"]
    # single-loss models log no parts: their loss is the CE
    out["train_ce_full"] = out.get("train_ce_full", pd.Series(float("nan"), index=out.index)).fillna(out["train_loss"])
    return out


def plot_diagnostics(histories: Any, out_png: str | os.PathLike) -> Path | None:
    """One row of panels (:data:`PANELS`) per cohort, one line per model; written atomically. Returns
    the path, or None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wsigraph.utils.atomic import atomic_path

    if histories is None or len(histories) == 0:
        return None
    panels = [(c, t) for c, t in PANELS if c in histories.columns and histories[c].notna().any()]
    cohorts = sorted(histories["cohort"].unique())
    fig, axes = plt.subplots(len(cohorts), len(panels), figsize=(3.6 * len(panels), 2.9 * len(cohorts)),
                             squeeze=False)
    models = sorted(histories["model"].unique())
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    for r, cohort in enumerate(cohorts):
        sub = histories[histories["cohort"] == cohort]
        for c, (col, title) in enumerate(panels):
            ax = axes[r][c]
            for model in models:
                g = sub[sub["model"] == model].groupby("epoch")[col]
                mean = g.mean()
                if mean.notna().sum() == 0:
                    continue
                ax.plot(mean.index, mean.values, label=model, color=colours[model], lw=1.4)
                ax.fill_between(mean.index, g.min().values, g.max().values, color=colours[model], alpha=0.12,
                                lw=0)
            if col == "lesion_enrichment":
                ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set_title(f"{cohort}: {title}" if c == 0 else title, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[r][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png


def write_diagnostics(output_dir: str | os.PathLike) -> tuple[Path, Path] | None:
    """``diagnostics.csv`` (every epoch of every run) and ``diagnostics.png`` in a benchmark's output
    folder, from its ``runs/``; None when no run has a history yet."""
    from wsigraph.utils.atomic import atomic_path

    out = Path(output_dir)
    hist = collect_histories(out / "runs")
    if len(hist) == 0:
        return None
    csv = out / "diagnostics.csv"
    with atomic_path(csv) as tmp:
        hist.to_csv(tmp, index=False)
    png = plot_diagnostics(hist, out / "diagnostics.png")
    assert png is not None
    return csv, png


__all__ = ["collect_histories", "plot_diagnostics", "write_diagnostics", "PANELS"]
