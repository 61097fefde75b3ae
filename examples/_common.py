"""Shared helpers of the example scripts (``examples/<dataset>/run.py``).

Each script goes from what a user has (raw slides, CLAM or TRIDENT feature folders, our own feature
folders, or the SRMIL paper's pickles) to the benchmark table, in four steps:

1. **find** the starting point under ``--data`` (:func:`find_feature_folders`, :func:`find_slides`,
   :func:`find_pickles`) and the label files; when something is missing, :class:`Missing` collects
   every missing path with what it should hold and :meth:`Missing.check` stops the script, which prints
   them (:func:`exit_missing`, exit status 2);
2. **convert** what needs converting through the library (:func:`preprocess`, :func:`import_pickles`);
   feature folders are used as they are (:func:`link_features` only gathers files spread over several
   folders, by symbolic link);
3. **write** the cohort manifest (:func:`write_manifest`) and, where lesion outlines exist, patch labels
   (:func:`label_patches`) so the harness scores localisation;
4. **run** the bench config (:meth:`Example.benchmark`): the example's ``bench.yaml`` with the cohort's paths
   filled in, written to ``OUT/bench.yaml`` (rerun it with ``wsigraph bench --config OUT/bench.yaml``),
   then the table is printed.

A script declares itself as an :class:`Example` (its folder name and accepted layouts) and uses its
:meth:`~Example.parser`, :meth:`~Example.start`, :meth:`~Example.benchmark` and :meth:`~Example.main`.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from wsigraph.pipeline.slides import SIDE_FOLDERS, FeatureFolder, classify_feature_folder, walk_folders
from wsigraph.pipeline.slides import find_feature_folders as find_folders
from wsigraph.slide import SLIDE_SUFFIXES

EXIT_MISSING = 2
#: Whole-slide file types searched for under ``--data``: wsigraph's, less .png/.jpg (CLAM/TRIDENT thumbnails
#: are not slides) and .dcm (one slide is a folder of DICOM files).
WSI_SUFFIXES = tuple(s for s in SLIDE_SUFFIXES if s not in (".png", ".jpg", ".jpeg", ".dcm"))
STARTS = ("features", "slides", "srmil-pickle")
#: The order in which starting points are looked for when --from is not given.
START_ORDER = ("features", "srmil-pickle", "slides")

#: ``--quick``: a smoke run of the whole chain in a few minutes (not results to report).
QUICK_TRAIN = {"epochs": 2, "bootstrap": 0, "progress_bar": False}
QUICK_MODEL_PARAMS = {
    "srmil": {"hidden": 16, "heads": 2, "cls_hidden": 16, "attn_hidden": 16},
    "mean": {"hidden": 16}, "max": {"hidden": 16},
    "abmil": {"embed_dim": 16, "attn_dim": 8},
    "clam_sb": {"embed_dim": 16, "attn_dim": 8, "k_sample": 2},
    "transmil": {"dim": 16, "heads": 2, "num_landmarks": 8},
    "dsmil": {"q_dim": 8},
    "patch_gcn": {"hidden": 16, "num_layers": 1},
}


class ExampleError(Exception):
    """Bad or inconsistent input found by an example script (printed, exit status 2)."""


class MissingInputs(Exception):
    """Input data are missing (raised by :meth:`Missing.check`; :meth:`Example.main` prints the list, exit 2)."""

    def __init__(self, missing: "Missing") -> None:
        super().__init__(f"{len(missing.items)} missing input(s)")
        self.missing = missing


# ----------------------------------------------------------------------------------------------------
# what is missing
# ----------------------------------------------------------------------------------------------------


@dataclass
class Missing:
    """Missing inputs of an example: ``(path, what it should hold)`` pairs."""

    example: str
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | Path, what: str) -> None:
        self.items.append((str(path), what))

    def __bool__(self) -> bool:
        return bool(self.items)

    def check(self) -> None:
        """Stop the script (:class:`MissingInputs`) when anything is missing."""
        if self.items:
            raise MissingInputs(self)


def exit_missing(missing: Missing, layouts: Sequence[str], readme: str) -> int:
    """Print what is missing and where it should be, then the accepted layouts; returns :data:`EXIT_MISSING`."""
    out = [f"{missing.example}: cannot start, input data missing:"]
    out += [f"  MISSING {path}\n          {what}" for path, what in missing.items]
    out.append("Accepted starting points under --data (the first one found is used; --from picks one):")
    out += [f"  {line}" for line in layouts]
    out.append(f"The layouts are described in {readme}.")
    print("\n".join(out), file=sys.stderr)
    return EXIT_MISSING


def fail(example: str, message: str) -> int:
    """A plain error (bad or inconsistent input): printed, exit status 2."""
    print(f"{example}: error: {message}", file=sys.stderr)
    return EXIT_MISSING


# ----------------------------------------------------------------------------------------------------
# one example script
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """What sets an example script apart: its folder ``examples/<name>/`` and the data layouts it accepts
    (printed when input is missing); the steps all scripts share are its methods."""

    name: str
    layouts: Sequence[str]

    @property
    def here(self) -> Path:
        return Path(__file__).resolve().parent / self.name

    @property
    def readme(self) -> str:
        return f"examples/{self.name}/README.md"

    def parser(self, doc: str) -> argparse.ArgumentParser:
        """:func:`base_parser` described by the first line of the script's docstring ``doc``."""
        return base_parser(self.name, doc.splitlines()[0], f"wsigraph-examples/{self.name}")

    def start(self, args: argparse.Namespace, data_what: str) -> tuple[Path, Path, Missing]:
        """``(--data, --out, an empty Missing)``; stops when ``--data`` is not a folder (``data_what``: what it
        should hold)."""
        data, out = paths(args)
        missing = Missing(self.name)
        if not data.is_dir():
            missing.add(data, data_what)
            missing.check()
        return data, out, missing

    def find_start(self, args: argparse.Namespace, data: Path, finders: dict[str, Any], missing: Missing,
                   order: Sequence[str] = START_ORDER) -> tuple[str, Any]:
        """``(start, what was found)`` by :func:`choose_start`; ``finders["features"]`` defaults to the single
        feature folder under ``data``. Stops when nothing is found."""
        finders = {"features": lambda m: find_one_feature_folder(data, m), **finders}
        start = choose_start(args, order, finders, missing)
        missing.check()
        return start

    def ready(self, kind: str, args: argparse.Namespace, missing: Missing) -> None:
        """End of step 1: raw slides need ``--encoder``; stops when anything is missing, else announces step 2."""
        if kind == "slides" and not args.encoder:
            missing.add("--encoder NAME --weights FILE", "raw slides need a patch encoder and its local weights "
                        "(e.g. --encoder resnet50_trunc --weights resnet50.pth; see `wsigraph encoders`)")
        missing.check()
        print(f"[2/4] starting point: {kind}")

    def benchmark(self, args: argparse.Namespace, out: Path, cohorts: Sequence[dict[str, Any]]) -> Path:
        """Step 4: the bench config (``--config``, else this example's ``bench.yaml``) for ``cohorts`` (see
        :func:`cohort_entry`), run and printed (:func:`run_bench`)."""
        print("[4/4] benchmark")
        raw = bench_config(Path(args.config or self.here / "bench.yaml"), cohorts, out, args)
        return run_bench(raw, out, self.name, force_new_config=args.force_new_config)

    def main(self, run: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
        """``run(argv)``; missing inputs, library errors (bad input named by the library) and
        :class:`ExampleError` exit with 2 and their message."""
        from wsigraph.errors import WsigraphError

        try:
            return int(run(argv) or 0)
        except MissingInputs as e:
            return exit_missing(e.missing, self.layouts, self.readme)
        except (WsigraphError, ExampleError) as e:
            return fail(self.name, str(e))


def cohort_entry(name: str, manifest: Path, feature_dir: Path, **extra: Any) -> dict[str, Any]:
    """A ``cohorts`` entry of the bench config: absolute manifest and feature folder, plus ``extra`` keys."""
    return {"name": name, "manifest": str(Path(manifest).resolve()), "feature_dir": str(Path(feature_dir).resolve()),
            **extra}


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------


def base_parser(example: str, description: str, default_out: str) -> argparse.ArgumentParser:
    """The options every example script shares."""
    p = argparse.ArgumentParser(prog=f"python examples/{example}/run.py", description=description)
    p.add_argument("--data", required=True, metavar="DIR", help="the folder holding your data (see the README)")
    p.add_argument("--out", default=default_out, metavar="DIR",
                   help="where everything is written: manifest, converted features, results (default: %(default)s)")
    p.add_argument("--from", dest="start", choices=STARTS, default=None,
                   help=f"starting point (default: the first found of {', '.join(START_ORDER)})")
    p.add_argument("--features", metavar="DIR",
                   help="use this feature folder (of <slide_id>.h5/.pt) instead of searching --data for one")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 epochs, 1 seed, 2 folds, small models (checks the chain; not results)")
    p.add_argument("--models", metavar="LABELS",
                   help="comma-separated model labels or names of bench.yaml to run (default: all)")
    p.add_argument("--config", metavar="YAML", help="bench config to use instead of the example's bench.yaml")
    p.add_argument("--force-new-config", action="store_true",
                   help="OUT/results holds runs of another config (e.g. other features): move them to "
                        "OUT/results/superseded/ and run this one (without it such a folder is refused)")
    g = p.add_argument_group("raw slides (--from slides)")
    g.add_argument("--encoder", metavar="NAME", help="patch encoder (see `wsigraph encoders`), e.g. resnet50_trunc")
    g.add_argument("--weights", metavar="PATH", help="local weights file of the encoder (never downloaded)")
    g.add_argument("--default-mpp", type=float, metavar="UM", help="um/px for slides whose file records none")
    g.add_argument("--device", default="auto", help="device of the encoder: auto, cpu, cuda (default: auto)")
    g.add_argument("--random-init", action="store_true", help=argparse.SUPPRESS)  # tests: encoder w/o weights
    g.add_argument("--input-size", type=int, help=argparse.SUPPRESS)  # tests: tiny encoder input
    g = p.add_argument_group("SRMIL pickles (--from srmil-pickle)")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling the SRMIL files: unpickling runs code stored in the file, so only do it "
                        "for files from a source you trust (the SRMIL authors' release)")
    return p


def paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """``(--data, --out)``; the output folder is left out of every search of the data folder."""
    data, out = Path(args.data).expanduser(), Path(args.out).expanduser()
    exclude_from_search(out)
    return data, out


# ----------------------------------------------------------------------------------------------------
# finding things
# ----------------------------------------------------------------------------------------------------


_EXCLUDED: set[Path] = set()


def exclude_from_search(path: str | Path) -> None:
    """Never search ``path`` (the script's own ``--out``, which may lie inside ``--data``)."""
    _EXCLUDED.add(Path(path).resolve())


def _walk_dirs(root: Path, max_depth: int) -> Iterable[Path]:
    return walk_folders(root, max_depth, exclude=_EXCLUDED)


def _feature_files(folder: Path) -> dict[str, Path]:
    from wsigraph.data.features import list_feature_files

    return list_feature_files(folder)


def find_feature_folders(root: Path, max_depth: int = 4) -> list[FeatureFolder]:
    """Every CLAM / TRIDENT / wsigraph feature folder under ``root`` (:func:`wsigraph.pipeline.slides.find_feature_folders`)."""
    return find_folders(root, max_depth, exclude=_EXCLUDED)


def explicit_feature_folder(path: str | Path) -> FeatureFolder:
    """The ``--features DIR`` folder (a folder of ``<slide_id>.h5``/``.pt``)."""
    path = Path(path)
    files = _feature_files(path) if path.is_dir() else {}
    return FeatureFolder(classify_feature_folder(path), path, files)


