"""Generated sections of ``benchmarks/RESULTS.md``, delimited by HTML-comment markers.

RESULTS.md is written by several generators (the speed harness, the accuracy harness) and by hand.
Each generator owns named sections::

    <!-- BEGIN graph_build -->
    ...generated Markdown...
    <!-- END graph_build -->

and replaces only those; everything outside its markers is kept byte for byte. A section that is not in
the file yet is appended at the end.

    from results_md import update_results_file
    update_results_file("benchmarks/RESULTS.md", {"accuracy": table_md})
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from wsigraph.errors import InputError
from wsigraph.utils.atomic import atomic_write_text

DEFAULT_HEADER = "# wsigraph benchmark results\n"
_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_MARKER = re.compile(r"^<!-- (BEGIN|END) ([^ ]+) -->[ \t]*$", re.MULTILINE)


def begin_marker(name: str) -> str:
    return f"<!-- BEGIN {name} -->"


def end_marker(name: str) -> str:
    return f"<!-- END {name} -->"


def find_sections(text: str, source: str = "<text>") -> dict[str, tuple[int, int]]:
    """``{name: (start, end)}``: character span of each section's body (between its two marker lines).

    Raises:
        InputError: a BEGIN without its END (or the reverse), nested or repeated sections; the message
            names ``source``, the section and the line.
    """
    spans: dict[str, tuple[int, int]] = {}
    open_name, open_end, open_line = None, 0, 0
    for m in _MARKER.finditer(text):
        kind, name = m.groups()
        line = text.count("\n", 0, m.start()) + 1
        if kind == "BEGIN":
            if open_name is not None:
                raise InputError(f"{source}, line {line}: section {name!r} begins inside section {open_name!r} "
                                 f"(opened on line {open_line}, no '{end_marker(open_name)}' before it)")
            if name in spans:
                raise InputError(f"{source}, line {line}: section {name!r} appears twice")
            open_name, open_end, open_line = name, m.end() + 1, line  # body starts after the marker's newline
        else:
            if name != open_name:
                raise InputError(f"{source}, line {line}: '{end_marker(name)}' without a matching "
                                 f"'{begin_marker(name)}' before it")
            spans[name] = (min(open_end, m.start()), m.start())
            open_name = None
    if open_name is not None:
        raise InputError(f"{source}, line {open_line}: section {open_name!r} has no '{end_marker(open_name)}'")
    return spans


def read_section(text: str, name: str, source: str = "<text>") -> str | None:
    """The body of section ``name`` (without its markers), or None when the text has no such section."""
    span = find_sections(text, source).get(name)
    return None if span is None else text[span[0]:span[1]]


def replace_sections(text: str, sections: Mapping[str, str], source: str = "<text>") -> str:
    """``text`` with the body of each named section replaced (missing sections appended at the end).

    Args:
        text: the current file content ("" for a new file).
        sections: ``{name: markdown}``; names are ``[A-Za-z0-9_.-]+``; a body must not contain markers.
        source: the file name used in error messages.
    """
    for name, body in sections.items():
        if not _NAME.match(name):
            raise InputError(f"section name {name!r} for {source}: use letters, digits, '_', '.' or '-'")
        if _MARKER.search(body):
            raise InputError(f"section {name!r} for {source}: the new content contains a BEGIN/END marker")
    spans = find_sections(text, source)
    out, pos = [], 0
    for name, (start, end) in sorted(spans.items(), key=lambda kv: kv[1]):
        if name in sections:
            out += [text[pos:start], _body(sections[name])]
            pos = end
    out.append(text[pos:])
    new = "".join(out)
    for name, body in sections.items():
        if name not in spans:
            sep = "" if not new or new.endswith("\n\n") else ("\n" if new.endswith("\n") else "\n\n")
            new += f"{sep}{begin_marker(name)}\n{_body(body)}{end_marker(name)}\n"
    return new


def update_results_file(path: str | os.PathLike, sections: Mapping[str, str],
                        header: str = DEFAULT_HEADER) -> Path:
    """Replace ``sections`` in the Markdown file ``path`` atomically; a missing file starts as ``header``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else header
    return atomic_write_text(path, replace_sections(text, sections, source=str(path)))


def _body(markdown: str) -> str:
    markdown = markdown.strip("\n")
    return markdown + "\n" if markdown else ""
