"""``wsigraph extract | preprocess | encoders``: patch features for a cohort, or the whole slide-to-features chain."""
from __future__ import annotations

import argparse


def _add_encoder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder")
    g.add_argument("--encoder", required=True, metavar="NAME",
                   help="registered encoder (resnet50_trunc, uni, uni2_h, virchow2, h_optimus_0, h_optimus_1, "
                        "phikon_v2, prov_gigapath; see `wsigraph encoders`) or timm:<model_name>")
    g.add_argument("--weights", metavar="PATH",
                   help="local weights file (.safetensors/.pth/.bin/.pt) or folder holding one; never downloaded")
    g.add_argument("--random-init", action="store_true",
                   help="build the encoder without weights, randomly initialised (tests and benchmarks only)")
    g.add_argument("--model-kwargs", metavar="JSON",
                   help="extra timm.create_model arguments for timm: encoders, e.g. '{\"init_values\": 1e-5}'")
    g.add_argument("--input-size", type=int, metavar="PX",
                   help="override the encoder's input side (CNNs only; changes the features)")

    g = p.add_argument_group("inference")
    g.add_argument("--batch-size", type=int, default=64, help="patches per batch (default: %(default)s)")
    g.add_argument("--num-workers", type=int, default=None,
                   help="patch-reading processes (default: on a GPU, CPU cores - 1 up to 8; on the CPU, "
                        "one per 8 cores, since the encoder needs them)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto = GPU "
                                                    "LOCAL_RANK under torchrun, else the first GPU, else CPU)")
    g.add_argument("--amp", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="autocast dtype (default auto: the encoder's precision, bf16, on GPU; fp32 on CPU)")
    g.add_argument("--float16", action="store_true", help="store features as float16 (half the disk)")


def _add_job_args(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("cohort job")
    g.add_argument("--shard", metavar="I/N",
                   help="process slides I::N (0-based) of the list sorted by slide id; default from RANK/"
                        "WORLD_SIZE (torchrun) or SLURM_PROCID/SLURM_NTASKS")
    g.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                   help="skip failing slides and list them in the report (default: %(default)s)")
    g.add_argument("--report", metavar="CSV",
                   help=f"failure report (default: OUT/{command}_failures[.shard-I-of-N].csv)")
    g.add_argument("--overwrite", action="store_true",
                   help="recompute slides whose output is already complete (default: skip them = resume)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_mpp_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("resolution (for slides whose file lacks it, or to correct it)")
    g.add_argument("--mpp", type=float, metavar="UM_PER_PX",
                   help="level-0 microns per pixel for every slide, overriding the files")
    g.add_argument("--default-mpp", type=float, metavar="UM_PER_PX",
                   help="microns per pixel used only for slides whose file has none")
    g.add_argument("--mpp-csv", metavar="CSV", help="per-slide values: columns slide_id (or wsi/file) and mpp")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract", help="embed the patches of each slide with a patch encoder (features h5 per slide)",
        description="Read each coords file (ours, CLAM patches/*.h5 or TRIDENT *_patches.h5), read its patches "
                    "from the slide of the same id with worker processes, embed them in batches and write "
                    "OUT/<slide_id>.h5 atomically. Resumable (complete files are skipped); shardable over "
                    "processes or machines (--shard I/N, or one process per GPU with "
                    "`torchrun --nproc_per_node 4 -m wsigraph extract ...`). Exit status 1 when some slides "
                    "failed (listed in the report), 2 on bad arguments.")
    p.add_argument("--coords", required=True, nargs="+", metavar="PATH",
                   help="coords folder(s) or files (<slide_id>.h5)")
    p.add_argument("--slides", required=True, nargs="+", metavar="PATH", help="slide folder(s) or files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder of feature files")
    _add_encoder_args(p)
    _add_job_args(p, "extract")
    g = p.add_argument_group("resolution")
    g.add_argument("--mpp", type=float, metavar="UM_PER_PX",
                   help="level-0 microns per pixel, for coords files without an mpp attribute (CLAM) of "
                        "slides whose file has none")
    p.set_defaults(func=_extract)

    p = sub.add_parser(
        "preprocess", help="segment tissue, tile and extract features for a folder or manifest of slides",
        description="For each slide: tissue mask -> global patch grid -> patch features. Writes OUT/coords/, "
                    "OUT/masks/, OUT/features_<encoder>/ and OUT/preprocess_summary.json. Resumable at both "
                    "stages; failing slides are skipped and reported while the others complete (exit status "
                    "1 when some failed).")
    p.add_argument("slides", metavar="SLIDES",
                   help="folder of slides, or CSV manifest with a path column (path/slide_path/wsi/filename) "
                        "and optional slide_id, mpp columns")
    p.add_argument("--out", required=True, metavar="DIR")
    g = p.add_argument_group("tiling")
    g.add_argument("--target-mpp", type=float, default=0.5,
                   help="microns per pixel of the patches (0.5 ~ 20x; default: %(default)s)")
    g.add_argument("--patch-size", type=int, default=224, help="patch side in pixels (default: %(default)s)")
    g.add_argument("--min-tissue", type=float, default=0.5,
                   help="minimum tissue fraction of a kept patch (default: %(default)s)")
    g = p.add_argument_group("tissue segmentation (sizes in micrometres, areas in square micrometres)")
    g.add_argument("--mode", choices=("auto", "brightfield", "fluorescence"), default="auto",
                   help="auto: fluorescence when the slide is mostly dark (default: %(default)s)")
    g.add_argument("--threshold", type=float, metavar="0-255", help="fixed threshold instead of Otsu")
    g.add_argument("--mask-mpp", type=float, default=8.0, help="mask resolution in um/px (default: %(default)s)")
    g.add_argument("--min-object-um2", type=float, default=10_000.0,
                   help="drop tissue pieces smaller than this (default: %(default)s)")
    g.add_argument("--max-hole-um2", type=float, default=20_000.0,
                   help="fill holes smaller than this (default: %(default)s)")
    g.add_argument("--exclude-pen", action="store_true", help="remove blue/green/black marker ink (brightfield)")
    g.add_argument("--no-masks", action="store_true", help="do not write the mask overlay PNGs")
    _add_mpp_args(p)
    _add_encoder_args(p)
    _add_job_args(p, "preprocess")
    p.set_defaults(func=_preprocess)

    p = sub.add_parser("encoders", help="list the registered patch encoders",
                       description="Registered patch encoders with their output width, input size, "
                                   "normalisation, licence and the weights file each expects.")
    p.add_argument("--long", action="store_true", help="also show normalisation, licence and weights")
    p.set_defaults(func=_encoders)


