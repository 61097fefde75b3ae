"""``run_benchmark``: every model on every cohort over several seeds, on identical splits, resumable.

Output folder (``cfg.output_dir``)::

    bench_config.yaml                    the configuration (a rerun with a different one is refused)
    splits/<cohort>.csv                  the cohort's splits, made once (split_seed) and used by every run
    manifests/<cohort>.csv               only with missing_features=skip: the manifest without the slides
                                         that have no feature file
    graph_cache/<cohort>/                spatial graphs, built once per slide and shared by the runs
    cohorts/<cohort>/                    synthetic cohorts (default root), generated when missing
    cohorts/<cohort>/seed_<s>/           with vary_synthetic_seed: the cohort of run seed s (synthetic seed
                                         base + s); its splits, manifest and graphs are kept under
                                         splits/<cohort>/seed_<s>.csv, manifests/..., graph_cache/<cohort>/seed_<s>/
    runs/<cohort>/<model>/seed_<s>/      one train_experiment output folder per run (finished folds skipped)
        fold_<k>/localization_test.csv   per test slide: patch AUC, AP, lesion_hit@k, precision@k
        fold_<k>/bench_time.json         seconds spent training and evaluating the fold
    runs.csv                             one row per cohort x model x seed x fold: every metric
    localization.csv                     one row per test slide of every run (cohorts with patch labels)
    table.md                             mean +- std per model and cohort, best in bold; paired tests
    wilcoxon.csv                         reference model vs each other model, paired over seed x fold
    boxplot_<metric>.png                 one box per model, one panel per cohort
    superseded/<time>/                   what --force-new-config moved aside (nothing is deleted)

Resume: a finished fold (its ``results.json``) is never retrained; its localisation file is reused. A
results folder holding another configuration is refused with the differing keys, unless
``force_new_config``. Growing a benchmark (more seeds, models or cohorts) reuses the finished runs.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from wsigraph.config import dump_config, load_config, save_config
from wsigraph.errors import ConfigError, InputError
from wsigraph.bench.config import BenchConfig, CohortSpec, ModelSpec, check_models, resolve_paths

log = logging.getLogger("wsigraph")

CONFIG_NAME = "bench_config.yaml"
#: cohort keys that gate a run but do not change its results (a resumed bench may differ in them)
COHORT_FREE_KEYS = frozenset({"allow_random_features"})
SPLIT_PARTS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: a model on a cohort with one training seed (all its folds)."""

    cohort: str
    model: str  # the model label
    seed: int

    def dir(self, out: Path) -> Path:
        return out / "runs" / self.cohort / self.model / f"seed_{self.seed}"


# ----------------------------------------------------------------------------------------------------
# configuration checks
# ----------------------------------------------------------------------------------------------------


def _identity(dumped: dict) -> dict:
    """The parts of a dumped bench config that decide the results of its runs, keyed by name/label."""
    from wsigraph.train.runner import RESUME_FREE_KEYS

    train_free = {k.split(".", 1)[1] for k in RESUME_FREE_KEYS if k.startswith("train.")} | {"seed", "progress_bar"}
    return {
        "train": {k: v for k, v in (dumped.get("train") or {}).items() if k not in train_free},
        "graph": dumped.get("graph"),
        "cohorts": {c.get("name"): {k: v for k, v in c.items() if k not in COHORT_FREE_KEYS}
                    for c in dumped.get("cohorts") or []},
        "models": {m.get("label") or m.get("name"): m for m in dumped.get("models") or []},
    }


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [(prefix, a, b)]