def find_slides(root: Path, max_depth: int = 4) -> dict[str, Path]:
    """slide_id (file stem) -> whole-slide file, searched under ``root`` down to ``max_depth`` folders by
    :func:`wsigraph.slide.find_slides` (ids must be unique across folders; nothing found: empty)."""
    from wsigraph.errors import InputError
    from wsigraph.slide import find_slides as find

    if not root.is_dir():
        return {}
    try:
        return dict(find([root], depth=max_depth, suffixes=WSI_SUFFIXES, skip_dirs=SIDE_FOLDERS, exclude=_EXCLUDED,
                         allow_empty=True))
    except InputError as e:  # two slides with one id
        raise ExampleError(str(e)) from e


def find_pickles(root: Path, max_depth: int = 2) -> list[Path]:
    """``*.pkl`` / ``*.pickle`` files under ``root`` (the SRMIL paper's feature files)."""
    return sorted(f for d in _walk_dirs(root, max_depth) for f in d.iterdir()
                  if f.is_file() and f.suffix.lower() in (".pkl", ".pickle"))


def find_one_feature_folder(data: Path, missing: Missing) -> FeatureFolder | None:
    """The single feature folder under ``data`` (several: an error listing them, pick one with --features)."""
    folders = find_feature_folders(data)
    if not folders:
        missing.add(data / "h5_files", "CLAM features: <slide_id>.h5 with 'features' + 'coords' (pt_files/ optional)")
        missing.add(data / "<mag>x_<ps>px_<ov>px_overlap" / "features_<encoder>",
                    "or TRIDENT features: <slide_id>.h5, e.g. 20x_256px_0px_overlap/features_uni_v1/")
        missing.add(data / "features", "or wsigraph features (wsigraph preprocess): <slide_id>.h5")
        return None
    if len(folders) > 1:
        raise ExampleError("several feature folders under " + str(data) + ":\n  "
                           + "\n  ".join(f.describe() for f in folders) + "\nchoose one with --features DIR")
    return folders[0]


