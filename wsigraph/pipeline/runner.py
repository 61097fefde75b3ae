"""The cohort-job runner: one function per slide, with a progress bar, resume, skip-and-report.

Every cohort command (segment, tile, extract, preprocess, build-graphs, label-patches, import-srmil,
predict, heatmap) runs through :func:`run_per_slide`, so they all behave alike:

* **errors**: ``on_error="skip"`` (the default of every cohort job) records a failing slide, goes on, and
  lists it in the report; ``"raise"`` stops at the first failure with its error. (A command given a single
  file, ``heatmap --scores FILE``, raises by default: there is no other slide to go on to.)
* **resume**: ``status(slide_id, item)`` says whether a slide's output exists and was made with the same
  parameters (:mod:`wsigraph.pipeline.provenance`). Finished slides are skipped; when any existing
  output was made with *other* parameters, the job refuses before doing any work
  (:class:`StaleOutputError`, naming the slides and the parameters that differ), since mixing two settings
  in one folder would give silently wrong results. ``overwrite=True`` recomputes everything.
* **shards**: ``shard="i/n"`` (default from ``RANK``/``WORLD_SIZE`` where a stage asks for it) runs slides
  ``i::n`` of the list sorted by slide id (:mod:`wsigraph.pipeline.shards`).
* **report**: ``<report_path>`` (CSV ``slide_id,stage,status,error``; status ``done``, ``already
  complete`` or ``failed``) is rewritten at the end of every run, so it always describes the folder as the
  last run left it: a slide that failed once and was finished by a rerun is no longer listed as failed.
"""
from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

from wsigraph.errors import InputError
from wsigraph.pipeline.shards import ShardSpec, resolve_shard, select_shard, shard_suffix

log = logging.getLogger("wsigraph")

ON_ERROR_CHOICES = ("skip", "raise")
DEFAULT_ON_ERROR = "skip"
REPORT_COLUMNS = ["slide_id", "stage", "status", "error"]
#: what ``status`` returns: "done", "missing", or the differences that make an existing output stale
Status = Union[str, Sequence[str]]


class StaleOutputError(InputError):
    """Outputs in the folder were made with other parameters than this run's (see the message)."""


@dataclass
class JobReport:
    """Outcome of a cohort job: which slides ran, were skipped as already done, or failed (with why).

    ``report_path`` is where :meth:`write` last wrote the report (None: not written).
    """

    done: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    shard: tuple[int, int] | None = None

    def summary(self) -> str:
        return (f"{len(self.done)} done, {len(self.resumed)} already complete (skipped), "
                f"{len(self.failed)} failed")

    def rows(self, stage: str) -> list[dict[str, str]]:
        """One row per slide: ``slide_id, stage, status, error``."""
        rows = [{"slide_id": s, "stage": stage, "status": "done", "error": ""} for s in self.done]
        rows += [{"slide_id": s, "stage": stage, "status": "already complete", "error": ""} for s in self.resumed]
        rows += [{"slide_id": s, "stage": stage, "status": "failed", "error": e} for s, e in self.failed.items()]
        return sorted(rows, key=lambda r: r["slide_id"])

    def write(self, path: str | os.PathLike, stage: str) -> Path:
        """Write the report CSV (:data:`REPORT_COLUMNS`, every slide of the run) atomically; returns the path."""
        import pandas as pd

        from wsigraph.utils.atomic import atomic_path

        df = pd.DataFrame(self.rows(stage), columns=REPORT_COLUMNS)
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        self.report_path = Path(path)
        return self.report_path


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR_CHOICES:
        raise InputError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


def _stale_message(stale: dict[str, list[str]], total: int, desc: str) -> str:
    shown = list(stale.items())[:3]
    lines = "; ".join(f"{sid}: {', '.join(d[:3])}{' ...' if len(d) > 3 else ''}" for sid, d in shown)
    more = f" (and {len(stale) - len(shown)} more)" if len(stale) > len(shown) else ""
    return (f"{desc}: {len(stale)} of {total} existing output(s) were made with other parameters than this run's "
            f"({lines}{more}); nothing was run. Use another output folder, or --overwrite (overwrite=True) "
            "to recompute them with the new parameters")


