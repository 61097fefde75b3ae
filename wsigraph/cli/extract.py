"""``wsigraph extract | preprocess | encoders``: patch features for a cohort, or the whole slide-to-features chain."""
from __future__ import annotations

import argparse

from wsigraph.cli._options import (
    add_job_args,
    add_mpp_args,
    add_tiling_args,
    add_tissue_args,
    job_exit_status,
    job_kwargs,
    mpp_resolver,
    tiling_kwargs,
    tissue_kwargs,
)


def _add_encoder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder")
    g.add_argument("--encoder", required=True, metavar="NAME",
                   help="registered encoder (resnet50_trunc, uni, uni2_h, virchow2, h_optimus_0, h_optimus_1, "
                        "phikon_v2, prov_gigapath; see `wsigraph encoders`) or timm:<model_name>")
    g.add_argument("--weights", metavar="PATH",
                   help="local weights file (.safetensors/.pth/.bin/.pt) or folder holding one; never downloaded")
    g.add_argument("--random-init", action="store_true",
                   help="build the encoder without weights, randomly initialised (tests and benchmarks only; "
                        "train and bench refuse such features unless allowed)")
    g.add_argument("--random-init-seed", type=int, default=0, metavar="SEED",
                   help="seed of --random-init, recorded with the features (default: %(default)s)")
    g.add_argument("--model-kwargs", metavar="JSON",
                   help="extra timm.create_model arguments for timm: encoders, e.g. '{\"init_values\": 1e-5}'")
    g.add_argument("--input-size", type=int, metavar="PX",
                   help="override the encoder's input side (CNNs only; changes the features)")

    g = p.add_argument_group("inference")
    g.add_argument("--batch-size", type=int, default=64, help="patches per batch (default: %(default)s)")
    g.add_argument("--num-workers", type=int, default=None,
                   help="patch-reading processes (default: on a GPU, CPU cores - 1 up to 16; on the CPU, "
                        "one per 8 cores, since the encoder needs them)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto = GPU "
                                                    "LOCAL_RANK under torchrun, else the first GPU, else CPU)")
    g.add_argument("--amp", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="autocast dtype (default auto: the encoder's precision, bf16, on GPU; fp32 on CPU)")
    g.add_argument("--float16", action="store_true", help="store features as float16 (half the disk)")


def _add_cohort_job_args(p: argparse.ArgumentParser, command: str) -> None:
    add_job_args(p, report_default=f"OUT/{command}_report[.shard-I-of-N].csv", overwrite=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract", help="embed the patches of each slide with a patch encoder (features h5 per slide)",
        description="Read each coords file (ours, CLAM patches/*.h5 or TRIDENT *_patches.h5), read its patches "
                    "from the slide of the same id with worker processes, embed them in batches and write "
                    "OUT/<slide_id>.h5 atomically. Resumable (complete files are skipped); shardable over "
                    "processes or machines (--shard I/N, or one process per GPU with "
                    "`torchrun --nproc_per_node 4 -m wsigraph extract ...`). The slide resolution options matter "
                    "only for coords files without an mpp attribute (CLAM).")
    p.add_argument("--coords", required=True, nargs="+", metavar="PATH",
                   help="coords folder(s) or files (<slide_id>.h5)")
    p.add_argument("--slides", required=True, nargs="+", metavar="PATH", help="slide folder(s) or files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder of feature files")
    _add_encoder_args(p)
    _add_cohort_job_args(p, "extract")
    add_mpp_args(p)
    p.set_defaults(func=_extract)

    p = sub.add_parser(
        "preprocess", help="segment tissue, tile and extract features for a folder or manifest of slides",
        description="For each slide: tissue mask -> global patch grid -> patch features. Writes OUT/coords/, "
                    "OUT/masks/ (binary masks), OUT/overlays/, OUT/features_<encoder>/, OUT/preprocess_summary.json "
                    "and OUT/preprocess_report.csv. Resumable at both stages: outputs made with the same "
                    "parameters are skipped, outputs made with others make it refuse (--overwrite recomputes); "
                    "failing slides are skipped and reported while the others complete.")
    p.add_argument("slides", metavar="SLIDES",
                   help="folder of slides, or CSV manifest with a path column (path/slide_path/wsi/filename) "
                        "and optional slide_id, mpp columns")
    p.add_argument("--out", required=True, metavar="DIR")
    add_tiling_args(p)
    g = add_tissue_args(p)
    g.add_argument("--no-masks", action="store_true", help="do not write the mask and overlay PNGs")
    add_mpp_args(p)
    _add_encoder_args(p)
    _add_cohort_job_args(p, "preprocess")
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
    return build_encoder(args.encoder, weights=args.weights, random_init=args.random_init,
                         seed=args.random_init_seed, device="cpu",
                         input_size=args.input_size, model_kwargs=kwargs)


def _run_kwargs(args: argparse.Namespace) -> dict:
    from wsigraph.features.extract import auto_num_workers

    return dict(batch_size=args.batch_size,
                num_workers=auto_num_workers(args.device) if args.num_workers is None else args.num_workers,
                device=args.device, amp=args.amp, features_dtype="float16" if args.float16 else "float32",
                **job_kwargs(args))


def _print_report(report, out: str) -> int:
    print(f"{report.summary()} -> {out}")
    for sid, err in report.failed.items():
        print(f"  failed {sid}: {err}")
    return job_exit_status(report)


def _slide_opener(args: argparse.Namespace):
    """``open_slide`` with ``--default-mpp`` (picklable, for the reader processes); None: the default."""
    if args.default_mpp is None:
        return None
    import functools

    from wsigraph.pipeline.slides import open_slide_with

    return functools.partial(open_slide_with, default_mpp=args.default_mpp)


def _extract(args: argparse.Namespace) -> int:
    from wsigraph.pipeline.extract import extract_cohort
    from wsigraph.pipeline.slides import match_coords_to_slides

    jobs = match_coords_to_slides(args.coords, args.slides)
    resolve = mpp_resolver(args)
    for j in jobs:
        j.mpp = resolve(j.slide_id, j.mpp)
    encoder = _build(args)
    report = extract_cohort(jobs, args.out, encoder, opener=_slide_opener(args), **_run_kwargs(args))
    return _print_report(report, args.out)


def _preprocess(args: argparse.Namespace) -> int:
    from wsigraph.pipeline.preprocess import preprocess_cohort
    from wsigraph.pipeline.slides import read_slide_list

    slides = read_slide_list(args.slides)
    resolve = mpp_resolver(args)
    for j in slides:
        j.mpp = resolve(j.slide_id, j.mpp)  # --mpp-csv, else the manifest's mpp column, else --mpp
    encoder = _build(args)
    report = preprocess_cohort(slides, args.out, encoder, segment_kwargs=tissue_kwargs(args),
                               default_mpp=args.default_mpp, masks_dir=args.masks, save_masks=not args.no_masks, **tiling_kwargs(args),
                               **_run_kwargs(args))
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
