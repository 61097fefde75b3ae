"""Benchmark reports from the run folders: ``runs.csv``, ``localization.csv``, ``table.md``, ``wilcoxon.csv``,
``boxplot_<metric>.png``, ``roc_<cohort>.png`` (all models' test ROC curves). Everything is read back from disk, so the reports of a resumed benchmark are the
same as those of an uninterrupted one."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from wsigraph.bench.config import KNOWN_METRICS, LOWER_IS_BETTER_METRICS, BenchConfig

METRIC_TITLES = {"auc": "AUC", "accuracy": "accuracy", "balanced_accuracy": "balanced acc.", "f1_macro": "F1 (macro)",
                 "kappa": "kappa", "loc_patch_auc": "patch AUC", "loc_patch_ap": "patch AP"}
RUN_COLUMNS = ["cohort", "model", "model_name", "seed", "fold", "n_train", "n_val", "n_test", "selected_epoch",
               "seconds"]


def loc_columns(ks: Sequence[int]) -> list[str]:
    """Run-level localisation columns of ``runs.csv``."""
    cols = ["loc_n_slides", "loc_patch_auc", "loc_patch_ap"]
    cols += [f"loc_lesion_hit@{k}" for k in ks] + [f"loc_precision@{k}" for k in ks]
    return cols


def table_loc_columns(ks: Sequence[int]) -> list[str]:
    """Localisation columns shown in the table."""
    return ["loc_patch_auc"] + [f"loc_lesion_hit@{k}" for k in ks]


def title(col: str) -> str:
    if col.startswith("test_"):
        col = col[5:]
    if col.startswith("loc_lesion_hit@"):
        return "lesions hit@" + col.split("@", 1)[1]
    return METRIC_TITLES.get(col, col)


# ----------------------------------------------------------------------------------------------------
# collecting
# ----------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def seed_folds(out: Path, cfg: BenchConfig, spec: Any) -> dict[int, list[int]]:
    """``{seed: folds}`` of a cohort, from the number of folds in its ``splits/<cohort>.csv`` (with
    vary_synthetic_seed: each seed's ``splits/<cohort>/seed_<s>.csv``; seeds whose splits do not exist yet
    are left out)."""
    import pandas as pd

    def n_folds(path: Path) -> int | None:
        return int(pd.read_csv(path, usecols=["fold"])["fold"].max()) + 1 if path.exists() else None

    if not spec.vary_synthetic_seed:
        n = n_folds(out / "splits" / f"{spec.name}.csv")
        return {} if n is None else spec.seed_folds(cfg.seeds, n)
    folds = {}
    for s in cfg.seeds:
        n = n_folds(out / "splits" / spec.name / f"seed_{int(s)}.csv")
        if n is not None:
            folds[int(s)] = spec.seed_folds(cfg.seeds, n)[int(s)]
    return folds


def _aggregate_loc(path: Path, ks: Sequence[int]) -> tuple[dict[str, float], Any]:
    """(run-level loc columns, per-slide DataFrame) of a fold's ``localization_test.csv``."""
    import pandas as pd

    from wsigraph.train.localization import aggregate_localization

    df = pd.read_csv(path)
    records = [{k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))}
               for r in df.to_dict("records")]
    agg = aggregate_localization(records)
    row = {"loc_n_slides": agg.get("n_slides", 0), "loc_patch_auc": agg.get("auc", float("nan")),
           "loc_patch_ap": agg.get("ap", float("nan"))}
    for k in ks:
        row[f"loc_lesion_hit@{k}"] = agg.get(f"lesion_hit@{k}", float("nan"))
        row[f"loc_precision@{k}"] = agg.get(f"precision@{k}", float("nan"))
    return row, df


