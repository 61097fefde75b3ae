"""Splitting a cohort job over processes or machines: shard ``i`` of ``n`` takes slides ``i::n`` of the
list sorted by slide id.

The shard comes from ``--shard i/n``, else from ``RANK``/``WORLD_SIZE`` (torchrun) or
``SLURM_PROCID``/``SLURM_NTASKS``; every cohort stage takes it through
:func:`wsigraph.pipeline.runner.run_per_slide`, which also names the report of a shard
``<stage>_report.shard-i-of-n.csv`` so shards writing into one folder never overwrite each other's report.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence, Union

from wsigraph.errors import InputError

#: ``"i/n"``, ``(i, n)``, None (from the environment) or False (no sharding, whatever the environment says)
ShardSpec = Union[str, Sequence[int], None, bool]


def parse_shard(shard: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based ``i``) or ``(i, n)`` -> ``(i, n)``; None or ``""`` -> None."""
    if shard is None or shard == "":
        return None
    if isinstance(shard, str):
        try:
            i, n = (int(p) for p in shard.split("/"))
        except ValueError:
            raise InputError(f"shard must look like 'i/n' (e.g. 0/4), got {shard!r}") from None
    else:
        i, n = (int(v) for v in shard)
    if n < 1 or not 0 <= i < n:
        raise InputError(f"shard {i}/{n}: need n >= 1 and 0 <= i < n")
    return i, n


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` set by torchrun, else ``(SLURM_PROCID, SLURM_NTASKS)``; None when single."""
    env = os.environ if environ is None else environ
    for rank_key, size_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if env.get(size_key):
            try:
                i, n = int(env.get(rank_key, "0")), int(env[size_key])
            except ValueError:
                raise InputError(f"environment {rank_key}={env.get(rank_key)!r} {size_key}={env[size_key]!r} "
                                 "are not integers") from None
            if n > 1:
                return parse_shard((i, n))
    return None


def resolve_shard(shard: ShardSpec) -> tuple[int, int] | None:
    """The ``(i, n)`` a job runs: ``shard`` parsed; None -> :func:`shard_from_env`; False -> None."""
    if shard is False:
        return None
    if shard is None or shard == "":
        return shard_from_env()
    return parse_shard(shard)  # type: ignore[arg-type]


def select_shard(items: Sequence[Any], shard: tuple[int, int] | None, key: Callable[[Any], str] = str) -> list[Any]:
    """Items ``i::n`` of ``items`` sorted by ``key`` (all of them, sorted, when ``shard`` is None)."""
    ordered = sorted(items, key=key)
    if shard is None:
        return ordered
    i, n = shard
    return ordered[i::n]


def shard_suffix(shard: tuple[int, int] | None) -> str:
    """``".shard-i-of-n"`` (empty without a shard): what a shard's report and summary names carry."""
    return "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"


__all__ = ["ShardSpec", "parse_shard", "shard_from_env", "resolve_shard", "select_shard", "shard_suffix"]
