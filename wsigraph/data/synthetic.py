"""Synthetic cohorts: slides with known patch-level ground truth, in the same files as real data.

Each slide is a patch lattice with an irregular tissue shape (1-3 fragments, small holes, thresholded
smoothed noise), spatially coherent tissue types (argmax of smoothed noise fields) and patch features
``prototype[type] + noise``. Three modes:

* ``"lesion"``: slides of a positive class hold 1-3 contiguous lesion regions whose patches are shifted
  along that class's lesion direction (``lesion_strength``, in units of the per-patch noise). Every slide,
  negative or not, also holds a few scattered lesion-like singletons (``decoy_fraction``), so one
  lesion-looking patch is not proof of a lesion.
* ``"contiguity"`` (two classes): every slide holds the same number (in distribution) of lesion-like
  patches with the same per-patch feature distribution; in positive slides they form contiguous clusters,
  in negative slides they are isolated singletons (no two 8-neighbours). Only the spatial arrangement
  separates the classes: a set-based model (mean pooling, ABMIL) stays near chance, a graph model can
  learn it.
* ``"camelyon"`` (CAMELYON16-like): positive slides hold a few small lesions (``lesion_regions``), each a
  *macro* lesion (``lesion_size`` patches, shifted by ``lesion_strength``) or, with probability
  ``micro_fraction``, a *micro* lesion (``micro_size`` patches, shifted by the weaker ``micro_strength``:
  hard to see patch by patch, but contiguous). Lesions keep a one-patch margin from each other. Every
  slide also holds scattered lesion-like singletons (``decoy_fraction``, shifted by ``decoy_strength``,
  default ``lesion_strength``), like the tumour mimics of negative lymph nodes. Files add ``lesion_kind``
  (N,) int8: 0 none, 1 macro lesion, 2 micro lesion, 3 decoy.

Feature geometry. With ``latent_dim = 0`` (the default) a patch is ``prototype[type] + noise`` in all
``dim`` dimensions (isotropic noise), plus a per-slide offset (``slide_shift``). Real foundation-model
embeddings are not like that: most of their variance lies in a few dozen directions, and slides differ by
stain and scanner. With ``latent_dim > 0`` the patch (prototype, noise, lesion shift) is drawn in a
``latent_dim``-dimensional space; each slide then gets its own stain effect there (a random linear
distortion ``z (I + stain_mix G / sqrt(latent_dim))``, which also bends the lesion direction a little, and an
offset of per-dimension std ``stain_shift``); a fixed random orthonormal map embeds the latent space in the
``dim`` dimensions, and ``ambient_noise`` (per-dimension std) is added in all of them. A high-dimensional
model can then memorise slides by their stain while the lesion signal lives in one latent direction.
The tissue, type and lesion layout of a slide does not depend on the feature geometry: a latent cohort has
the same slides (shape, tissue types, lesions, labels) as the isotropic one of the same seed; only where a
slide sits on the global grid (its coordinate offset) differs.

Files: ``<out_dir>/features/<slide_id>.h5`` (our layout: ``features``, ``coords``, ``patch_labels``
(1 = lesion), plus ``tissue_type`` (N,) int8 and ``lesion_like`` (N,) int8 for rendering and checks, and
``lesion_kind`` in camelyon mode),
``<out_dir>/manifest.csv`` (``slide_id,label,case_id``; a few cases hold two slides) and
``<out_dir>/synthetic.json`` (the generation parameters). Everything is deterministic per seed.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from scipy import ndimage

from wsigraph.errors import ConfigError, InputError

log = logging.getLogger("wsigraph")

MODES = ("lesion", "contiguity", "camelyon")
_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity
_SQUARE = np.ones((3, 3), dtype=bool)  # 8-connectivity


@dataclass
class SyntheticConfig:
    """Parameters of a synthetic cohort. Sizes are in patches (lattice cells) unless stated.

    Attributes:
        n_slides: number of slides.
        classes: class names; the first is the negative class. ``"contiguity"`` needs exactly two.
        mode: ``"lesion"``, ``"contiguity"`` or ``"camelyon"`` (see the module docstring).
        dim: feature dimension D.
        grid: (min, max) lattice side length; each slide draws its rows and columns in this range.
        tissue_fraction: (min, max) fraction of the lattice covered by tissue.
        fragments: (min, max) number of tissue fragments.
        n_tissue_types: number of tissue types (prototype vectors).
        type_scale: smoothing sigma of the tissue-type fields (patches): larger = bigger regions.
        type_separation: per-dimension std of the prototypes (the noise std is ``noise``).
        noise: per-dimension std of the patch noise.
        slide_shift: per-dimension std of a per-slide offset added to every patch in all ``dim``
            dimensions (batch/stain effect).
        lesion_strength: shift of lesion(-like) patches along the lesion direction, in units of ``noise``:
            the difficulty knob (per-patch separability). Camelyon mode: the macro lesions' shift.
        lesion_fraction: (min, max) fraction of a slide's tissue patches that are lesion (lesion mode,
            positive slides) or lesion-like (contiguity mode, every slide); unused in camelyon mode.
        lesion_regions: (min, max) number of contiguous lesion regions / clusters (camelyon mode: lesions
            per positive slide).
        decoy_fraction: lesion and camelyon modes: fraction of tissue patches that are scattered
            lesion-like singletons, in every slide.
        decoy_strength: camelyon mode: shift of the decoys in units of ``noise`` (None: ``lesion_strength``).
        lesion_size: camelyon mode: (min, max) patches of a macro lesion (log-uniform).
        micro_size: camelyon mode: (min, max) patches of a micro lesion (log-uniform).
        micro_fraction: camelyon mode: probability that a lesion is a micro lesion.
        micro_strength: camelyon mode: shift of micro-lesion patches in units of ``noise``.
        latent_dim: 0: isotropic features in ``dim`` dimensions; > 0: patches drawn in a latent space of
            this dimension embedded in ``dim`` dimensions (see the module docstring); prototypes, lesion
            directions, ``noise`` and the lesion strengths then live in the latent space.
        ambient_noise: latent mode: per-dimension std of the noise added in all ``dim`` dimensions.
        stain_shift: latent mode: per-dimension std of a per-slide offset in the latent space.
        stain_mix: latent mode: strength of a per-slide random linear distortion of the latent space.
        cluster_fraction: contiguity mode: fraction of a positive slide's lesion-like patches in clusters
            (the rest scattered); 1.0 = all clustered. Lower = harder.
        positive_fraction: fraction of slides in the positive class(es).
        paired_case_fraction: fraction of slides that share their case (patient) with another slide.
        patch_size, patch_size_level0, mpp: file attributes (224 px at 0.5 um/px by default; use
            ``patch_size_level0=448`` to mimic 40x slides read at 20x).
        feature_dtype: ``"float32"`` or ``"float16"``.
        seed: everything is a function of the seed and the parameters.
    """

    n_slides: int = 40
    classes: tuple[str, ...] = ("normal", "tumor")
    mode: str = "lesion"
    dim: int = 32
    grid: tuple[int, int] = (40, 72)
    tissue_fraction: tuple[float, float] = (0.35, 0.6)
    fragments: tuple[int, int] = (1, 3)
    n_tissue_types: int = 4
    type_scale: float = 4.0
    type_separation: float = 1.0
    noise: float = 1.0
    slide_shift: float = 0.2
    lesion_strength: float = 2.0
    lesion_fraction: tuple[float, float] = (0.03, 0.12)
    lesion_regions: tuple[int, int] = (1, 3)
    decoy_fraction: float = 0.01
    decoy_strength: Optional[float] = None
    lesion_size: tuple[int, int] = (20, 80)
    micro_size: tuple[int, int] = (4, 16)
    micro_fraction: float = 0.5
    micro_strength: float = 1.0
    latent_dim: int = 0
    ambient_noise: float = 0.0
    stain_shift: float = 0.0
    stain_mix: float = 0.0
    cluster_fraction: float = 1.0
    positive_fraction: float = 0.5
    paired_case_fraction: float = 0.1
    patch_size: int = 224
    patch_size_level0: int = 224
    mpp: float = 0.5
    feature_dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        self.grid = tuple(int(v) for v in self.grid)  # type: ignore[assignment]
        self.lesion_size = tuple(int(v) for v in self.lesion_size)  # type: ignore[assignment]
        self.micro_size = tuple(int(v) for v in self.micro_size)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad parameter."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"synthetic cohort: {key}={getattr(self, key)!r}: {why}")

        if self.mode not in MODES:
            raise bad("mode", f"must be one of {list(MODES)}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise bad("classes", "need at least two distinct class names")
        if self.mode == "contiguity" and len(self.classes) != 2:
            raise bad("classes", "contiguity mode has exactly two classes (scattered vs clustered)")
        if self.n_slides < 2:
            raise bad("n_slides", "need at least 2 slides")
        if self.dim < 1:
            raise bad("dim", "must be >= 1")
        for key in ("grid", "tissue_fraction", "fragments", "lesion_fraction", "lesion_regions", "lesion_size",
                    "micro_size"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise bad(key, "(min, max) with min > max")
        if self.grid[0] < 8:
            raise bad("grid", "slides need at least 8 x 8 patches")
        if not (0.05 <= self.tissue_fraction[0] and self.tissue_fraction[1] <= 0.95):
            raise bad("tissue_fraction", "must lie in [0.05, 0.95]")
        if self.fragments[0] < 1:
            raise bad("fragments", "at least one fragment")
        if self.lesion_regions[0] < 1:
            raise bad("lesion_regions", "at least one region")
        if not (0.0 < self.lesion_fraction[0] and self.lesion_fraction[1] <= 0.5):
            raise bad("lesion_fraction", "must lie in (0, 0.5]")
        if self.mode == "contiguity" and self.lesion_fraction[1] > 0.15:
            raise bad("lesion_fraction", "contiguity mode places isolated singletons: keep the max <= 0.15")
        if not 0.0 <= self.decoy_fraction <= 0.1:
            raise bad("decoy_fraction", "must lie in [0, 0.1]")
        if self.lesion_size[0] < 1 or self.micro_size[0] < 1:
            raise bad("lesion_size" if self.lesion_size[0] < 1 else "micro_size", "lesions have at least 1 patch")
        if not 0.0 <= self.micro_fraction <= 1.0:
            raise bad("micro_fraction", "must lie in [0, 1]")
        if self.latent_dim < 0:
            raise bad("latent_dim", "must be >= 0 (0: isotropic features)")
        if self.latent_dim > self.dim:
            raise bad("latent_dim", f"must be <= dim ({self.dim})")
        if self.latent_dim == 0:
            for key in ("ambient_noise", "stain_shift", "stain_mix"):
                if getattr(self, key) != 0:
                    raise bad(key, "only with latent_dim > 0 (the latent feature geometry)")
        if not 0.0 <= self.cluster_fraction <= 1.0:
            raise bad("cluster_fraction", "must lie in [0, 1]")
        if not 0.0 < self.positive_fraction < 1.0:
            raise bad("positive_fraction", "must lie in (0, 1)")
        if not 0.0 <= self.paired_case_fraction <= 1.0:
            raise bad("paired_case_fraction", "must lie in [0, 1]")
        if self.n_tissue_types < 1:
            raise bad("n_tissue_types", "at least one tissue type")
        if self.feature_dtype not in ("float32", "float16"):
            raise bad("feature_dtype", "'float32' or 'float16'")
        if self.patch_size_level0 < 1 or self.patch_size < 1 or self.mpp <= 0:
            raise ConfigError("synthetic cohort: patch_size, patch_size_level0 and mpp must be positive")
        for key in ("noise", "lesion_strength", "type_separation", "slide_shift", "type_scale", "micro_strength",
                    "ambient_noise", "stain_shift", "stain_mix"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if self.decoy_strength is not None and self.decoy_strength < 0:
            raise bad("decoy_strength", "must be >= 0 (or None: lesion_strength)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass
class SyntheticSlide:
    """One generated slide.

    Attributes:
        coords: (N, 2) int64, level-0 pixels, top-left (x, y), on a global grid of step patch_size_level0.
        features: (N, D) float32/float16.
        patch_labels: (N,) int8, 1 = lesion patch (ground truth).
        lesion_like: (N,) int8, 1 = the patch carries the lesion signal (lesions, decoys, singletons).
        tissue_type: (N,) int8, tissue type index of each patch.
        label_index: class index of the slide.
        lesion_kind: camelyon mode: (N,) int8, 0 none, 1 macro lesion, 2 micro lesion, 3 decoy; else None.
    """

    coords: np.ndarray
    features: np.ndarray
    patch_labels: np.ndarray
    lesion_like: np.ndarray
    tissue_type: np.ndarray
    label_index: int
    lesion_kind: Optional[np.ndarray] = None


@dataclass
class _Space:
    """Cohort-level feature geometry: tissue prototypes (T, D) and lesion directions (C, D), unit norm.

    Latent mode (``latent_dim = L > 0``): ``prototypes`` (T, L) and ``directions`` (C, L) live in the latent
    space and ``basis`` (L, D) has orthonormal rows (the embedding); otherwise ``basis`` is None.
    """

    prototypes: np.ndarray
    directions: np.ndarray
    basis: Optional[np.ndarray] = None


def _make_space(cfg: SyntheticConfig) -> _Space:
    rng = np.random.default_rng([cfg.seed, 0])
    protos = rng.standard_normal((cfg.n_tissue_types, cfg.dim)) * cfg.type_separation
    dirs = rng.standard_normal((len(cfg.classes), cfg.dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    if cfg.latent_dim == 0:
        return _Space(prototypes=protos, directions=dirs)
    # latent geometry from its own stream: the isotropic draws above stay what they always were
    lrng = np.random.default_rng([cfg.seed, 4])
    latent = cfg.latent_dim
    q, _ = np.linalg.qr(lrng.standard_normal((cfg.dim, latent)))  # (D, L), orthonormal columns
    protos = lrng.standard_normal((cfg.n_tissue_types, latent)) * cfg.type_separation
    dirs = lrng.standard_normal((len(cfg.classes), latent))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return _Space(prototypes=protos, directions=dirs, basis=np.ascontiguousarray(q.T))


# ----------------------------------------------------------------------------------------------------
# lattice geometry
# ----------------------------------------------------------------------------------------------------


def _unit_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | Sequence[float]) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="reflect")
    s = f.std()
    return (f - f.mean()) / (s if s > 0 else 1.0)


def tissue_mask(rng: np.random.Generator, shape: tuple[int, int], fraction: float, n_fragments: int) -> np.ndarray:
    """(H, W) bool tissue mask: 1-3 blobby fragments with irregular borders and small holes."""
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    env = np.zeros(shape)
    centres = rng.uniform(0.22, 0.78, size=(n_fragments, 2))
    radii = rng.uniform(0.14, 0.3, size=(n_fragments, 2)) / np.sqrt(n_fragments)
    angles = rng.uniform(0, np.pi, size=n_fragments)
    for (cy, cx), (ry, rx), a in zip(centres, radii, angles):  # 1-3 fragments, not a loop over patches
        dy, dx = yy - cy, xx - cx
        u, v = dy * np.cos(a) + dx * np.sin(a), -dy * np.sin(a) + dx * np.cos(a)
        env = np.maximum(env, np.exp(-0.5 * ((u / ry) ** 2 + (v / rx) ** 2)))
    edge = np.minimum(np.minimum(yy, 1 - yy), np.minimum(xx, 1 - xx))  # keep tissue off the lattice border
    field = env + 0.3 * _unit_noise(rng, shape, sigma=max(h, w) / 14.0) - 2.0 * np.clip(1 - edge / 0.08, 0, 1)
    mask = field > np.quantile(field, 1.0 - fraction)
    mask &= ~(_unit_noise(rng, shape, sigma=1.0) > 2.3)  # small holes (vacuoles, tears)
    lab, n = ndimage.label(mask, structure=_CROSS)
    if n > 1:  # drop crumbs
        sizes = np.bincount(lab.ravel())[1:]
        keep = np.concatenate([[False], sizes >= max(6, 0.02 * mask.sum())])
        mask = keep[lab]
    return mask


def tissue_types(rng: np.random.Generator, shape: tuple[int, int], n_types: int, scale: float) -> np.ndarray:
    """(H, W) int tissue type map: argmax of ``n_types`` smoothed noise fields (coherent regions)."""
    if n_types == 1:
        return np.zeros(shape, dtype=np.int64)
    fields = ndimage.gaussian_filter(rng.standard_normal((n_types,) + shape), sigma=(0, scale, scale))
    return np.argmax(fields, axis=0)


def grow_regions(rng: np.random.Generator, allowed: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """(H, W) bool: contiguous regions of the given sizes (cells) grown from random seeds inside ``allowed``.

    Each step adds a random part of the 4-connected frontier (vectorised), so borders are ragged. A region
    stuck in a small fragment continues from a new seed; the total is exact unless ``allowed`` runs out.
    """
    region = np.zeros(allowed.shape, dtype=bool)
    for size in sizes:
        cur = np.zeros_like(region)
        n = 0
        frontier_idx = np.empty(0, dtype=np.int64)
        while n < size:
            if frontier_idx.size == 0:  # start, or stuck: (re)seed
                idx = np.flatnonzero(allowed & ~region & ~cur)
                if idx.size == 0:
                    break
                cur.flat[rng.choice(idx)] = True
                n += 1
            else:
                take = frontier_idx[rng.random(frontier_idx.size) < 0.5]
                if take.size == 0:
                    take = frontier_idx[[rng.integers(frontier_idx.size)]]
                if take.size > size - n:
                    take = rng.choice(take, size - n, replace=False)
                cur.flat[take] = True
                n += take.size
            frontier_idx = np.flatnonzero(ndimage.binary_dilation(cur, structure=_CROSS) & allowed & ~region & ~cur)
        region |= cur
    return region


def scatter_isolated(rng: np.random.Generator, allowed: np.ndarray, count: int,
                     avoid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool with exactly ``count`` cells of ``allowed``, no two 8-neighbours, none touching ``avoid``.

    Rounds of random priorities where local maxima over 3 x 3 windows are accepted (vectorised
    hard-core sampling). Raises :class:`InputError` when the slide cannot hold that many.
    """
    chosen = np.zeros(allowed.shape, dtype=bool)
    blocked = ~allowed
    if avoid is not None:
        blocked = blocked | ndimage.binary_dilation(avoid, structure=_SQUARE)
    for _ in range(200):
        need = count - int(chosen.sum())
        if need <= 0:
            break
        cand = ~blocked
        if not cand.any():
            break
        pri = np.where(cand, rng.random(allowed.shape), -1.0)
        peak = (pri == ndimage.maximum_filter(pri, size=3, mode="constant", cval=-1.0)) & cand
        idx = np.flatnonzero(peak)
        if idx.size > need:
            idx = rng.choice(idx, need, replace=False)
        chosen.flat[idx] = True
        blocked = blocked | ndimage.binary_dilation(chosen, structure=_SQUARE)
    if int(chosen.sum()) < count:
        raise InputError(f"synthetic slide: cannot place {count} isolated patches on {int(allowed.sum())} "
                         "tissue patches; lower lesion_fraction/decoy_fraction or enlarge grid")
    return chosen