def collect_runs(cfg: BenchConfig, out: Path) -> tuple[Any, Any]:
    """(runs DataFrame, per-slide localisation DataFrame) of every finished fold of the config's runs."""
    import pandas as pd

    rows, loc_frames = [], []
    lcols = loc_columns(cfg.localization_k)
    for spec in cfg.cohorts:
        folds = seed_folds(out, cfg, spec)
        for model in cfg.models:
            for seed in cfg.seeds:
                run_dir = out / "runs" / spec.name / str(model.label) / f"seed_{seed}"
                for k in folds.get(int(seed), []):
                    fold_dir = run_dir / f"fold_{k}"
                    res = _read_json(fold_dir / "results.json")
                    if res is None:
                        continue
                    timing = _read_json(fold_dir / "bench_time.json") or {}
                    n = res.get("n_slides", {})
                    row: dict[str, Any] = {
                        "cohort": spec.name, "model": model.label, "model_name": model.name, "seed": int(seed),
                        "fold": int(k), "n_train": n.get("train"), "n_val": n.get("val"), "n_test": n.get("test"),
                        "selected_epoch": res.get("selected_epoch"), "seconds": timing.get("seconds", np.nan),
                    }
                    for part in ("test", "val"):
                        m = (res.get("metrics") or {}).get(part) or {}
                        for name in KNOWN_METRICS:
                            v = m.get(name)
                            row[f"{part}_{name}"] = np.nan if v is None else float(v)
                    row.update({c: np.nan for c in lcols})
                    loc_path = fold_dir / "localization_test.csv"
                    if cfg.localization and loc_path.exists():
                        agg, per_slide = _aggregate_loc(loc_path, cfg.localization_k)
                        row.update(agg)
                        per_slide.insert(0, "fold", int(k))
                        per_slide.insert(0, "seed", int(seed))
                        per_slide.insert(0, "model", model.label)
                        per_slide.insert(0, "cohort", spec.name)
                        loc_frames.append(per_slide)
                    rows.append(row)
    metric_cols = [f"{p}_{m}" for p in ("test", "val") for m in KNOWN_METRICS]
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS + metric_cols + lcols)
    loc = pd.concat(loc_frames, ignore_index=True) if loc_frames else pd.DataFrame(
        columns=["cohort", "model", "seed", "fold", "slide_id"])
    return runs, loc


# ----------------------------------------------------------------------------------------------------
# table
# ----------------------------------------------------------------------------------------------------


def _fmt(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}" if np.isfinite(std) else f"{mean:.3f}"