def choose_start(args: argparse.Namespace, order: Sequence[str], finders: dict[str, Any],
                 missing: Missing) -> tuple[str, Any] | None:
    """The starting point: ``--features DIR``, else ``--from``, else the first of ``order`` that is found.

    ``finders[start](missing)`` returns what it found or None after adding the paths it looked for to
    ``missing``; when a start is found, what the others missed is forgotten. None: nothing was found, and
    ``missing`` says what was looked for.
    """
    if args.features and args.start in (None, "features"):
        ff = explicit_feature_folder(args.features)
        if not ff.files:
            missing.add(args.features, "a folder of <slide_id>.h5 / .pt feature files (--features)")
            return None
        return "features", ff
    starts = [args.start] if args.start else list(order)
    for start in starts:
        found = finders[start](missing)
        if found is not None:
            missing.items.clear()
            return start, found
    if not missing:
        missing.add(args.data, f"a starting point ({', '.join(starts)})")
    return None


def require_trust(example: str, pickles: Sequence[Path], args: argparse.Namespace) -> None:
    """Refuse to unpickle without ``--trust-pickle``, saying why."""
    if not args.trust_pickle:
        raise ExampleError(
            f"found SRMIL pickle(s) {listing(str(p) for p in pickles)}. Unpickling a file runs code stored in "
            "it, so it is only safe for files from a source you trust (e.g. the SRMIL authors' release). "
            "If you trust them, rerun with --trust-pickle; they are converted once into plain feature files "
            "(wsigraph import-srmil) and never unpickled again.")


def strip_suffix(slide_id: str) -> str:
    """``S001.svs`` -> ``S001`` (slide and feature file extensions only; ``TCGA-...DX1.<uuid>`` is kept)."""
    low = slide_id.lower()
    for suf in WSI_SUFFIXES + (".h5", ".hdf5", ".pt", ".png", ".jpg", ".jpeg", ".dcm"):
        if low.endswith(suf):
            return slide_id[: -len(suf)]
    return slide_id