def _split_sizes(rng: np.random.Generator, total: int, k: int) -> list[int]:
    """``total`` split into ``k`` positive parts with random (Dirichlet) proportions."""
    k = max(1, min(k, total))
    sizes = np.floor(rng.dirichlet(np.full(k, 2.0)) * (total - k)).astype(int) + 1
    sizes[0] += total - int(sizes.sum())
    return [int(s) for s in sizes]


# ----------------------------------------------------------------------------------------------------
# one slide
# ----------------------------------------------------------------------------------------------------


def generate_slide(cfg: SyntheticConfig, index: int, label_index: int, space: _Space | None = None) -> SyntheticSlide:
    """Generate slide ``index`` of class ``label_index``; a pure function of (cfg, index, label_index)."""
    space = space or _make_space(cfg)
    rng = np.random.default_rng([cfg.seed, 1, index])
    if cfg.mode == "camelyon":
        return _camelyon_slide(cfg, rng, label_index, space)
    h, w = (int(v) for v in rng.integers(cfg.grid[0], cfg.grid[1] + 1, size=2))
    frac = rng.uniform(*cfg.tissue_fraction)
    n_frag = int(rng.integers(cfg.fragments[0], cfg.fragments[1] + 1))
    tissue = tissue_mask(rng, (h, w), frac, n_frag)
    types = tissue_types(rng, (h, w), cfg.n_tissue_types, cfg.type_scale)
    n_tissue = int(tissue.sum())
    # drawn for every slide, whatever its class, so that counts never depend on the label
    lesion_frac = rng.uniform(*cfg.lesion_fraction)
    n_regions = int(rng.integers(cfg.lesion_regions[0], cfg.lesion_regions[1] + 1))
    n_lesion = max(1, int(round(lesion_frac * n_tissue)))
    n_decoy = int(rng.binomial(n_tissue, cfg.decoy_fraction)) if cfg.mode == "lesion" else 0
    positive = label_index > 0

    lesion = np.zeros_like(tissue)  # ground-truth lesion cells
    lesion_like = np.zeros_like(tissue)  # cells carrying the lesion signal
    if cfg.mode == "lesion":
        if positive:
            lesion = grow_regions(rng, tissue, _split_sizes(rng, n_lesion, n_regions))
        decoys = scatter_isolated(rng, tissue & ~lesion, n_decoy, avoid=lesion) if n_decoy else np.zeros_like(tissue)
        lesion_like = lesion | decoys
    else:
        n_clustered = int(round(cfg.cluster_fraction * n_lesion)) if positive else 0
        if n_clustered:
            lesion = grow_regions(rng, tissue, _split_sizes(rng, n_clustered, n_regions))
        rest = n_lesion - int(lesion.sum())
        singles = scatter_isolated(rng, tissue & ~lesion, rest, avoid=lesion) if rest else np.zeros_like(tissue)
        lesion_like = lesion | singles

    rows, cols = np.nonzero(tissue)  # raster order, like a tiler
    t = types[rows, cols]
    ll = lesion_like[rows, cols]
    n = rows.size
    if cfg.latent_dim:
        return _latent_slide(cfg, rng, space, label_index, rows, cols, t, lesion, lesion_like)
    feats = (space.prototypes[t] + cfg.noise * rng.standard_normal((n, cfg.dim))
             + cfg.slide_shift * rng.standard_normal(cfg.dim))
    if cfg.mode == "lesion":
        # lesion(-like) patches keep their tissue and move along a lesion direction: the slide's class
        # direction for true lesions, a random positive class's direction for decoys
        n_pos = len(cfg.classes) - 1
        decoy_cls = 1 + rng.integers(0, n_pos, size=n)
        cls = np.where(lesion[rows, cols], max(label_index, 1), decoy_cls)
        feats[ll] += cfg.lesion_strength * cfg.noise * space.directions[cls[ll]]
    else:
        # lesion-like patches replace the tissue: one distribution, wherever they lie
        base = space.prototypes.mean(axis=0) + cfg.lesion_strength * cfg.noise * space.directions[1]
        feats[ll] = base + (feats[ll] - space.prototypes[t[ll]])
    off = rng.integers(0, 64, size=2)  # slide offset on the global grid, in patches
    step = int(cfg.patch_size_level0)
    coords = np.stack([(cols + off[0]) * step, (rows + off[1]) * step], axis=1).astype(np.int64)
    return SyntheticSlide(
        coords=coords,
        features=feats.astype(cfg.feature_dtype),
        patch_labels=lesion[rows, cols].astype(np.int8),
        lesion_like=ll.astype(np.int8),
        tissue_type=t.astype(np.int8),
        label_index=int(label_index),
    )