def summary_table(runs: Any, columns: Sequence[str], models: Sequence[str]) -> Any:
    """Per cohort and model: ``n`` runs and, per column, mean and std (ddof=1) over runs (NaN left out)."""
    import pandas as pd

    rows = []
    for cohort, part in runs.groupby("cohort", sort=False):
        for model in [m for m in models if m in set(part["model"])]:
            sub = part[part["model"] == model]
            row: dict[str, Any] = {"cohort": cohort, "model": model, "n": len(sub)}
            for col in columns:
                v = sub[col].to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
                row[f"{col}_mean"] = float(v.mean()) if v.size else np.nan
                row[f"{col}_std"] = float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(runs: Any, columns: Sequence[str], models: Sequence[str],
                   cohort_notes: Mapping[str, str] | None = None, heading: str = "###") -> str:
    """Markdown: one table per cohort, a row per model, ``mean ± std`` per column, the best mean in bold
    (every model tied at the shown precision); columns with no value in a cohort are left out."""
    summ = summary_table(runs, columns, models)
    lines: list[str] = []
    for cohort, part in summ.groupby("cohort", sort=False):
        cols = [c for c in columns if np.isfinite(part[f"{c}_mean"].to_numpy(dtype=np.float64)).any()]
        note = (cohort_notes or {}).get(cohort, "")
        lines += [f"{heading} {cohort}", ""] + ([note, ""] if note else [])
        lines.append("| model | runs | " + " | ".join(title(c) for c in cols) + " |")
        lines.append("|---|---:|" + "---:|" * len(cols))
        best = {}
        for c in cols:
            vals = np.round(part[f"{c}_mean"].to_numpy(dtype=np.float64), 3)
            lower = c.removeprefix("test_") in LOWER_IS_BETTER_METRICS
            best[c] = (np.nanmin(vals) if lower else np.nanmax(vals)) if np.isfinite(vals).any() else None
        for _, r in part.iterrows():
            cells = []
            for c in cols:
                text = _fmt(r[f"{c}_mean"], r[f"{c}_std"])
                if best[c] is not None and np.isfinite(r[f"{c}_mean"]) and round(r[f"{c}_mean"], 3) == best[c]:
                    text = f"**{text}**"
                cells.append(text)
            lines.append(f"| {r['model']} | {int(r['n'])} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def markdown_wilcoxon(wil: Any, reference: str, heading: str = "###") -> str:
    """Markdown: per cohort, a row per model and a column per metric: mean difference (reference minus
    model) and two-sided p."""
    if wil.empty:
        return ""
    lines = [f"{heading} Paired tests: {reference} vs each model", "",
             f"Wilcoxon signed-rank, two-sided, paired over seed x fold; cell = mean difference ({reference} "
             "minus model) and p-value.", ""]
    metrics = list(dict.fromkeys(wil["metric"]))
    for cohort, part in wil.groupby("cohort", sort=False):
        lines += [f"**{cohort}**", "", "| model | pairs | " + " | ".join(title(m) for m in metrics) + " |",
                  "|---|---:|" + "---:|" * len(metrics)]
        for model, rows in part.groupby("model", sort=False):
            cells = []
            for m in metrics:
                r = rows[rows["metric"] == m]
                if r.empty or not np.isfinite(r["mean_diff"].iloc[0]):
                    cells.append("n/a")
                    continue
                r = r.iloc[0]
                p = r["p_value"]
                ptxt = "n/a" if not np.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")
                cells.append(f"{r['mean_diff']:+.3f} (p {ptxt})")
            lines.append(f"| {model} | {int(rows['n'].max())} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------


def boxplot(runs: Any, column: str, models: Sequence[str], path: str | os.PathLike) -> Path | None:
    """One panel per cohort, one box per model (values over seed x fold, points overlaid) -> PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from wsigraph.utils.atomic import atomic_path

    cohorts = [c for c in dict.fromkeys(runs["cohort"]) if np.isfinite(
        runs.loc[runs["cohort"] == c, column].to_numpy(dtype=np.float64)).any()]
    if not cohorts:
        return None
    fig, axes = plt.subplots(1, len(cohorts), figsize=(max(4.0, 0.7 * len(models) + 1.5) * len(cohorts), 4.0),
                             squeeze=False)
    rng = np.random.default_rng(0)
    for ax, cohort in zip(axes[0], cohorts):
        part = runs[runs["cohort"] == cohort]
        names = [m for m in models if m in set(part["model"])]
        data = []
        for m in names:
            v = part.loc[part["model"] == m, column].to_numpy(dtype=np.float64)
            data.append(v[np.isfinite(v)])
        pos = np.arange(1, len(names) + 1)
        ax.boxplot([d if d.size else [np.nan] for d in data], positions=pos, widths=0.6, showfliers=False)
        for x, d in zip(pos, data):
            ax.scatter(x + rng.uniform(-0.15, 0.15, d.size), d, s=10, alpha=0.6, color="tab:blue", zorder=3)
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_title(cohort)
        ax.set_ylabel(title(column))
        if column.endswith(("auc", "accuracy")):
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------------------------------
# all reports
# ----------------------------------------------------------------------------------------------------


def cohort_notes(cfg: BenchConfig, runs: Any) -> dict[str, str]:
    notes = {}
    for spec in cfg.cohorts:
        part = runs[runs["cohort"] == spec.name]
        if part.empty:
            continue
        n = {p: int(part[f"n_{p}"].iloc[0]) for p in ("train", "val", "test")}
        syn = spec.synthetic or {}
        kind = f"synthetic ({syn.get('mode', 'lesion')} mode)" if spec.synthetic is not None else str(spec.manifest)
        if spec.vary_synthetic_seed:
            kind += f", a cohort per seed (generator seed {spec.base_synthetic_seed()} + run seed)"
        first = int(part["fold"].iloc[0])
        notes[spec.name] = (f"{kind}; {part['fold'].nunique()} fold(s) x {part['seed'].nunique()} seed(s); "
                            f"train/val/test {n['train']}/{n['val']}/{n['test']} slides (fold {first})")
    return notes


def model_roc_plots(cfg: BenchConfig, out: Path) -> list[Path]:
    """``roc_<cohort>.png``: every model's test ROC on one cohort (mean over its finished runs, with the
    runs' spread as the band), read from the runs' ``predictions_test.csv``. Two-class cohorts only."""
    import pandas as pd

    from wsigraph.viz.curves import plot_model_rocs

    written: list[Path] = []
    for spec in cfg.cohorts:
        folds = seed_folds(out, cfg, spec)
        curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for model in cfg.models:
            for seed in cfg.seeds:
                for k in folds.get(int(seed), []):
                    fold_dir = out / "runs" / spec.name / str(model.label) / f"seed_{seed}" / f"fold_{k}"
                    res = _read_json(fold_dir / "results.json")
                    pred_path = fold_dir / "predictions_test.csv"
                    if (res is None or not pred_path.exists() or len(res.get("classes") or []) != 2
                            or res.get("task", "classification") != "classification"):
                        continue
                    classes = [str(c) for c in res["classes"]]
                    df = pd.read_csv(pred_path, dtype={"label": str})
                    df = df[df["label"].isin(classes)]
                    y = (df["label"] == classes[1]).to_numpy(dtype=np.int64)
                    if 0 < y.sum() < len(y):
                        curves.setdefault(str(model.label), []).append((y, df[f"prob_{classes[1]}"].to_numpy()))
        if curves:
            written.append(plot_model_rocs(curves, out / f"roc_{spec.name}.png", title=spec.name))
    return written


def write_reports(cfg: BenchConfig, out: Path, *, wall_seconds: float | None = None,
                  n_trained: int | None = None) -> Any:
    """Write every report into ``out`` from the finished runs; returns the runs DataFrame."""
    from wsigraph.bench.stats import wilcoxon_table
    from wsigraph.utils.atomic import atomic_path, atomic_write_json, atomic_write_text

    runs, loc = collect_runs(cfg, out)
    models = [str(m.label) for m in cfg.models]
    with atomic_path(out / "runs.csv") as tmp:
        runs.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out / "localization.csv") as tmp:
        loc.to_csv(tmp, index=False, float_format="%.6g")
    metric_cols = [f"test_{m}" for m in cfg.metrics]
    loc_cols = table_loc_columns(cfg.localization_k) if cfg.localization else []
    wil = wilcoxon_table(runs, cfg.reference, metric_cols + loc_cols[:1])
    with atomic_path(out / "wilcoxon.csv") as tmp:
        wil.to_csv(tmp, index=False, float_format="%.6g")
    for col in metric_cols + loc_cols[:1]:
        if col in runs.columns and len(runs):
            boxplot(runs, col, models, out / f"boxplot_{col.removeprefix('test_')}.png")
    model_roc_plots(cfg, out)
    from wsigraph.bench.diagnostics import write_diagnostics

    write_diagnostics(out)  # diagnostics.csv / .png: per-epoch losses and attention of every run
    text = ["## Test metrics (mean ± std over seeds x folds; best in bold)", "",
            markdown_table(runs, metric_cols + loc_cols, models, cohort_notes(cfg, runs)),
            markdown_wilcoxon(wil, cfg.reference)]
    atomic_write_text(out / "table.md", "\n".join(text).rstrip() + "\n")
    total = float(np.nansum(runs["seconds"].to_numpy(dtype=np.float64))) if len(runs) else 0.0
    old = _read_json(out / "bench_info.json") or {}
    info = {
        "wall_seconds_last_invocation": wall_seconds, "folds_trained_last_invocation": n_trained,
        # the last invocation that trained something (a rerun that only rebuilds the reports keeps it)
        "wall_seconds_last_training": old.get("wall_seconds_last_training"),
        "folds_trained_last_training": old.get("folds_trained_last_training"),
        "sum_fold_seconds": total, "n_fold_runs": int(len(runs)), "cpu_count": os.cpu_count(),
        "torch_threads": cfg.torch_threads, "workers": cfg.workers,
    }
    if n_trained:
        info["wall_seconds_last_training"], info["folds_trained_last_training"] = wall_seconds, n_trained
    atomic_write_json(out / "bench_info.json", info)
    return runs


__all__ = ["collect_runs", "model_roc_plots", "write_reports", "markdown_table", "markdown_wilcoxon", "summary_table", "boxplot",
           "loc_columns"]
