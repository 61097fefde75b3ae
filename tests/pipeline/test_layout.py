"""Every stage of ``wsigraph.pipeline`` has its own test module here, so a contributor finds a stage's tests
where the stage is (issue 11: the stage tests used to live beside the per-slide functions)."""
from __future__ import annotations

from pathlib import Path

import wsigraph.pipeline

HERE = Path(__file__).parent


def test_every_pipeline_module_has_its_test_module():
    package = Path(wsigraph.pipeline.__file__).parent
    modules = sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")
    assert len(modules) >= 14  # segment/tile (tiling), extract, preprocess, graphs, patch labels, ...
    missing = [f"test_{m}.py" for m in modules if not (HERE / f"test_{m}.py").is_file()]
    assert missing == [], f"pipeline modules without a test module in {HERE}: {missing}"
