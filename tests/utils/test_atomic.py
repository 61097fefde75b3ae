"""Tests of the atomic writers (wsigraph.utils.atomic)."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from wsigraph.utils.atomic import atomic_path, atomic_write_json, atomic_write_text


def _strict_json(text: str):
    """Parse JSON refusing the non-standard NaN / Infinity tokens that json.dumps writes by default."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------------------------------
# atomic_path
# ----------------------------------------------------------------------------------------------------


def test_atomic_path_success_replaces_target_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.h5"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # the target only changes on success
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_atomic_path_temp_name_is_hidden_tmp_beside_target(tmp_path):
    target = tmp_path / "slide_1.h5"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent  # same folder: the rename is atomic (same file system)
        assert tmp.name.startswith(".")
        assert tmp.name.startswith(f".{target.name}.")
        assert tmp.name.endswith(".tmp")
        assert tmp.exists()
        tmp.write_bytes(b"x")
        # a folder scan for outputs never sees the temporary file
        assert list(tmp_path.glob("*.h5")) == []
    assert list(tmp_path.glob("*.h5")) == [target]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_path_failure_leaves_target_untouched_and_removes_temp(tmp_path, exc):
    target = tmp_path / "report.csv"
    target.write_text("complete old content")
    with pytest.raises(type(exc)):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise exc
    assert target.read_text() == "complete old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_atomic_path_failure_without_previous_target_creates_nothing(tmp_path):
    target = tmp_path / "new.json"
    with pytest.raises(ValueError, match="bad"):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise ValueError("bad")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_failure_after_temp_was_deleted_by_body(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.unlink()
            raise OSError("writer removed its own file")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("hi")
    assert target.read_text() == "hi"


def test_atomic_write_text_roundtrips_utf8(tmp_path):
    text = "µm/px — slide α\n"
    path = atomic_write_text(tmp_path / "t.txt", text)
    assert path == tmp_path / "t.txt"
    assert path.read_bytes().decode("utf-8") == text



@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_path_output_gets_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = atomic_write_text(tmp_path / "t.txt", "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask

# ----------------------------------------------------------------------------------------------------
# atomic_write_json
# ----------------------------------------------------------------------------------------------------


def test_atomic_write_json_turns_nan_into_null(tmp_path):
    obj = {"auc": float("nan"), "nested": {"vals": [1.5, float("nan")], "pair": (float("nan"), 2)},
           "np64": np.float64("nan"), "ok": 0.25}
    path = atomic_write_json(tmp_path / "m.json", obj)
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text
    back = _strict_json(text)
    assert back == {"auc": None, "nested": {"vals": [1.5, None], "pair": [None, 2]}, "np64": None, "ok": 0.25}


def test_atomic_write_json_converts_numpy_and_paths(tmp_path):
    obj = {"n": np.int64(3), "x": np.float32(0.5), "arr": np.arange(3), "p": tmp_path / "f.h5"}
    back = _strict_json(atomic_write_json(tmp_path / "m.json", obj).read_text())
    assert back == {"n": 3, "x": 0.5, "arr": [0, 1, 2], "p": str(tmp_path / "f.h5")}


def test_atomic_write_json_unserialisable_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match="set"):
        atomic_write_json(tmp_path / "m.json", {"s": {1, 2}})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_json_turns_numpy_nan_into_null(tmp_path):
    obj = {"f32": np.float32("nan"), "arr": np.array([1.0, np.nan])}
    back = _strict_json(atomic_write_json(tmp_path / "m.json", obj).read_text())
    assert back == {"f32": None, "arr": [1.0, None]}
