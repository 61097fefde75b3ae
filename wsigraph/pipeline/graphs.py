"""The graph stage (``wsigraph build-graphs``): every slide's spatial graph built once and cached, so that
training and inference read it instead of rebuilding it; resumable (a cache file counts as done only when
it loads and fits its slide) and shardable like every stage.

The graphs themselves: :func:`wsigraph.graph.spatial_graph`; the cache and its keys:
:class:`wsigraph.graph.dataset.GraphDataset`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from wsigraph.errors import ConfigError
from wsigraph.graph.dataset import GraphDataset
from wsigraph.pipeline.runner import run_per_slide
from wsigraph.pipeline.shards import ShardSpec, select_shard, shard_suffix

log = logging.getLogger("wsigraph")


def build_graph_cache(
    dataset: GraphDataset,
    *,
    on_error: str = "skip",
    report_path: str | os.PathLike | None = None,
    progress: bool = True,
    failed_before: dict[str, str] | None = None,
    shard: ShardSpec = None,
) -> Any:
    """Build and cache every slide's graph (reading coordinates only); cached slides are skipped (resume).

    Args:
        dataset: a :class:`GraphDataset` with a ``cache_dir``.
        on_error: ``"skip"`` (failures go to the report) or ``"raise"``.
        report_path: the report CSV ``slide_id,stage,status,error`` (one row per slide).
        failed_before: failures found before building (e.g. slides without a feature file), reported too.
        shard: build only this shard's graphs (:mod:`wsigraph.pipeline.shards`; default from
            ``RANK``/``WORLD_SIZE``); the report is then ``<stem>.shard-i-of-n.csv``.
    Returns:
        the :class:`~wsigraph.pipeline.runner.JobReport` (``results[slide_id]`` = ``{"num_nodes", "num_edges"}``).
    """
    if dataset.cache_dir is None:
        raise ConfigError("build_graph_cache: the dataset has no cache_dir")
    items = [(sid, i) for i, sid in enumerate(dataset.slide_ids)]
    report = run_per_slide(items, lambda sid, i: dataset.build_cache(i), on_error=on_error,
                           is_done=lambda sid, i: dataset.is_cached(i, validate=True), desc="graphs",
                           stage="build-graphs", progress=progress, shard=shard)
    if failed_before:
        # each shard reports its share of the slides that never reached the runner (every one exactly once)
        ours = set(failed_before) if report.shard is None else set(select_shard(list(failed_before), report.shard))
        mine = {sid: err for sid, err in failed_before.items() if sid in ours}
        report.failed = {**mine, **report.failed}
    if report_path is not None:
        rp = Path(report_path)
        path = report.write(rp.with_name(f"{rp.stem}{shard_suffix(report.shard)}{rp.suffix}"), "build-graphs")
        if report.failed:
            log.warning("%d slide(s) failed; listed in %s", len(report.failed), path)
    return report


__all__ = ["build_graph_cache"]