def first_existing(candidates: Sequence[Path]) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def listing(items: Iterable[Any], limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# ----------------------------------------------------------------------------------------------------
# converting
# ----------------------------------------------------------------------------------------------------


def preprocess(slides: dict[str, Path], out: Path, args: argparse.Namespace) -> FeatureFolder:
    """Tissue masks, 0.5 um/px 224-px patch grid and embeddings for ``slides`` (``wsigraph preprocess``).

    Resumable: rerunning skips finished slides. Failing slides are skipped and listed in
    ``out/preprocess_report.csv``.
    """
    from wsigraph.features import build_encoder
    from wsigraph.pipeline.extract import encoder_folder_name
    from wsigraph.features.extract import auto_num_workers
    from wsigraph.pipeline.preprocess import preprocess_cohort
    from wsigraph.pipeline.slides import read_slide_list

    out.mkdir(parents=True, exist_ok=True)
    listing_csv = out / "slides.csv"
    write_csv(listing_csv, [{"slide_id": s, "path": str(p)} for s, p in sorted(slides.items())])
    jobs = read_slide_list(listing_csv)
    encoder = build_encoder(args.encoder, weights=args.weights, random_init=args.random_init,
                            input_size=args.input_size)
    report = preprocess_cohort(jobs, out, encoder, default_mpp=args.default_mpp, device=args.device,
                               num_workers=auto_num_workers(args.device), progress=True)
    print(f"      preprocess: {report.summary()}")
    for sid, err in report.failed.items():
        print(f"      failed {sid}: {err}")
    feat_dir = out / f"features_{encoder_folder_name(encoder.name)}"
    return FeatureFolder("wsigraph", feat_dir, _feature_files(feat_dir))


def import_pickles(pickles: Sequence[Path], splits: Sequence[str] | None, classes: Sequence[str], out: Path):
    """``wsigraph import-srmil --trust-pickle``: pickles -> ``out/features/*.h5`` + ``out/manifest.csv``."""
    from wsigraph.pipeline.imports import import_srmil

    return import_srmil(list(pickles), out, classes=list(classes), trust_pickle=True, splits=splits,
                        on_error="raise", progress=True)


def link_features(files: dict[str, Path], out: Path) -> Path:
    """Gather feature files from several folders into one folder ``out``: ``.h5`` files by symbolic link
    (a copy where links are not allowed); ``.pt`` bags are written as ``.h5`` (their coordinates live in
    another folder, which a link would lose)."""
    from wsigraph.data.features import read_features, write_features

    out.mkdir(parents=True, exist_ok=True)
    for sid, src in files.items():
        if src.suffix.lower() == ".pt":
            dst = out / f"{sid}.h5"
            if not dst.exists():
                bag = read_features(src)
                write_features(dst, bag.coords, bag.features, attrs=bag.attrs)
            continue
        dst = out / f"{sid}.h5"
        if dst.is_symlink() or dst.exists():
            if dst.resolve() == src.resolve():
                continue
            dst.unlink()
        try:
            dst.symlink_to(src.resolve())
        except OSError:
            shutil.copy2(src, dst)
    return out


def unpack_annotations(sources: Sequence[Path], out: Path) -> Path:
    """Collect lesion outlines (``.xml``/``.geojson``/``.json``) from folders and ``.zip`` files into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    keep = (".xml", ".geojson", ".json")
    for src in sources:
        if src.is_dir():
            for f in src.rglob("*"):
                if f.is_file() and f.suffix.lower() in keep:
                    shutil.copy2(f, out / f.name)
        elif zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                for info in z.infolist():
                    name = Path(info.filename).name
                    if not info.is_dir() and Path(name).suffix.lower() in keep and not name.startswith("."):
                        (out / name).write_bytes(z.read(info))
    return out


def label_patches(features: dict[str, Path], annotation_dir: Path, slide_ids: Iterable[str], out: Path) -> Path:
    """Feature folder ``out`` for the harness: ``slide_ids`` get a labelled file (``patch_labels`` from their
    lesion outline, all 0 without one: the CAMELYON16 convention) whose other datasets are HDF5 external
    links to the original, so nothing large is copied; every other slide is linked as it is."""
    from wsigraph.data.annotations import add_patch_labels, find_annotation

    out.mkdir(parents=True, exist_ok=True)
    chosen = set(slide_ids)
    link_features({s: p for s, p in features.items() if s not in chosen}, out)
    n_lesion = 0
    for sid in sorted(chosen):
        src, dst = features[sid], out / f"{sid}.h5"
        ann = find_annotation(annotation_dir, sid)
        n_lesion += ann is not None
        if dst.is_symlink():
            dst.unlink()
        if _labelled_from(dst, src) and dst.stat().st_mtime >= src.stat().st_mtime:  # done on an earlier run
            continue
        if src.suffix.lower() == ".pt":  # a CLAM .pt bag: written as .h5 first, then labelled in place
            link_features({sid: src}, out)
            src = dst
        add_patch_labels(src, ann, dst, link=src.resolve() != dst.resolve())
    print(f"      patch labels for {len(chosen)} slide(s), {n_lesion} with a lesion outline -> {out}")
    return out


def _labelled_from(path: Path, src: Path) -> bool:
    """``path`` holds ``patch_labels``, and its external links (if any) lead to ``src`` where it is now."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            links = [f.get(k, getlink=True) for k in f]
            return "patch_labels" in f and all(link.filename == str(src.resolve()) for link in links
                                               if isinstance(link, h5py.ExternalLink))
    except (OSError, FileNotFoundError):
        return False


# ----------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write dict rows as CSV atomically (columns in first-seen order)."""
    import pandas as pd

    from wsigraph.utils.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with atomic_path(path) as tmp:
        pd.DataFrame(list(rows), columns=cols).to_csv(tmp, index=False)
    return path


def write_manifest(path: Path, rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> Path:
    """Write the cohort manifest and print its class and split counts."""
    from collections import Counter

    write_csv(path, rows)
    by_class = Counter(r["label"] for r in rows)
    by_split = Counter(r.get("split") or "-" for r in rows)
    print(f"      manifest {path}: {len(rows)} slides; " + ", ".join(f"{c} {by_class.get(c, 0)}" for c in classes)
          + ("; splits " + ", ".join(f"{s} {n}" for s, n in sorted(by_split.items())) if "-" not in by_split else ""))
    return path


def read_table(path: Path) -> "Any":
    """A CSV/TSV or ``.xlsx`` label table as a DataFrame of strings (:func:`wsigraph.data.tables.read_table`)."""
    from wsigraph.data.tables import read_table as read

    return read(path)


# ----------------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------------


def bench_config(template: Path, cohorts: Sequence[dict[str, Any]], out: Path, args: argparse.Namespace) -> dict:
    """The example's bench config with the cohorts' paths filled in (and ``--quick`` / ``--models`` applied)."""
    import yaml

    if not Path(template).is_file():
        raise ExampleError(f"{template}: bench config does not exist")
    raw = yaml.safe_load(Path(template).read_text(encoding="utf-8")) or {}
    by_name = {c["name"]: c for c in cohorts}
    filled = []
    for c in raw.get("cohorts", []):
        if c.get("name") in by_name:
            filled.append({**c, **by_name[c["name"]]})
    raw["cohorts"] = filled or list(cohorts)
    if getattr(args, "random_init", False):  # tests only: features of an encoder without weights
        for c in raw["cohorts"]:
            c["allow_random_features"] = True
    # a quick run has other epochs and model sizes: its own results folder (the harness refuses to mix them)
    raw["output_dir"] = str((out / ("results-quick" if args.quick else "results")).resolve())
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        models = [m for m in raw.get("models", []) if m.get("label") in wanted or m.get("name") in wanted]
        unknown = [w for w in wanted if not any(w in (m.get("label"), m.get("name")) for m in raw.get("models", []))]
        if unknown:
            raise ExampleError(f"--models: {unknown} not in {template} (labels: "
                             f"{[m.get('label') for m in raw.get('models', [])]})")
        raw["models"] = models
        labels = [m.get("label") or m.get("name") for m in models]
        if raw.get("reference") not in labels:  # the Wilcoxon reference must be one of the models run
            raw["reference"] = labels[0]
    if args.quick:
        raw["seeds"] = [0]
        raw["train"] = {**(raw.get("train") or {}), **QUICK_TRAIN}
        for m in raw.get("models", []):
            m["params"] = {**(m.get("params") or {}), **QUICK_MODEL_PARAMS.get(m.get("name"), {})}
        for c in raw["cohorts"]:
            if c.get("split_mode") in ("kfold", "auto"):
                c["n_folds"] = 2
    return raw


def run_bench(raw: dict, out: Path, example: str, force_new_config: bool = False) -> Path:
    """Write ``out/bench.yaml``, run the harness, print where the table is and the table; returns table.md."""
    import yaml

    from wsigraph.utils.atomic import atomic_write_text

    cfg_path = out / "bench.yaml"
    atomic_write_text(cfg_path, f"# written by examples/{example}/run.py; rerun: wsigraph bench --config "
                                f"{cfg_path}\n" + yaml.safe_dump(raw, sort_keys=False))
    print(f"      bench config {cfg_path}")
    try:
        from wsigraph.bench import load_bench_config, run_benchmark
    except ImportError as e:
        raise ExampleError(f"the accuracy harness (wsigraph.bench) is not importable ({e}); the manifest and "
                           f"config are ready: run `wsigraph bench --config {cfg_path}` once it is installed") from e
    run_benchmark(load_bench_config(raw, base_dir=out), force_new_config=force_new_config)
    table = Path(raw["output_dir"]) / "table.md"
    print(f"\nresults table: {table}\n")
    if table.exists():
        print(table.read_text(encoding="utf-8"))
    return table
