"""Cohort jobs: run one function per slide with a progress bar, skip-and-report on error, resume.

``run_per_slide`` is what every long cohort command (graph building, extraction, preprocessing) uses, so
they all behave alike: ``on_error="raise"`` stops at the first bad slide with its error, ``"skip"``
records the failure, goes on, and writes ``<report>`` (CSV: ``slide_id,stage,error``) at the end.
"""
from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from wsigraph.errors import InputError

log = logging.getLogger("wsigraph")

ON_ERROR_CHOICES = ("raise", "skip")


@dataclass
class JobReport:
    """Outcome of a cohort job: which slides ran, were skipped as already done, or failed (with why).

    ``report_path`` is where :meth:`write` last wrote the failure report (None: not written).
    """

    done: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None

    def summary(self) -> str:
        return (f"{len(self.done)} done, {len(self.resumed)} already complete (skipped), "
                f"{len(self.failed)} failed")

    def write(self, path: str | os.PathLike, stage: str) -> Path:
        """Write the failures as CSV ``slide_id,stage,error`` (atomically); returns the path."""
        import pandas as pd

        from wsigraph.utils.atomic import atomic_path

        df = pd.DataFrame({"slide_id": list(self.failed), "stage": stage, "error": list(self.failed.values())},
                          columns=["slide_id", "stage", "error"])
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        self.report_path = Path(path)
        return self.report_path


def run_per_slide(
    items: Sequence[tuple[str, Any]] | Iterable[tuple[str, Any]],
    fn: Callable[[str, Any], Any],
    *,
    on_error: str = "raise",
    is_done: Callable[[str, Any], bool] | None = None,
    desc: str = "slides",
    report_path: str | os.PathLike | None = None,
    stage: str = "",
    progress: bool = True,
) -> JobReport:
    """Call ``fn(slide_id, item)`` for each ``(slide_id, item)``; see the module docstring.

    Args:
        items: pairs of slide id and whatever ``fn`` needs for it.
        fn: the per-slide work; its return value is kept in ``report.results[slide_id]``.
        on_error: ``"raise"`` (default) or ``"skip"``.
        is_done: when given and true for a slide, the slide is skipped as already complete (resume).
        report_path: where to write the failure report (only written when something failed).
        stage: a name for the report's ``stage`` column.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise InputError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    from tqdm.auto import tqdm

    items = list(items)
    report = JobReport()
    bar = tqdm(items, desc=desc, unit="slide", disable=not progress, dynamic_ncols=True)
    for slide_id, item in bar:
        if is_done is not None and is_done(slide_id, item):
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
    if report.failed and report_path is not None:
        path = report.write(report_path, stage or desc)
        log.warning("%d slide(s) failed; report written to %s", len(report.failed), path)
    return report