def run_per_slide(
    items: Sequence[tuple[str, Any]] | Iterable[tuple[str, Any]],
    fn: Callable[[str, Any], Any],
    *,
    on_error: str = DEFAULT_ON_ERROR,
    is_done: Callable[[str, Any], bool] | None = None,
    status: Callable[[str, Any], Status] | None = None,
    overwrite: bool = False,
    desc: str = "slides",
    report_path: str | os.PathLike | None = None,
    stage: str = "",
    progress: bool = True,
    shard: ShardSpec = False,
) -> JobReport:
    """Call ``fn(slide_id, item)`` for each ``(slide_id, item)``; see the module docstring.

    Args:
        items: pairs of slide id and whatever ``fn`` needs for it.
        fn: the per-slide work; its return value is kept in ``report.results[slide_id]``.
        on_error: ``"skip"`` (default) or ``"raise"``.
        is_done: true for a slide whose output is complete (resume without a parameter check).
        status: ``"done"`` / ``"missing"`` / list of differences per slide (resume with a parameter check);
            evaluated for every slide before any work.
        overwrite: recompute every slide (``is_done`` and ``status`` are not consulted).
        report_path: where to write the report (None: no report file).
        stage: a name for the report's ``stage`` column.
        shard: run only this shard's slides (``"i/n"``, ``(i, n)``, None = from ``RANK``/``WORLD_SIZE`` or
            ``SLURM_PROCID``/``SLURM_NTASKS``, False = all; :mod:`wsigraph.pipeline.shards`); a shard's report
            is written beside ``report_path`` as ``<stem>.shard-i-of-n<suffix>`` and ``report.shard`` says
            which shard ran.

    Raises:
        StaleOutputError: some outputs were made with other parameters (``status``), before any work.
    """
    check_on_error(on_error)
    from tqdm.auto import tqdm

    items = list(items)
    label = stage or desc
    report = JobReport()
    report.shard = resolve_shard(shard)
    if report.shard is not None:
        total = len(items)
        items = select_shard(items, report.shard, key=lambda it: it[0])
        log.info("%s: shard %d/%d: %d of %d slides", label, *report.shard, len(items), total)
        desc = f"{desc}{shard_suffix(report.shard)}"
        if report_path is not None:
            rp = Path(report_path)
            report_path = rp.with_name(f"{rp.stem}{shard_suffix(report.shard)}{rp.suffix}")
    finished: set[str] = set()
    if not overwrite and status is not None:
        stale: dict[str, list[str]] = {}
        for slide_id, item in items:
            st = status(slide_id, item)
            if st == "done":
                finished.add(slide_id)
            elif st != "missing":
                stale[slide_id] = list(st)
        if stale:
            raise StaleOutputError(_stale_message(stale, len(items), label))
    bar = tqdm(items, desc=desc, unit="slide", disable=not progress, dynamic_ncols=True)
    try:
        for slide_id, item in bar:
            if slide_id in finished or (not overwrite and is_done is not None and is_done(slide_id, item)):
                report.resumed.append(slide_id)
                continue
            try:
                report.results[slide_id] = fn(slide_id, item)
                report.done.append(slide_id)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - a cohort job must survive any one slide's failure
                if on_error == "raise":
                    raise
                msg = f"{type(e).__name__}: {e}"
                report.failed[slide_id] = msg
                log.warning("skipping slide %s: %s", slide_id, msg)
                log.debug("%s", traceback.format_exc())
            bar.set_postfix(failed=len(report.failed), refresh=False)
    finally:
        bar.close()
    if report_path is not None:
        path = report.write(report_path, label)
        if report.failed:
            log.warning("%d slide(s) failed; listed in %s", len(report.failed), path)
    return report


__all__ = ["DEFAULT_ON_ERROR", "JobReport", "ON_ERROR_CHOICES", "REPORT_COLUMNS", "StaleOutputError",
           "check_on_error", "run_per_slide"]