def _relative_to_output(dumped: dict) -> dict:
    """The dumped config with paths inside its output_dir written as ``<output_dir>/...`` (a results folder
    that was moved still holds the same benchmark)."""
    root = str(dumped.get("output_dir") or "")

    def sub(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [sub(x) for x in v]
        if isinstance(v, str) and root and (v == root or v.startswith(root.rstrip("/") + "/")):
            return "<output_dir>" + v[len(root.rstrip("/")):]
        return v

    return {k: (sub(v) if k != "output_dir" else v) for k, v in dumped.items()}


def config_differences(old: dict, new: dict) -> list[str]:
    """``"key: old -> new"`` for every result-deciding key that differs between two dumped bench configs.

    Compared: ``train`` (except the keys that do not change results: seed, progress bar, devices,
    bootstrap, ...), ``graph``, and each cohort and model present in both configs (matched by name /
    label). Not compared: seeds, models or cohorts added or removed (growing a benchmark reuses its
    finished runs), and the report-only keys (reference, metrics, localization_k, workers, ...).
    Paths inside each config's output_dir are compared relative to it.
    """
    a, b = _identity(_relative_to_output(old)), _identity(_relative_to_output(new))
    diffs = _diff(a["train"], b["train"], "train") + _diff(a["graph"], b["graph"], "graph")
    for section in ("cohorts", "models"):
        for name in a[section]:
            if name in b[section]:
                diffs += _diff(a[section][name], b[section][name], f"{section}[{name}]")
    return [f"{k}: {x!r} -> {y!r}" for k, x, y in diffs]


def _check_saved_config(cfg: BenchConfig, out: Path) -> tuple[list[str], dict | None]:
    """(differences, the saved config dumped) of ``<out>/bench_config.yaml`` against ``cfg``."""
    path = out / CONFIG_NAME
    if not path.exists():
        return [], None
    try:
        old = dump_config(load_config(path, BenchConfig))
    except InputError as e:
        raise InputError(f"{path}: the results folder holds a bench config that cannot be read ({e}); "
                         "use another output_dir, or --force-new-config to move it aside") from e
    return config_differences(old, dump_config(cfg)), old


class _Superseded:
    """Moves files of an older configuration into ``<out>/superseded/<time>/`` (created on first use)."""

    def __init__(self, out: Path):
        self.out = out
        self.root: Path | None = None

    def move(self, path: Path) -> None:
        if not path.exists():
            return
        if self.root is None:
            self.root = self.out / "superseded" / time.strftime("%Y%m%d-%H%M%S")
            n = 1
            while self.root.exists():
                n += 1
                self.root = self.out / "superseded" / f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
        target = self.root / path.relative_to(self.out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(target))
        log.warning("bench: moved %s (another configuration) to %s", path, target)


# ----------------------------------------------------------------------------------------------------
# cohorts
# ----------------------------------------------------------------------------------------------------


def prepare_synthetic(spec: CohortSpec, mover: _Superseded | None = None) -> None:
    """Generate the synthetic cohort into ``spec.root`` when the folder does not exist; otherwise check it
    holds a cohort generated with the same parameters (ConfigError naming the differing ones)."""
    from wsigraph.data.synthetic import SyntheticConfig, make_synthetic_cohort

    assert spec.synthetic is not None and spec.root is not None
    params = dict(spec.synthetic)
    try:
        want = SyntheticConfig(**params).to_dict()
    except TypeError as e:
        valid = sorted(f.name for f in dataclasses.fields(SyntheticConfig))
        raise ConfigError(f"cohort {spec.name!r}: synthetic: {e}; valid parameters: {', '.join(valid)}") from e
    root = Path(spec.root)
    if root.exists():
        info = root / "synthetic.json"
        movable = mover is not None and root.resolve().is_relative_to(Path(mover.out).resolve())
        if not info.exists():
            if not movable:  # e.g. the seed folders of a cohort that had vary_synthetic_seed on
                raise InputError(f"cohort {spec.name!r}: {root} exists but holds no synthetic cohort (no "
                                 "synthetic.json); remove it or set another root")
            mover.move(root)  # type: ignore[union-attr]
        else:
            with open(info, encoding="utf-8") as f:
                have = json.load(f)
            # a parameter added to the generator after the cohort was made had its default value then
            have = {**SyntheticConfig().to_dict(), **have}
            diffs = [f"{k}: {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v]
            if not diffs:
                return
            if not movable:
                raise InputError(f"cohort {spec.name!r}: {root} holds a synthetic cohort generated with other "
                                 f"parameters ({'; '.join(diffs)}); remove it or set another root")
            mover.move(root)  # type: ignore[union-attr]
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    log.info("bench: generating synthetic cohort %r in %s", spec.name, root)
    make_synthetic_cohort(tmp, **params)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)  # the cohort appears complete or not at all


def _check_varied_root(spec: CohortSpec, mover: _Superseded | None) -> None:
    """A cohort with vary_synthetic_seed keeps one cohort per seed in ``<root>/seed_<s>``: a single cohort
    generated in ``root`` itself (the config had vary_synthetic_seed off) is moved aside by
    ``force_new_config`` (when it lies in the results folder), else refused."""
    root = Path(str(spec.root))
    if not (root / "synthetic.json").exists():
        return
    if mover is not None and root.resolve().is_relative_to(Path(mover.out).resolve()):
        mover.move(root)
        return
    raise InputError(f"cohort {spec.name!r}: {root} holds one synthetic cohort, but vary_synthetic_seed keeps one "
                     "per seed in <root>/seed_<s>; remove it or set another root")


def load_cohort(spec: CohortSpec, missing: str, out: Path, stem: str | None = None) -> tuple[Any, str]:
    """(Cohort, manifest path for the runs). Slides without a feature file: InputError listing them
    (``missing="raise"``), or left out with a warning and a filtered manifest
    ``<out>/manifests/<stem>.csv`` (stem: the cohort name, or ``<name>/seed_<s>``)."""
    from wsigraph.tasks.cohort import build_task, read_task_cohort

    try:
        cohort = read_task_cohort(build_task(spec), spec.manifest, feature_dir=spec.feature_dir,
                                  classes=spec.classes, on_missing_features=missing)
    except InputError as e:
        hint = (" (set missing_features: skip to leave these slides out)"
                if "no feature file" in str(e) and missing == "raise" else "")
        raise type(e)(f"cohort {spec.name!r}: {e}{hint}") from e
    manifest = str(spec.manifest)
    if getattr(cohort, "missing_features", None):
        manifest = str(out / "manifests" / f"{stem or spec.name}.csv")
        cohort.to_csv(manifest)
        log.warning("cohort %r: %d slide(s) without a feature file left out (missing_features: skip): %s",
                    spec.name, len(cohort.missing_features), ", ".join(cohort.missing_features[:10]))
    return cohort, manifest


def _expected_manifest(spec: CohortSpec, out: Path, stem: str | None = None) -> str:
    """The manifest the runs of a cohort use: the filtered one when an earlier run skipped slides."""
    filtered = out / "manifests" / f"{stem or spec.name}.csv"
    return str(filtered) if filtered.exists() else str(spec.manifest)


def cohort_splits(spec: CohortSpec, cohort: Any, out: Path, stem: str | None = None) -> tuple[Any, Path]:
    """The cohort's splits, made once into ``<out>/splits/<stem>.csv`` (stem: the cohort name, or
    ``<name>/seed_<s>``) and read back afterwards."""
    from wsigraph.data.splits import make_splits, read_splits_csv
    from wsigraph.train.runner import check_split_classes

    path = out / "splits" / f"{stem or spec.name}.csv"
    if path.exists():
        splits = read_splits_csv(path, cohort)
    else:
        if spec.split_mode == "csv":
            splits = read_splits_csv(spec.splits_csv, cohort)  # type: ignore[arg-type]
        elif spec.split_mode == "manifest":
            if not cohort.has_split_column:
                raise InputError(f"cohort {spec.name!r}: {spec.manifest}: split_mode is 'manifest' but the manifest "
                                 "has no 'split' column")
            splits = make_splits(cohort, n_folds=spec.n_folds, val_frac=spec.val_frac, seed=spec.split_seed)
        else:
            splits = make_splits(cohort, n_folds=spec.n_folds, val_frac=spec.val_frac, seed=spec.split_seed,
                                 use_manifest_split=(spec.split_mode == "auto"))
        splits.write_csv(path)
    check_split_classes(splits, cohort, f"cohort {spec.name!r}")
    if spec.folds is not None:
        bad = [k for k in spec.folds if k >= len(splits.folds)]
        if bad:
            raise ConfigError(f"cohort {spec.name!r}: folds {bad} do not exist; the splits have folds "
                              f"0..{len(splits.folds) - 1}")
    return splits, path


def has_patch_labels(path: str | os.PathLike) -> bool:
    """True when the feature file holds patch-level ground truth (``patch_labels``)."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            return "patch_labels" in f
    from wsigraph.data.features import read_features

    return read_features(path, validate=False).patch_labels is not None


# ----------------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------------


def experiment_config(cfg: BenchConfig, spec: CohortSpec, model: ModelSpec, seed: int, manifest: str,
                      splits_csv: Path, out: Path, stem: str | None = None) -> Any:
    """The :class:`~wsigraph.train.config.ExperimentConfig` of one run (splits from the cohort's file;
    graphs cached in ``<out>/graph_cache/<stem>``, stem defaulting to the cohort name)."""
    from wsigraph.train.config import DataConfig, ExperimentConfig, ModelConfig

    data = DataConfig(manifest=manifest, feature_dir=spec.feature_dir, classes=spec.classes, ordinal=spec.ordinal,
                      task=spec.task, survival=copy.deepcopy(spec.survival), regression=copy.deepcopy(spec.regression),
                      split_mode="csv", splits_csv=str(splits_csv), n_folds=max(spec.n_folds, 1),
                      val_frac=spec.val_frac, split_seed=spec.split_seed,
                      allow_random_features=spec.allow_random_features,
                      cache_dir=str(out / "graph_cache" / (stem or spec.name)) if cfg.cache_graphs else None)
    train = dataclasses.replace(model.train_config(cfg.train, seed), progress_bar=False)
    return ExperimentConfig(data=data, graph=copy.deepcopy(cfg.graph),
                            model=ModelConfig(name=model.name, params=dict(model.params)), train=train,
                            output_dir=str(RunSpec(spec.name, str(model.label), seed).dir(out)))


def run_differences(exp: Any, run_dir: Path) -> list[str]:
    """Differences between a run folder's saved ``config.yaml`` and ``exp`` (keys train_experiment checks)."""
    from wsigraph.train.config import ExperimentConfig
    from wsigraph.train.runner import RESUME_FREE_KEYS, with_resolved_model

    path = run_dir / "config.yaml"
    if not path.exists():
        return []
    try:
        old = dump_config(with_resolved_model(load_config(path, ExperimentConfig)))
    except InputError as e:
        return [f"config.yaml unreadable ({e})"]
    new = dump_config(with_resolved_model(exp))  # model defaults written out on both sides, as the runner
    return [f"{k}: {a!r} -> {b!r}" for k, a, b in _diff(old, new) if k not in RESUME_FREE_KEYS]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block (nothing when ``n`` is None)."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_one(exp: Any, folds: Sequence[int], loc_k: Sequence[int] | None, loc_slides: Sequence[str] | None,
            threads: int | None = None) -> dict[int, bool]:
    """Train (or resume) the given folds of one run, then score its localisation. Returns
    ``{fold: trained now}``. Runs in the main process or in a worker process (arguments are picklable)."""
    from wsigraph.train.runner import train_experiment

    out = Path(exp.output_dir)
    trained: dict[int, bool] = {}
    with torch_threads(threads):
        for k in folds:
            fold_dir = out / f"fold_{k}"
            done = (fold_dir / "results.json").exists()
            t0 = time.perf_counter()
            train_experiment(exp, folds=[k])  # one fold per call: its own timing (the summary covers all)
            trained[k] = not done
            if not done:
                from wsigraph.utils.atomic import atomic_write_json

                atomic_write_json(fold_dir / "bench_time.json", {"seconds": time.perf_counter() - t0})
            if loc_k:
                fold_localization(exp, k, loc_k, loc_slides)
    return trained


