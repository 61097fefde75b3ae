"""Graph parameters: the modes, the backends and :class:`GraphConfig`.

Units: radii and distances are in patch steps (lattice units), i.e. level-0 pixels divided by the grid
step ``patch_size_level0``. ``mode="paper"`` is the SRMIL graph: radius ``window * 1.42`` steps (the 5 x 5
neighbourhood, 24 neighbours, for ``window = 2``) plus self loops.
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import asdict, dataclass
from typing import Any

from wsigraph.errors import ConfigError

MODES = ("paper", "radius", "knn")
#: ``GraphConfig.mode`` of a cohort read without coordinates: no graph (set-based models only)
NO_GRAPH = "none"
BACKENDS = ("auto", "lattice", "kdtree", "torch_cluster")
PAPER_RADIUS_FACTOR = 1.42
#: Slack (in patch steps) added to every radius, so ``2 * 1.42 = 2.84`` surely keeps the (2, 2) offsets
#: at 2.828 and every backend decides a boundary case the same way.
RADIUS_EPS = 1e-6


def paper_radius(window: float) -> float:
    """The paper's radius in patch steps: ``window * 1.42``."""
    return float(window) * PAPER_RADIUS_FACTOR


def check_graph_args(mode: str, k: Any, radius: Any, window: Any, self_loops: Any, backend: str,
                     where: str = "") -> None:
    """Raise :class:`ConfigError` naming the bad argument (``where`` prefixes the message)."""
    pre = f"{where}: " if where else ""
    if mode not in MODES:
        raise ConfigError(f"{pre}mode: unknown graph mode {mode!r}; valid modes: {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise ConfigError(f"{pre}backend: unknown graph backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    try:
        k_int = operator.index(k)
    except TypeError:
        k_int = 0
    if isinstance(k, bool) or k_int < 1:
        raise ConfigError(f"{pre}k: must be an integer >= 1, got {k!r}")
    if not isinstance(self_loops, bool):
        raise ConfigError(f"{pre}self_loops: must be true or false, got {self_loops!r}")
    if mode == "radius":
        if radius is None:
            raise ConfigError(f"{pre}radius: mode='radius' needs a radius in patch steps (e.g. radius=1.5 "
                              "for the 8-neighbourhood)")
        _check_positive(radius, "radius", pre)
    elif radius is not None:
        raise ConfigError(f"{pre}radius: only used with mode='radius' (got radius={radius!r} with mode={mode!r}; "
                          "mode='paper' uses window * 1.42)")
    if mode == "paper":
        _check_positive(window, "window", pre)


def _check_positive(value: Any, name: str, pre: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{pre}{name}: must be a number > 0 (patch steps), got {value!r}")


@dataclass
class GraphConfig:
    """How to build each slide's spatial graph (see :func:`wsigraph.graph.spatial_graph`).

    Attributes:
        mode: ``"paper"`` (radius ``window * 1.42`` steps), ``"radius"`` (``radius`` steps), ``"knn"`` (``k``),
            or ``"none"``: no graph, and the feature files need no coordinates (plain ``.pt`` tensors), for
            the models that need no graph (``needs_graph`` False; CLI ``--no-coords``).
        k: neighbours per node in ``knn`` mode.
        radius: radius in patch steps for ``radius`` mode (must be None otherwise).
        window: the paper's window (2 -> 24-neighbourhood).
        self_loops: add ``(i, i)`` for every node.
        backend: ``auto``, ``lattice``, ``kdtree`` or ``torch_cluster``; all give the same edges, so the
            backend is not part of the graph cache key.
        edge_attr: store edge lengths (patch steps) as ``edge_attr`` (E, 1).
    """

    mode: str = "paper"
    k: int = 8
    radius: float | None = None
    window: float = 2.0
    self_loops: bool = True
    backend: str = "auto"
    edge_attr: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @property
    def uses_coords(self) -> bool:
        """False for ``mode="none"``: no graph is built and coordinates are not read."""
        return self.mode != NO_GRAPH

    def validate(self) -> None:
        if self.mode == NO_GRAPH:
            if self.radius is not None:
                raise ConfigError("graph config: radius: only used with mode='radius' (mode is 'none')")
        else:
            check_graph_args(self.mode, self.k, self.radius, self.window, self.self_loops, self.backend,
                             where="graph config")
        if not isinstance(self.edge_attr, bool):
            raise ConfigError(f"graph config: edge_attr: must be true or false, got {self.edge_attr!r}")

    def spatial_graph_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`spatial_graph` (without ``step``)."""
        return {"mode": self.mode, "k": int(self.k), "radius": self.radius, "window": self.window,
                "self_loops": self.self_loops, "backend": self.backend, "return_distances": self.edge_attr}

    def cache_fields(self) -> dict[str, Any]:
        """The parameters that change the graph: the cache key is built from these only.

        Fields a mode does not use (``k`` outside knn, ``radius``/``window`` outside their modes) and the
        backend (every backend returns the same edges) are left out, so changing them rebuilds nothing.
        """
        out: dict[str, Any] = {"mode": self.mode, "self_loops": self.self_loops, "edge_attr": self.edge_attr}
        if self.mode == "knn":
            out["k"] = int(self.k)
        elif self.mode == "radius":
            out["radius"] = float(self.radius)  # type: ignore[arg-type]
        else:
            out["window"] = float(self.window)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