def _embed(cfg: SyntheticConfig, rng: np.random.Generator, space: _Space, z: np.ndarray) -> np.ndarray:
    """Latent patches (N, L) -> (N, D) features: the slide's stain effect, the embedding, ambient noise."""
    latent = cfg.latent_dim
    mix = np.eye(latent) + cfg.stain_mix * rng.standard_normal((latent, latent)) / np.sqrt(latent)
    z = z @ mix + cfg.stain_shift * rng.standard_normal(latent)
    assert space.basis is not None
    feats = z @ space.basis
    if cfg.ambient_noise:
        feats += cfg.ambient_noise * rng.standard_normal(feats.shape)
    if cfg.slide_shift:
        feats += cfg.slide_shift * rng.standard_normal(cfg.dim)
    return feats


def _latent_slide(cfg: SyntheticConfig, rng: np.random.Generator, space: _Space, label_index: int,
                  rows: np.ndarray, cols: np.ndarray, t: np.ndarray, lesion: np.ndarray,
                  lesion_like: np.ndarray) -> SyntheticSlide:
    """Lesion and contiguity modes with the latent feature geometry (same layout, latent features)."""
    ll = lesion_like[rows, cols]
    n = rows.size
    z = space.prototypes[t] + cfg.noise * rng.standard_normal((n, cfg.latent_dim))
    if cfg.mode == "lesion":
        n_pos = len(cfg.classes) - 1
        decoy_cls = 1 + rng.integers(0, n_pos, size=n)
        cls = np.where(lesion[rows, cols], max(label_index, 1), decoy_cls)
        z[ll] += cfg.lesion_strength * cfg.noise * space.directions[cls[ll]]
    else:
        base = space.prototypes.mean(axis=0) + cfg.lesion_strength * cfg.noise * space.directions[1]
        z[ll] = base + (z[ll] - space.prototypes[t[ll]])
    feats = _embed(cfg, rng, space, z)
    off = rng.integers(0, 64, size=2)
    step = int(cfg.patch_size_level0)
    coords = np.stack([(cols + off[0]) * step, (rows + off[1]) * step], axis=1).astype(np.int64)
    return SyntheticSlide(coords=coords, features=feats.astype(cfg.feature_dtype),
                          patch_labels=lesion[rows, cols].astype(np.int8), lesion_like=ll.astype(np.int8),
                          tissue_type=t.astype(np.int8), label_index=int(label_index))