def _run_in_worker(args: tuple) -> tuple[str, dict[int, bool]]:
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    exp_dict, folds, loc_k, loc_slides, threads = args
    from wsigraph.train.config import ExperimentConfig

    exp = load_config(exp_dict, ExperimentConfig)
    return exp.output_dir, run_one(exp, folds, loc_k, loc_slides, threads)


# ----------------------------------------------------------------------------------------------------
# localisation
# ----------------------------------------------------------------------------------------------------


def _loc_columns(ks: Sequence[int]) -> list[str]:
    cols = ["auc", "ap"]
    for k in ks:
        cols += [f"lesion_hit@{k}", f"n_lesions_hit@{k}", f"precision@{k}"]
    return cols


def fold_localization(exp: Any, k: int, ks: Sequence[int], slides: Sequence[str] | None = None) -> Path:
    """Per-patch scores of fold ``k``'s test slides (its ``best.ckpt``) against their patch labels ->
    ``fold_<k>/localization_test.csv`` (reused when it has every ``k``). A model without per-patch scores
    gets NaN metrics."""
    import pandas as pd
    import torch

    from wsigraph.data.splits import read_splits_csv
    from wsigraph.train.checkpoint import load_checkpoint
    from wsigraph.train.inference import make_dataset, make_loader
    from wsigraph.train.localization import localization_metrics
    from wsigraph.train.runner import load_cohort as runner_cohort
    from wsigraph.utils.device import resolve_device
    from wsigraph.utils.atomic import atomic_path

    fold_dir = Path(exp.output_dir) / f"fold_{k}"
    path = fold_dir / "localization_test.csv"
    cols = _loc_columns(ks)
    if path.exists():
        have = pd.read_csv(path, nrows=0).columns
        if all(c in have for c in cols):
            return path
    cohort = runner_cohort(exp)
    test = read_splits_csv(exp.data.splits_csv, cohort).folds[k].get("test", [])
    if slides is not None:
        keep = set(slides)
        test = [s for s in test if s in keep]
    sub = cohort.subset(test)
    device = resolve_device("cpu" if exp.train.accelerator == "cpu" else "auto")
    ckpt = load_checkpoint(fold_dir / "best.ckpt")
    model = ckpt.build_model(device)
    model.eval()
    ds = make_dataset(sub.feature_paths, sub.slide_ids, sub.label_indices, exp.graph, exp.data.cache_dir)
    rows = []
    with torch.no_grad():
        for i, batch in enumerate(make_loader(ds)):
            sid = sub.slide_ids[i]
            row: dict[str, Any] = {"slide_id": sid, "label": sub.table["label"].iloc[i]}
            labels = getattr(batch, "patch_labels", None)
            if labels is None:
                continue
            out = model(batch.to(device))
            pl = labels.view(-1).cpu().numpy()
            if out.patch_scores is None or getattr(batch, "pos", None) is None:  # no scores, or no coordinates
                row.update({"n_patches": int(pl.size), "n_positive": int((pl > 0).sum())})
                row.update({c: float("nan") for c in cols})
            else:
                row.update(localization_metrics(out.patch_scores.float().view(-1).cpu().numpy(), pl,
                                                batch.pos.cpu().numpy().astype(np.float64), 1.0, k=list(ks),
                                                where=f"{exp.output_dir}: slide {sid!r}"))
            rows.append(row)
    df = pd.DataFrame(rows, columns=["slide_id", "label", "n_patches", "n_positive", "n_lesions", *cols])
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return path


