"""``wsigraph view``: the local slide viewer (:mod:`wsigraph.viewer`)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view", help="local web viewer: slides with per-patch scores, tissue, graph and annotation overlays",
        description="Serves the slides found in the folders given on http://127.0.0.1:PORT/ (printed): the slide "
                    "list with labels and predictions, and per slide deep-zoom pan and zoom with overlays "
                    "switched on and off (per-patch scores with opacity and raw/percentile colours, tissue mask, "
                    "spatial graph edges at high zoom, lesion annotations, top-k patches; click a patch for its "
                    "score). Slides without an image file show the overlays on a blank canvas. Stop with Ctrl-C.")
    p.add_argument("--slides", metavar="DIR", help="folder of slide images (searched 2 levels deep)")
    p.add_argument("--scores", metavar="DIR", help="folder of per-patch score files (predict's OUT/scores)")
    p.add_argument("--features", metavar="DIR", help="folder of feature or coords files (patches without scores)")
    p.add_argument("--annotations", metavar="DIR", help="folder of lesion outlines <slide_id>.xml/.geojson/.json")
    p.add_argument("--masks", metavar="DIR", help="folder of tissue masks <slide_id>.png (segment's OUT/masks)")
    p.add_argument("--predictions", metavar="CSV", help="predict's predictions.csv (label and prediction per slide)")
    p.add_argument("--manifest", metavar="CSV", help="cohort manifest (slide_id, label): the slides' true labels")
    p.add_argument("--top-k", type=int, default=16, help="patches in the top-k layer (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s; anything not local needs --allow-remote)")
    p.add_argument("--port", type=int, default=8765, help="port (default: %(default)s; 0 = any free port)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than the local machine: the viewer has no login")
    p.set_defaults(func=_view)


def _view(args: argparse.Namespace) -> int:
    import logging

    from wsigraph.viewer.catalog import build_catalog
    from wsigraph.viewer.server import ViewerServer

    if not any((args.slides, args.scores, args.features)):
        from wsigraph.errors import InputError

        raise InputError("nothing to show: give --slides, --scores and/or --features")
    catalog = build_catalog(slides=args.slides, scores=args.scores, features=args.features,
                            annotations=args.annotations, masks=args.masks, predictions=args.predictions,
                            manifest=args.manifest)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per tile request
    server = ViewerServer(catalog, args.host, args.port, allow_remote=args.allow_remote, top_k=args.top_k)
    print(f"wsigraph view: {len(catalog)} slide(s); open {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