def _log_uniform_sizes(rng: np.random.Generator, bounds: tuple[int, int], k: int) -> np.ndarray:
    lo, hi = bounds
    return np.rint(np.exp(rng.uniform(np.log(lo), np.log(hi + 0.5), size=k))).clip(lo, hi).astype(int)


def _camelyon_slide(cfg: SyntheticConfig, rng: np.random.Generator, label_index: int,
                    space: _Space) -> SyntheticSlide:
    """A CAMELYON16-like slide: a few small macro / micro lesions in positives, decoys everywhere."""
    h, w = (int(v) for v in rng.integers(cfg.grid[0], cfg.grid[1] + 1, size=2))
    frac = rng.uniform(*cfg.tissue_fraction)
    n_frag = int(rng.integers(cfg.fragments[0], cfg.fragments[1] + 1))
    tissue = tissue_mask(rng, (h, w), frac, n_frag)
    types = tissue_types(rng, (h, w), cfg.n_tissue_types, cfg.type_scale)
    n_tissue = int(tissue.sum())
    # drawn for every slide, whatever its class
    n_lesions = int(rng.integers(cfg.lesion_regions[0], cfg.lesion_regions[1] + 1))
    micro = rng.random(n_lesions) < cfg.micro_fraction
    sizes = np.where(micro, _log_uniform_sizes(rng, cfg.micro_size, n_lesions),
                     _log_uniform_sizes(rng, cfg.lesion_size, n_lesions))
    n_decoy = int(rng.binomial(n_tissue, cfg.decoy_fraction))
    kind = np.zeros(tissue.shape, dtype=np.int8)  # 0 none, 1 macro, 2 micro, 3 decoy
    if label_index > 0:
        for size, is_micro in zip(sizes, micro):  # a few lesions per slide, apart from each other
            taken = ndimage.binary_dilation(kind > 0, structure=_SQUARE)
            region = grow_regions(rng, tissue & ~taken, [int(size)])
            kind[region] = 2 if is_micro else 1
    lesion = kind > 0
    if n_decoy:
        kind[scatter_isolated(rng, tissue & ~lesion, n_decoy, avoid=lesion)] = 3

    rows, cols = np.nonzero(tissue)
    t = types[rows, cols]
    k = kind[rows, cols]
    n = rows.size
    latent = cfg.latent_dim or cfg.dim
    z = space.prototypes[t] + cfg.noise * rng.standard_normal((n, latent))
    n_pos = len(cfg.classes) - 1
    cls = np.where(k == 3, 1 + rng.integers(0, n_pos, size=n), max(label_index, 1))
    decoy = cfg.lesion_strength if cfg.decoy_strength is None else cfg.decoy_strength
    strength = np.array([0.0, cfg.lesion_strength, cfg.micro_strength, decoy])[k]
    z += (strength * cfg.noise)[:, None] * space.directions[cls]
    if cfg.latent_dim:
        feats = _embed(cfg, rng, space, z)
    else:
        feats = z + cfg.slide_shift * rng.standard_normal(cfg.dim)
    off = rng.integers(0, 64, size=2)
    step = int(cfg.patch_size_level0)
    coords = np.stack([(cols + off[0]) * step, (rows + off[1]) * step], axis=1).astype(np.int64)
    return SyntheticSlide(coords=coords, features=feats.astype(cfg.feature_dtype),
                          patch_labels=((k == 1) | (k == 2)).astype(np.int8), lesion_like=(k > 0).astype(np.int8),
                          tissue_type=t.astype(np.int8), label_index=int(label_index), lesion_kind=k)