# ----------------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------------


def _select(names: Sequence[str] | None, valid: Sequence[str], what: str) -> list[str]:
    if names is None:
        return list(valid)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ConfigError(f"{what} {unknown} not in the config; {what} there: {', '.join(valid)}")
    return [v for v in valid if v in set(names)]


def run_benchmark(cfg: BenchConfig, progress: bool = True, *, only_cohorts: Sequence[str] | None = None,
                  only_models: Sequence[str] | None = None, force_new_config: bool = False,
                  base_dir: str | os.PathLike | None = None) -> Any:
    """Run (or resume) the benchmark and write its reports (see the module docstring).

    Args:
        cfg: the benchmark; relative paths are resolved against ``base_dir`` (default: the current folder).
        progress: a progress bar over the runs.
        only_cohorts, only_models: run only these cohort names / model labels (the reports still cover
            every finished run of the config).
        force_new_config: accept a config that differs from the one the results folder holds: the runs and
            files of the old one that conflict are moved to ``<output_dir>/superseded/<time>/``.

    Returns:
        pandas DataFrame, one row per cohort x model x seed x fold of the config that has finished:
        ``cohort, model, model_name, seed, fold, n_train, n_val, n_test, selected_epoch, seconds``,
        ``test_<metric>``/``val_<metric>`` and ``loc_*`` (NaN where the cohort has no patch labels).

    Raises:
        ConfigError: unknown model name or parameter (before anything runs), a results folder holding
            another config (naming the differing keys), unknown names in ``only_*``.
        InputError: missing feature files (listing the slides), bad manifests or splits.
    """
    from tqdm.auto import tqdm

    from wsigraph.bench.report import write_reports

    cfg = resolve_paths(copy.deepcopy(cfg), base_dir)
    check_models(cfg)
    out = Path(cfg.output_dir)
    cohorts = _select(only_cohorts, [c.name for c in cfg.cohorts], "cohorts")
    labels = _select(only_models, [str(m.label) for m in cfg.models], "models")
    t_start = time.perf_counter()

    mover = _Superseded(out) if force_new_config else None
    diffs, _ = _check_saved_config(cfg, out)
    if diffs and not force_new_config:
        raise ConfigError(f"{out / CONFIG_NAME}: the results folder holds a benchmark with another configuration "
                          f"({'; '.join(diffs[:8])}{'; ...' if len(diffs) > 8 else ''}); use another output_dir, "
                          "or --force-new-config (force_new_config=True) to move the conflicting runs aside")
    if diffs and mover is not None:
        changed = {d.split(":", 1)[0].split(".", 1)[0] for d in diffs}
        for spec in cfg.cohorts:  # a changed cohort: its splits (and filtered manifests) are made again
            if f"cohorts[{spec.name}]" in changed:
                for folder in ("splits", "manifests"):
                    mover.move(out / folder / f"{spec.name}.csv")
                    mover.move(out / folder / spec.name)  # the per-seed files of vary_synthetic_seed
        mover.move(out / CONFIG_NAME)  # runs that conflict are moved below, one by one

    # cohorts: generate, read, split -- every input error surfaces before any training. A cohort with
    # vary_synthetic_seed is one cohort per run seed, keyed (name, seed); the others are keyed (name, None).
    prepared: dict[tuple[str, int | None], dict[str, Any]] = {}
    for spec in cfg.cohorts:
        if spec.name not in cohorts:
            continue
        if spec.vary_synthetic_seed:
            _check_varied_root(spec, mover)
        for seed, sub, stem in spec.instances(cfg.seeds):
            if sub.synthetic is not None:
                prepare_synthetic(sub, mover)
            cohort, manifest = load_cohort(sub, cfg.missing_features, out, stem)
            splits, splits_path = cohort_splits(sub, cohort, out, stem)
            seed_folds = spec.seed_folds(cfg.seeds, len(splits.folds))
            if seed is not None:
                seed_folds = {seed: seed_folds[seed]}
            test_ids = sorted({s for fs in seed_folds.values() for k in fs for s in splits.folds[k].get("test", [])})
            paths = dict(zip(cohort.slide_ids, cohort.feature_paths))
            with_labels = [s for s in test_ids if has_patch_labels(paths[s])] if cfg.localization else []
            prepared[(spec.name, seed)] = {"spec": sub, "manifest": manifest, "splits": splits_path,
                                           "folds": seed_folds, "loc": bool(with_labels), "loc_slides": with_labels}

    # every run of the config is checked, not only the selected ones: the reports read them all
    plan: list[tuple[RunSpec, Any, dict]] = []
    conflicts: list[str] = []
    for spec in cfg.cohorts:
        for model in cfg.models:
            for seed in cfg.seeds:
                sub, stem = spec.instance(int(seed))
                p = prepared.get((spec.name, int(seed) if spec.vary_synthetic_seed else None))
                manifest = p["manifest"] if p else _expected_manifest(sub, out, stem)
                run = RunSpec(spec.name, str(model.label), int(seed))
                exp = experiment_config(cfg, sub, model, seed, manifest, out / "splits" / f"{stem}.csv", out, stem)
                d = run_differences(exp, run.dir(out))
                if d and mover is not None:
                    mover.move(run.dir(out))
                elif d:
                    conflicts.append(f"{run.dir(out)} ({'; '.join(d[:3])})")
                if p is not None and run.model in labels:
                    plan.append((run, exp, p))
    if conflicts:
        raise ConfigError(f"{len(conflicts)} run folder(s) under {out / 'runs'} hold runs of another configuration: "
                          f"{conflicts[0]}{' ...' if len(conflicts) > 1 else ''}; use another output_dir, or "
                          "--force-new-config to move them aside")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG_NAME)

    n_trained = 0
    bar = tqdm(total=len(plan), desc="bench", unit="run", disable=not progress, dynamic_ncols=True)
    try:
        if cfg.workers > 1:
            n_trained = _run_parallel(cfg, plan, bar)
        else:
            for run, exp, p in plan:
                bar.set_postfix_str(f"{run.cohort}/{run.model}/seed {run.seed}")
                trained = run_one(exp, p["folds"][run.seed], cfg.localization_k if p["loc"] else None, p["loc_slides"],
                                  cfg.torch_threads)
                n_trained += sum(trained.values())
                bar.update(1)
    finally:
        bar.close()
    wall = time.perf_counter() - t_start
    df = write_reports(cfg, out, wall_seconds=wall, n_trained=n_trained)
    log.info("bench: %d run(s), %d fold(s) trained now, %.0f s; reports in %s", len(plan), n_trained, wall, out)
    return df


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: on Linux, ask the kernel to SIGKILL this worker when the bench process dies
    (``prctl(PR_SET_PDEATHSIG)``), so a killed bench leaves no orphan training into its run folders (its
    outputs are atomic, and a restarted bench resumes from ``last.ckpt``). SIGKILL, because Lightning
    catches SIGTERM and would finish the epoch first. Elsewhere a no-op."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl: keep the old behaviour
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _run_parallel(cfg: BenchConfig, plan: list[tuple[RunSpec, Any, dict]], bar: Any) -> int:
    """The runs over ``cfg.workers`` processes (spawned), each with ``torch_threads`` (default 1) threads."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = cfg.torch_threads or 1
    jobs = [(dump_config(exp), p["folds"][run.seed], cfg.localization_k if p["loc"] else None, p["loc_slides"],
             threads) for run, exp, p in plan]
    n = 0
    with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn"),
                             initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_run_in_worker, j) for j in jobs]
        try:
            for fut in as_completed(futures):
                _, trained = fut.result()
                n += sum(trained.values())
                bar.update(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return n


__all__ = ["run_benchmark", "RunSpec", "config_differences", "fold_localization", "experiment_config",
           "prepare_synthetic", "has_patch_labels", "CONFIG_NAME"]
