"""Slide ids as file names: the one rule every stage uses to turn an id into an output (or input) path.

A slide id comes from a manifest, a file name or a coords file; it becomes ``<folder>/<slide_id><suffix>``.
:func:`check_slide_id` accepts an id only when that path is a plain file directly inside ``folder``: no path
separators, no ``.`` or ``..``, no leading dot (hidden: folder scans skip such files, and wsigraph's
partial files are hidden), no control characters, at most 200 characters. Anything else is an
:class:`~wsigraph.errors.InputError` naming where the id came from, so no input can make wsigraph read or
write outside the folders it was given.
"""
from __future__ import annotations

import os
from pathlib import Path

from wsigraph.errors import InputError

MAX_SLIDE_ID_LENGTH = 200  # leaves room for suffixes like ".heatmap.png" under the 255-byte name limit


def slide_id_problem(slide_id: object) -> str | None:
    """Why ``slide_id`` cannot be a file name, or None when it can."""
    if not isinstance(slide_id, str):
        return f"is a {type(slide_id).__name__}, not text"
    if not slide_id:
        return "is empty"
    if slide_id != slide_id.strip():
        return "starts or ends with white space"
    if "/" in slide_id or "\\" in slide_id or (os.sep in slide_id) or (os.altsep and os.altsep in slide_id):
        return "contains a path separator"
    if slide_id in (".", ".."):
        return "is a relative folder name"
    if slide_id.startswith("."):
        return "starts with a dot (a hidden file name)"
    if any(ord(c) < 32 or ord(c) == 127 for c in slide_id):
        return "contains a control character"
    if len(slide_id) > MAX_SLIDE_ID_LENGTH:
        return f"is longer than {MAX_SLIDE_ID_LENGTH} characters"
    if len(os.fsencode(slide_id)) > MAX_SLIDE_ID_LENGTH + 40:
        return "is too long as a file name"
    return None


def check_slide_id(slide_id: object, where: str = "slide_id") -> str:
    """``slide_id`` unchanged when it is a safe file-name stem, else an :class:`InputError`.

    Args:
        slide_id: the id.
        where: names its source in the message, e.g. ``"manifest.csv, line 4"``.
    """
    problem = slide_id_problem(slide_id)
    if problem is not None:
        raise InputError(f"{where}: slide_id {slide_id!r} {problem}; a slide id becomes a file name, so it must "
                         "be a plain name (no '/', '\\', '..', leading dot or control characters)")
    return slide_id  # type: ignore[return-value]


def slide_file(folder: str | os.PathLike, slide_id: str, suffix: str, where: str = "slide_id") -> Path:
    """``folder / (slide_id + suffix)`` after :func:`check_slide_id`; the result is checked to lie directly
    in ``folder`` (a second guard that does not depend on the rule above)."""
    check_slide_id(slide_id, where)
    folder = Path(folder)
    path = folder / f"{slide_id}{suffix}"
    if path.parent != folder or os.path.isabs(f"{slide_id}{suffix}"):
        raise InputError(f"{where}: slide_id {slide_id!r} does not name a file inside {folder}")
    return path


__all__ = ["MAX_SLIDE_ID_LENGTH", "check_slide_id", "slide_file", "slide_id_problem"]