# ----------------------------------------------------------------------------------------------------
# cohort
# ----------------------------------------------------------------------------------------------------


def _assign_labels(cfg: SyntheticConfig) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, 2])
    n_pos = int(round(cfg.positive_fraction * cfg.n_slides))
    n_pos = min(max(n_pos, 1), cfg.n_slides - 1)
    k = len(cfg.classes) - 1
    pos_labels = 1 + (np.arange(n_pos) % k)  # positive slides spread evenly over the positive classes
    labels = np.concatenate([np.zeros(cfg.n_slides - n_pos, dtype=np.int64), pos_labels])
    return rng.permutation(labels)


def _assign_cases(cfg: SyntheticConfig, labels: np.ndarray, slide_ids: list[str]) -> list[str]:
    """Case ids: a few same-class pairs of slides share a case; the rest have their own."""
    rng = np.random.default_rng([cfg.seed, 3])
    cases = [f"case_{sid.split('_', 1)[1]}" for sid in slide_ids]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_pairs = int(round(cfg.paired_case_fraction * len(members) / 2))
        for a, b in members[: 2 * n_pairs].reshape(-1, 2):
            first, second = sorted((int(a), int(b)))
            cases[second] = cases[first]
    return cases


def outcomes(burden: np.ndarray, seed: int, case_ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Survival and regression ground truth of slides with lesion burden ``burden`` (n,) (the share of
    lesion patches: contiguous lesions only, in contiguity mode), drawn once per patient (``case_ids``;
    the patient's burden is its slides' mean) from a generator of its own (the slides do not change): log
    hazard ``r = 3 * burden / max(burden)``, event time ~ Exponential(rate 0.1 e^r), censoring ~
    Uniform(0, 90th percentile of the event times); ``target = 10 * burden + N(0, 0.25)``.

    Returns per slide ``{"time", "event", "target", "log_hazard"}`` (rounded to 4 decimals, as written to the
    manifest)."""
    import pandas as pd

    rng = np.random.default_rng([int(seed), 7])
    cases = pd.Series(range(len(burden)) if case_ids is None else list(case_ids))
    codes, _ = pd.factorize(cases)
    b = pd.Series(np.asarray(burden, dtype=np.float64)).groupby(codes).mean().to_numpy()
    r = 3.0 * b / b.max() if b.max() > 0 else np.zeros_like(b)
    t_event = rng.exponential(1.0, size=len(b)) / (0.1 * np.exp(r))
    t_censor = rng.uniform(0.0, np.quantile(t_event, 0.9), size=len(b))
    per_case = {"time": np.round(np.minimum(t_event, t_censor), 4), "event": (t_event <= t_censor).astype(np.int64),
                "target": np.round(10.0 * b + rng.normal(0.0, 0.25, size=len(b)), 4), "log_hazard": np.round(r, 4)}
    return {k: v[codes] for k, v in per_case.items()}


def make_synthetic_cohort(out_dir: str | os.PathLike, config: SyntheticConfig | None = None, **params: Any):
    """Write a synthetic cohort to ``out_dir`` and return it as a :class:`~wsigraph.data.manifest.Cohort`.

    Args:
        out_dir: output folder (``features/``, ``manifest.csv``, ``synthetic.json`` are written in it). The
            manifest has ``slide_id,label,case_id`` and the survival / regression ground truth of
            :func:`outcomes` (``time,event,target,log_hazard``, one per patient), driven by lesion burden.
        config: a :class:`SyntheticConfig`; or give its fields as keyword arguments
            (``n_slides=40, mode="contiguity", dim=32, seed=0, ...``).
    """
    from wsigraph.data.features import write_features
    from wsigraph.data.manifest import read_manifest
    from wsigraph.utils.atomic import atomic_path, atomic_write_json

    if config is None:
        valid = {f.name for f in dataclasses.fields(SyntheticConfig)}
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ConfigError(f"synthetic cohort: unknown parameter(s) {unknown}; valid: {sorted(valid)}")
        config = SyntheticConfig(**params)
    elif params:
        config = dataclasses.replace(config, **params)
    cfg = config
    out_dir = Path(out_dir)
    feat_dir = out_dir / "features"
    space = _make_space(cfg)
    labels = _assign_labels(cfg)
    width = max(3, len(str(cfg.n_slides - 1)))
    slide_ids = [f"syn_{i:0{width}d}" for i in range(cfg.n_slides)]
    cases = _assign_cases(cfg, labels, slide_ids)
    attrs = {
        "patch_size": int(cfg.patch_size), "patch_level": 0, "patch_size_level0": int(cfg.patch_size_level0),
        "mpp": float(cfg.mpp), "encoder": "synthetic", "synthetic_mode": cfg.mode, "synthetic_seed": int(cfg.seed),
        "lesion_strength": float(cfg.lesion_strength), "n_tissue_types": int(cfg.n_tissue_types),
    }
    burden = np.zeros(cfg.n_slides)
    for i, (sid, lab) in enumerate(zip(slide_ids, labels)):
        s = generate_slide(cfg, i, int(lab), space)
        burden[i] = float(np.mean(np.asarray(s.patch_labels) > 0)) if s.patch_labels is not None else 0.0
        path = feat_dir / f"{sid}.h5"
        extra = {"tissue_type": s.tissue_type, "lesion_like": s.lesion_like}
        if s.lesion_kind is not None:
            extra["lesion_kind"] = s.lesion_kind
        write_features(path, s.coords, s.features, attrs={**attrs, "synthetic_index": i},
                       patch_labels=s.patch_labels, extra=extra)
    import pandas as pd

    manifest = pd.DataFrame({"slide_id": slide_ids, "label": [cfg.classes[int(v)] for v in labels],
                             "case_id": cases, **outcomes(burden, cfg.seed, cases)})
    with atomic_path(out_dir / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)
    atomic_write_json(out_dir / "synthetic.json", cfg.to_dict())
    log.info("synthetic cohort: %d slides (%s mode) written to %s", cfg.n_slides, cfg.mode, out_dir)
    return read_manifest(out_dir / "manifest.csv", classes=list(cfg.classes), feature_dir=feat_dir)
