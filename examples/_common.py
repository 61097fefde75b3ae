"""The example scripts' user interface (``examples/<dataset>/run.py``): options, messages, printing.

Each script goes from what a user has (raw slides, CLAM or TRIDENT feature folders, our own feature folders,
or the SRMIL paper's pickles) to the benchmark table in four steps: **find** the starting point under
``--data`` and the label files (what is missing is collected in :class:`Missing` and printed with the
accepted layouts, exit status 2); **convert** what needs it (:func:`preprocess`, :func:`import_pickles`);
**write** the manifest (:func:`write_manifest`) and, where lesion outlines exist, patch labels; **run** the
example's ``bench.yaml`` with the paths filled in, saved as ``OUT/bench.yaml`` (:meth:`Example.benchmark`).
The work is done by the library: ``wsigraph.pipeline.slides`` (finding slides, feature folders, pickles),
``wsigraph.pipeline.patch_labels``, ``wsigraph.data.manifest``, ``wsigraph.bench.template``.
A script declares itself as an :class:`Example` (its folder name and accepted layouts) and uses its methods.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from wsigraph.data.features import list_feature_files
from wsigraph.pipeline.slides import FeatureFolder, feature_folder, find_pickle_files, find_slide_files
from wsigraph.pipeline.slides import find_feature_folders as find_folders

EXIT_MISSING = 2
STARTS = ("features", "slides", "srmil-pickle")
#: The order in which starting points are looked for when --from is not given.
START_ORDER = ("features", "srmil-pickle", "slides")


class ExampleError(Exception):
    """Bad or inconsistent input found by an example script (printed, exit status 2)."""


class MissingInputs(Exception):
    """Input data are missing (raised by :meth:`Missing.check`; :meth:`Example.main` prints the list, exit 2)."""

    def __init__(self, missing: "Missing") -> None:
        super().__init__(f"{len(missing.items)} missing input(s)")
        self.missing = missing


# ---- what is missing -----------------------------------------------------------------------------
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


# ---- one example script --------------------------------------------------------------------------
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


# ---- command line --------------------------------------------------------------------------------
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
    """``(--data, --out)``; ``--out`` (which may lie inside ``--data``) is left out of every search of the data."""
    data, out = Path(args.data).expanduser(), Path(args.out).expanduser()
    _EXCLUDED.add(out.resolve())
    return data, out


# ---- finding things ------------------------------------------------------------------------------
_EXCLUDED: set[Path] = set()  # folders never searched: the scripts' --out (see paths)


def find_feature_folders(root: Path, max_depth: int = 4) -> list[FeatureFolder]:
    """Every CLAM / TRIDENT / wsigraph feature folder under ``root`` (``wsigraph.pipeline.slides``)."""
    return find_folders(root, max_depth, exclude=_EXCLUDED)


def find_slides(root: Path, max_depth: int = 4) -> dict[str, Path]:
    """slide_id (file stem) -> whole-slide file under ``root`` (``wsigraph.pipeline.slides``)."""
    return find_slide_files(root, max_depth, exclude=_EXCLUDED)


def find_pickles(root: Path, max_depth: int = 2) -> list[Path]:
    """``*.pkl`` / ``*.pickle`` files under ``root`` (the SRMIL paper's feature files), ``--out`` left out."""
    return find_pickle_files(root, max_depth, exclude=_EXCLUDED)


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
        ff = feature_folder(args.features)
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


def first_existing(candidates: Sequence[Path]) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def listing(items: Iterable[Any], limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# ---- converting ----------------------------------------------------------------------------------
def preprocess(slides: dict[str, Path], out: Path, args: argparse.Namespace) -> FeatureFolder:
    """Tissue masks, 0.5 um/px 224-px patch grid and embeddings for ``slides`` (``wsigraph preprocess``).

    Resumable: rerunning skips finished slides. Failing slides are skipped and listed in
    ``out/preprocess_report.csv``.
    """
    from wsigraph.features import build_encoder
    from wsigraph.features.extract import auto_num_workers
    from wsigraph.pipeline.extract import encoder_folder_name
    from wsigraph.pipeline.preprocess import preprocess_cohort
    from wsigraph.pipeline.slides import slide_jobs

    encoder = build_encoder(args.encoder, weights=args.weights, random_init=args.random_init,
                            input_size=args.input_size)
    report = preprocess_cohort(slide_jobs(slides), out, encoder, default_mpp=args.default_mpp, device=args.device,
                               num_workers=auto_num_workers(args.device), progress=True)
    print(f"      preprocess: {report.summary()}")
    for sid, err in report.failed.items():
        print(f"      failed {sid}: {err}")
    feat_dir = out / f"features_{encoder_folder_name(encoder.name)}"
    return FeatureFolder("wsigraph", feat_dir, list_feature_files(feat_dir))


def import_pickles(pickles: Sequence[Path], splits: Sequence[str] | None, classes: Sequence[str], out: Path):
    """``wsigraph import-srmil --trust-pickle``: pickles -> ``out/features/*.h5`` + ``out/manifest.csv``."""
    from wsigraph.pipeline.imports import import_srmil

    return import_srmil(list(pickles), out, classes=list(classes), trust_pickle=True, splits=splits,
                        on_error="raise", progress=True)


def write_manifest(path: Path, rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> Path:
    """Write the cohort manifest (:func:`wsigraph.data.manifest.write_manifest`) and print its class and split
    counts."""
    from wsigraph.data.manifest import write_manifest as write

    by_class, by_split = write(path, rows, classes)
    print(f"      manifest {path}: {len(rows)} slides; " + ", ".join(f"{c} {by_class.get(c, 0)}" for c in classes)
          + ("; splits " + ", ".join(f"{s} {n}" for s, n in by_split.items()) if by_split else ""))
    return path


# ---- the benchmark -------------------------------------------------------------------------------
def bench_config(template: Path, cohorts: Sequence[dict[str, Any]], out: Path, args: argparse.Namespace) -> dict:
    """The example's bench config with the cohorts' paths filled in, ``--quick`` / ``--models`` applied
    (:func:`wsigraph.bench.fill_bench_template`); a quick run has its own results folder ``OUT/results-quick``
    (other epochs and model sizes: the harness refuses to mix them with ``OUT/results``)."""
    from wsigraph.bench import fill_bench_template

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    return fill_bench_template(template, cohorts, out / ("results-quick" if args.quick else "results"),
                               models=models, quick=args.quick,
                               allow_random_features=getattr(args, "random_init", False))  # tests only


def run_bench(raw: dict, out: Path, example: str, force_new_config: bool = False) -> Path:
    """Write ``out/bench.yaml``, run the harness, print where the table is and the table; returns table.md."""
    from wsigraph.bench import load_bench_config, run_benchmark, write_bench_config

    cfg_path = write_bench_config(raw, out / "bench.yaml", f"written by examples/{example}/run.py; rerun: "
                                                           f"wsigraph bench --config {out / 'bench.yaml'}")
    print(f"      bench config {cfg_path}")
    run_benchmark(load_bench_config(raw, base_dir=out), force_new_config=force_new_config)
    table = Path(raw["output_dir"]) / "table.md"
    print(f"\nresults table: {table}\n")
    if table.exists():
        print(table.read_text(encoding="utf-8"))
    return table
