"""The SRMIL import stage (``wsigraph import-srmil``): the paper's released feature pickles -> our feature
files ``<out_dir>/features/<slide_id>.h5`` + ``<out_dir>/manifest.csv``, one item at a time through
:func:`wsigraph.pipeline.runner.run_per_slide` (bad items skipped and reported).

Unpickling runs code chosen by whoever wrote the file, so it needs ``trust_pickle=True``
(``--trust-pickle``); only use it on files from a source you trust.

Resume: each feature file records the pickle (size and digest of its ends), the item's index and the
conversion parameters; a rerun skips items converted the same way and refuses (naming the parameter) when
the folder holds items converted otherwise, unless ``overwrite``. The manifest always lists every item
imported so far, resumed ones included (their label is read back from the file).

Shards: ``shard="i/n"`` converts items ``i::n`` (by slide id) and writes ``manifest.shard-i-of-n.csv`` with
those only; each shard still reads the pickles whole. After the shards, one run without a shard finds
every item done and writes the whole ``manifest.csv``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from wsigraph.data.srmil_import import (PICKLE_WARNING, convert_item, item_field, load_srmil_pickle,
                                        num_classes_of_items, slide_name)
from wsigraph.errors import ConfigError, InputError
from wsigraph.pipeline.paths import slide_file
from wsigraph.pipeline.provenance import (PROVENANCE_ATTR, Provenance, provenance_differences, quick_fingerprint,
                                          read_h5_provenance)
from wsigraph.pipeline.runner import Status, run_per_slide
from wsigraph.pipeline.shards import ShardSpec, shard_suffix

log = logging.getLogger("wsigraph")


def import_srmil(
    pkl_path: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    classes: Sequence[str] | None = None,
    trust_pickle: bool = False,
    patch_size_level0: int = 224,
    on_error: str = "skip",
    *,
    splits: Sequence[str] | None = None,
    mpp: float = 0.5,
    report_path: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
    shard: ShardSpec = None,
):
    """Convert SRMIL feature pickle(s) into ``out_dir/features/*.h5`` + ``out_dir/manifest.csv``.

    Args:
        pkl_path: one pickle, or several (e.g. the C16 train and test files).
        classes: class names in ``graph_y`` order; default ``class0..class{C-1}``.
        trust_pickle: must be True (see :data:`PICKLE_WARNING`).
        patch_size_level0: the grid step of ``pos`` in level-0 pixels (224 in the paper's files).
        on_error: ``"raise"`` or ``"skip"`` (bad items are skipped and listed in ``report_path``,
            default ``out_dir/import_srmil_report.csv``).
        splits: one split name (``train``/``val``/``test``) per pickle, written to the manifest's
            ``split`` column.
        overwrite, shard, progress: as in :func:`wsigraph.pipeline.runner.run_per_slide` (see the module
            docstring for resume and shards).
    Returns:
        the imported :class:`~wsigraph.data.manifest.Cohort`; its ``import_report`` attribute is the
        :class:`~wsigraph.pipeline.runner.JobReport` (what was done, what failed and why).
    """
    import pandas as pd

    from wsigraph.data.features import write_features
    from wsigraph.data.manifest import SPLIT_NAMES, read_manifest
    from wsigraph.utils.atomic import atomic_path

    paths = [Path(pkl_path)] if isinstance(pkl_path, (str, os.PathLike)) else [Path(p) for p in pkl_path]
    if not paths:
        raise ConfigError("import_srmil: no pickle given")
    if not trust_pickle:
        raise InputError(f"{paths[0]}: refusing to unpickle: {PICKLE_WARNING}")
    if splits is not None:
        splits = [str(s) for s in splits]
        if len(splits) != len(paths):
            raise ConfigError(f"import_srmil: {len(splits)} split name(s) for {len(paths)} pickle(s)")
        bad = [s for s in splits if s not in SPLIT_NAMES]
        if bad:
            raise ConfigError(f"import_srmil: split name(s) {bad} not in {list(SPLIT_NAMES)}")
    out_dir = Path(out_dir)
    feat_dir = out_dir / "features"
    num_classes = len(classes) if classes is not None else None

    params = {"patch_size_level0": int(patch_size_level0), "mpp": float(mpp), "num_classes": num_classes}

    # (slide_id, (where, item, split, provenance)) for every item of every pickle; ids checked unique up front
    jobs: list[tuple[str, tuple[str, Any, str | None, Provenance]]] = []
    first_seen: dict[str, str] = {}
    for k, path in enumerate(paths):
        items = load_srmil_pickle(path, trust_pickle=True)
        fingerprint = {"file": path.name, **quick_fingerprint(path)}
        for i, item in enumerate(items):
            where = f"{path}, item {i}"
            try:
                default = f"slide_{i:04d}" if len(paths) == 1 else f"{path.stem}_{i:04d}"
                sid = slide_name(item_field(item, "slide_index"), default)
            except InputError as e:
                if on_error == "raise":
                    raise InputError(f"{where}: {e}") from None
                sid = f"{path.stem}_item{i}"
            where = f"{where} (slide {sid})"
            if sid in first_seen:
                msg = f"{where}: duplicate slide_index {sid!r} (first at {first_seen[sid]})"
                if on_error == "raise":
                    raise InputError(msg)
                log.warning("skipping: %s", msg)
                continue
            first_seen[sid] = where
            prov = Provenance("import-srmil", params, {"pickle": fingerprint, "item": i})
            jobs.append((sid, (where, item, splits[k] if splits else None, prov)))

    def status(sid: str, job: tuple[str, Any, str | None, Provenance]) -> Status:
        from wsigraph.data.features import is_complete_feature_file

        path = slide_file(feat_dir, sid, ".h5", job[0])
        if not is_complete_feature_file(path):
            return "missing"
        return provenance_differences(read_h5_provenance(path), job[3]) or "done"

    def convert(sid: str, job: tuple[str, Any, str | None, Provenance]) -> dict[str, Any]:
        where, item, split, prov = job
        c = convert_item(item, where, num_classes, patch_size_level0)
        attrs = {"patch_size": int(patch_size_level0), "patch_level": 0, "patch_size_level0": int(patch_size_level0),
                 "mpp": float(mpp), "encoder": "srmil-import", "source": str(where.split(', item')[0]),
                 "srmil_label_index": int(c["label_index"]), PROVENANCE_ATTR: prov.to_json()}
        try:
            write_features(slide_file(feat_dir, sid, ".h5", where), c["coords"], c["features"], attrs=attrs,
                           patch_labels=c["patch_labels"])
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        return {"label_index": c["label_index"], "split": split}

    report = run_per_slide(jobs, convert, status=status, overwrite=overwrite, on_error=on_error,
                           desc="import-srmil", stage="import-srmil",
                           report_path=report_path or out_dir / "import_srmil_report.csv", progress=progress,
                           shard=shard)
    split_of = {sid: job[2] for sid, job in jobs}
    for sid in report.resumed:  # converted by an earlier run: the label is read back from the file
        report.results[sid] = {"label_index": _recorded_label(slide_file(feat_dir, sid, ".h5")),
                               "split": split_of[sid]}
    done = [sid for sid, _ in jobs if sid in report.results]
    if not done:
        raise InputError(f"{paths[0]}: no item could be imported ({len(report.failed)} failed)")
    n_cls = num_classes
    if n_cls is None:
        n_cls = max([report.results[s]["label_index"] for s in done] + [0]) + 1
        n_cls = max(n_cls, num_classes_of_items(jobs))
    names = list(classes) if classes is not None else [f"class{i}" for i in range(n_cls)]
    rows = []
    for sid in done:
        r = report.results[sid]
        li = r["label_index"]
        row = {"slide_id": sid, "label": names[li] if li >= 0 else ""}
        if splits:
            row["split"] = r["split"]
        rows.append(row)
    manifest = pd.DataFrame(rows)
    manifest_path = out_dir / f"manifest{shard_suffix(report.shard)}.csv"
    with atomic_path(manifest_path) as tmp:
        manifest.to_csv(tmp, index=False)
    log.info("imported %d slide(s) from %s into %s (%s)", len(done), ", ".join(map(str, paths)), out_dir,
             report.summary())
    cohort = read_manifest(manifest_path, classes=names, feature_dir=feat_dir)
    cohort.import_report = report  # type: ignore[attr-defined]
    return cohort


def _recorded_label(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        value = f.attrs.get("srmil_label_index")
    if value is None:
        raise InputError(f"{path}: imported without its label index (srmil_label_index); rerun with --overwrite")
    return int(value)


__all__ = ["import_srmil"]
