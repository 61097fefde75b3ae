"""The cohort-job layer: one place for what every per-slide stage shares, and one module per stage.

Shared parts:

* :mod:`wsigraph.pipeline.paths`: slide ids as file names (the traversal guard every stage uses).
* :mod:`wsigraph.pipeline.provenance`: what made an output (parameters, inputs), so a rerun resumes only
  outputs made with the same parameters.
* :mod:`wsigraph.pipeline.runner`: ``run_per_slide``: shards, progress, resume, ``on_error``, the report.
* :mod:`wsigraph.pipeline.shards`: ``--shard i/n`` and the ``RANK``/``WORLD_SIZE``, ``SLURM_*`` defaults.
* :mod:`wsigraph.pipeline.slides`: which slides a job runs on (folders, manifests, coords files) and what a
  data root holds (slide files, feature folders, SRMIL pickles).
* :mod:`wsigraph.pipeline.validate`: checks of a cohort's feature files before training or inference.

Stages (one command each):

* :mod:`wsigraph.pipeline.tiling`: ``segment`` and ``tile``.
* :mod:`wsigraph.pipeline.extract`: ``extract`` (and the extraction half of ``preprocess``).
* :mod:`wsigraph.pipeline.preprocess`: ``preprocess`` (tiling then extraction).
* :mod:`wsigraph.pipeline.graphs`: ``build-graphs`` (the graph cache).
* :mod:`wsigraph.pipeline.patch_labels`: ``label-patches`` and feature folders for the harness.
* :mod:`wsigraph.pipeline.imports`: ``import-srmil``.
* :mod:`wsigraph.pipeline.predict`: ``predict``.
* :mod:`wsigraph.pipeline.heatmaps`: ``heatmap``.

Importing this package is cheap (no torch): the CLI and the data readers use it; the stage modules are
imported by whoever runs them.
"""
from wsigraph.pipeline.paths import check_slide_id, slide_file

__all__ = ["check_slide_id", "slide_file"]
