"""The viewer's web server (Flask): the slide list, one page per slide, its tiles, and BokehJS.

Routes (anything else is 404)::

    /                                   the slides of the catalog, with label and prediction
    /slide/<slide_id>                   the slide's page (:mod:`wsigraph.viewer.page`)
    /tiles/<slide_id>/<z>/<x>/<y>.jpeg  one deep-zoom tile (:mod:`wsigraph.viewer.tiles`)
    /static/<file>                      BokehJS from the installed bokeh package

A slide id from a URL is only a key of the catalog: unknown ids are 404 and no part of a URL is joined to a
path (``/static`` goes through Flask's ``send_from_directory``, which refuses ``..`` and absolute paths).
The server binds to 127.0.0.1 unless told otherwise (:func:`check_host`).
"""
from __future__ import annotations

import html
import logging
import threading
from typing import Any, Mapping
from urllib.parse import quote

from wsigraph.errors import InputError
from wsigraph.viewer.catalog import SlideEntry
from wsigraph.viewer.tiles import TileStore

log = logging.getLogger("wsigraph")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_host(host: str, allow_remote: bool) -> str:
    """``host`` when it is local or ``allow_remote``; else an error saying why (the viewer has no login)."""
    if host not in LOCAL_HOSTS and not allow_remote:
        raise InputError(f"--host {host}: the viewer serves your slides to anyone who can reach that address and "
                         "has no login; it binds to 127.0.0.1 unless you pass --allow-remote as well")
    return host


def _index(catalog: Mapping[str, SlideEntry]) -> str:
    rows = []
    for sid, e in catalog.items():
        what = ", ".join(w for w, ok in (("image", e.image), ("scores", e.scores), ("features", e.features),
                                          ("annotations", e.annotation), ("tissue mask", e.mask)) if ok)
        pred = "" if e.pred is None else html.escape(e.pred) + ("" if e.prob is None else f" ({e.prob:.2f})")
        rows.append(f'<tr><td><a href="/slide/{quote(sid, safe="")}">{html.escape(sid)}</a></td>'
                    f"<td>{html.escape(e.label or '')}</td><td>{pred}</td><td>{what}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>wsigraph view</title><style>"
            "body{font-family:sans-serif;margin:2em} td,th{padding:.2em 1em;text-align:left}</style></head><body>"
            f"<h2>wsigraph view: {len(catalog)} slide(s)</h2><table><tr><th>slide</th><th>label</th>"
            f"<th>prediction</th><th>what there is</th></tr>{''.join(rows)}</table></body></html>")


def create_app(catalog: Mapping[str, SlideEntry], *, top_k: int = 16) -> Any:
    """The Flask app over ``catalog`` (see the module docstring)."""
    from bokeh.util.paths import bokehjs_path
    from flask import Flask, Response, abort, send_from_directory

    from wsigraph.viewer.page import build_page, load_slide_data

    app = Flask("wsigraph.viewer", static_folder=None)
    tiles = TileStore()
    pages: dict[str, str] = {}
    lock = threading.Lock()
    app.extensions["wsigraph_tiles"] = tiles

    def entry_of(slide_id: str) -> SlideEntry:
        entry = catalog.get(slide_id)
        if entry is None:
            abort(404)
        return entry

    @app.get("/")
    def index() -> Any:
        return Response(_index(catalog), mimetype="text/html")

    @app.get("/slide/<slide_id>")
    def slide(slide_id: str) -> Any:
        entry = entry_of(slide_id)
        with lock:
            if slide_id not in pages:
                try:
                    geometry = tiles.geometry(entry.image) if entry.image is not None else None
                    pages[slide_id] = build_page(entry, load_slide_data(entry, geometry), top_k=top_k)
                except InputError as e:
                    log.warning("view: %s: %s", slide_id, e)
                    return Response(f"<!doctype html><p>{html.escape(str(e))}</p>", status=422, mimetype="text/html")
        return Response(pages[slide_id], mimetype="text/html")

    @app.get("/tiles/<slide_id>/<int:z>/<int:x>/<int:y>.jpeg")
    def tile(slide_id: str, z: int, x: int, y: int) -> Any:
        entry = entry_of(slide_id)
        if entry.image is None:
            abort(404)
        data = tiles.tile_jpeg(entry.image, z, x, y)
        if data is None:
            abort(404)
        return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/static/<path:filename>")
    def static(filename: str) -> Any:
        return send_from_directory(bokehjs_path(), filename)

    return app


class ViewerServer:
    """The app served in a background thread (``start`` / ``stop``), or in the foreground (``serve_forever``)."""

    def __init__(self, catalog: Mapping[str, SlideEntry], host: str = "127.0.0.1", port: int = 8765, *,
                 allow_remote: bool = False, top_k: int = 16) -> None:
        from werkzeug.serving import make_server

        self.app = create_app(catalog, top_k=top_k)
        try:
            self._server = make_server(check_host(host, allow_remote), int(port), self.app, threaded=True)
        except OSError as e:
            raise InputError(f"cannot serve on {host}:{port} ({e}); choose another --port") from e
        self.host, self.port = host, int(self._server.server_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "ViewerServer":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self.app.extensions["wsigraph_tiles"].close()
        if self._thread is not None:
            self._thread.join(timeout=5)


__all__ = ["LOCAL_HOSTS", "ViewerServer", "check_host", "create_app"]