def _build(args: argparse.Namespace):
    import json

    from wsigraph.errors import InputError
    from wsigraph.features import build_encoder

    kwargs = None
    if args.model_kwargs:
        try:
            kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as e:
            raise InputError(f"--model-kwargs is not valid JSON ({e}): {args.model_kwargs!r}") from e
        if not isinstance(kwargs, dict):
            raise InputError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}")
    return build_encoder(args.encoder, weights=args.weights, random_init=args.random_init, device="cpu",
                         input_size=args.input_size, model_kwargs=kwargs)


def _job_kwargs(args: argparse.Namespace) -> dict:
    from wsigraph.features.extract import auto_num_workers

    return dict(batch_size=args.batch_size,
                num_workers=auto_num_workers(args.device) if args.num_workers is None else args.num_workers,
                device=args.device, amp=args.amp, features_dtype="float16" if args.float16 else "float32",
                shard=args.shard, on_error=args.on_error, report_path=args.report, overwrite=args.overwrite,
                progress=not args.no_progress)


def _print_report(report, out: str) -> int:
    print(f"{report.summary()} -> {out}")
    for sid, err in report.failed.items():
        print(f"  failed {sid}: {err}")
    return 1 if report.failed else 0


def _extract(args: argparse.Namespace) -> int:
    from wsigraph.features.cohort import extract_cohort, match_coords_to_slides

    jobs = match_coords_to_slides(args.coords, args.slides)
    if args.mpp is not None:
        for j in jobs:
            j.mpp = args.mpp
    encoder = _build(args)
    report = extract_cohort(jobs, args.out, encoder, **_job_kwargs(args))
    return _print_report(report, args.out)


def _preprocess(args: argparse.Namespace) -> int:
    from wsigraph.features.pipeline import preprocess_cohort, read_slide_list

    slides = read_slide_list(args.slides)
    table = {}
    if args.mpp_csv:
        from wsigraph.slide import read_mpp_csv

        table = read_mpp_csv(args.mpp_csv)
    for j in slides:
        j.mpp = table.get(j.slide_id, j.mpp if j.mpp is not None else args.mpp)
    segment_kwargs = dict(mode=args.mode, method="threshold" if args.threshold is not None else "otsu",
                          threshold=args.threshold, mask_mpp=args.mask_mpp, min_object_um2=args.min_object_um2,
                          max_hole_um2=args.max_hole_um2, exclude_pen=args.exclude_pen)
    encoder = _build(args)
    report = preprocess_cohort(slides, args.out, encoder, target_mpp=args.target_mpp, patch_size=args.patch_size,
                               min_tissue=args.min_tissue, segment_kwargs=segment_kwargs,
                               default_mpp=args.default_mpp, save_masks=not args.no_masks, **_job_kwargs(args))
    return _print_report(report, args.out)


def _encoders(args: argparse.Namespace) -> int:
    from wsigraph.features import ENCODERS

    for name, spec in sorted(ENCODERS.items()):
        size = f"{spec.input_size}" + (f" (read {spec.resize_size}, centre crop)" if spec.resize_size else "")
        print(f"{name:16s} {spec.dim:5d}-d  input {size}  {spec.description}")
        if args.long:
            print(f"{'':16s} mean {spec.mean} std {spec.std}; aliases {', '.join(spec.aliases) or '-'}")
            print(f"{'':16s} licence: {spec.license}; weights: {spec.weights_hint}; ref: {spec.reference}")
    print(f"{'timm:<model>':16s} any timm architecture (pretrained=False, num_classes=0) with local weights")
    return 0
