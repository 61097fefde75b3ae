"""The cohort-job layer: one place for what every per-slide stage shares.

* :mod:`wsigraph.pipeline.paths`: slide ids as file names (the traversal guard every stage uses).
* :mod:`wsigraph.pipeline.provenance`: what made an output (parameters, inputs), so a rerun resumes only
  outputs made with the same parameters.

Importing this package is cheap (no torch): the CLI and the data readers use it.
"""
from wsigraph.pipeline.paths import check_slide_id, slide_file

__all__ = ["check_slide_id", "slide_file"]
