"""``wsigraph.pipeline.provenance``: what an output records of the parameters and inputs that made it, and
how two records are compared (each stage's resume is tested in test_resume.py)."""
from __future__ import annotations

import os

from wsigraph.pipeline.provenance import Provenance, provenance_differences, quick_fingerprint


def test_differences_name_each_changed_key_and_ignore_the_version():
    a = Provenance("tile", {"tiling": {"patch_size": 224, "target_mpp": 0.5}, "mpp": None}, {"slide": {"size": 3}},
                   version="0.1.0")
    b = Provenance("tile", {"tiling": {"patch_size": 256, "target_mpp": 0.5}, "mpp": 0.25}, {"slide": {"size": 4}},
                   version="9.9")
    assert provenance_differences(a, a) == []
    assert provenance_differences(a, Provenance.from_json(a.to_json())) == []
    assert provenance_differences(a, b) == ["mpp: None -> 0.25", "tiling.patch_size: 224 -> 256",
                                            "inputs.slide.size: 3 -> 4"]
    assert provenance_differences(None, a)[0].startswith("no record")
    assert provenance_differences(Provenance("segment"), Provenance("tile")) == ["stage: 'segment' -> 'tile'"]


def test_quick_fingerprint_follows_content_not_time(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(3 << 20))
    fp = quick_fingerprint(p)
    os.utime(p, (1, 1))
    assert quick_fingerprint(p) == fp  # a copy with a new time stamp stays the same input
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    assert quick_fingerprint(p) != fp
