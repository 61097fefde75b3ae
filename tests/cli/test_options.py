"""The shared CLI option groups (``wsigraph.cli._options``): one meaning per flag in every command."""
from __future__ import annotations

import pytest

from wsigraph.cli import build_parser


# ------------------------------------------------------------------------------ shared option groups


def test_shared_tissue_and_mpp_flags_mean_the_same_everywhere():
    from wsigraph.cli._options import mpp_resolver, tiling_kwargs, tissue_kwargs

    flags = ["--mode", "brightfield", "--threshold", "20", "--mask-mpp", "4", "--min-object-um2", "500",
             "--max-hole-um2", "900", "--exclude-pen", "--target-mpp", "0.25", "--patch-size", "256",
             "--min-tissue", "0.3", "--mpp", "0.5", "--default-mpp", "0.25"]
    parser = build_parser()
    parsed = {cmd: parser.parse_args([cmd, *pre, *flags]) for cmd, pre in (
        ("tile", ["s.svs", "--out", "o"]),
        ("preprocess", ["s", "--out", "o", "--encoder", "resnet50_trunc"]))}
    tissue = {cmd: tissue_kwargs(a) for cmd, a in parsed.items()}
    assert tissue["tile"] == tissue["preprocess"]
    import inspect

    from wsigraph.slide import segment_tissue

    lib = {k: v.default for k, v in inspect.signature(segment_tissue).parameters.items()}
    untouched = {k: lib[k] for k in ("median_um", "close_um", "exclude_background")}  # library defaults
    assert tissue["tile"] == dict(mode="brightfield", method="threshold", threshold=20.0, mask_mpp=4.0,
                                  min_object_um2=500.0, max_hole_um2=900.0, exclude_pen=True, **untouched)
    assert tiling_kwargs(parsed["tile"]) == tiling_kwargs(parsed["preprocess"]) == dict(
        target_mpp=0.25, patch_size=256, min_tissue=0.3)
    segment = parser.parse_args(["segment", "s.svs", "--out", "o", *flags[:11]])
    assert tissue_kwargs(segment) == tissue["tile"]
    for cmd in ("tile", "preprocess"):
        resolve = mpp_resolver(parsed[cmd])
        assert (resolve("a"), resolve("a", 0.3), parsed[cmd].default_mpp) == (0.5, 0.3, 0.25)
    ext = parser.parse_args(["extract", "--coords", "c", "--slides", "s", "--out", "o", "--encoder", "x",
                             "--mpp", "0.5"])
    assert mpp_resolver(ext)("a") == 0.5 and (ext.on_error, ext.shard) == ("skip", None)


def test_mpp_csv_overrides_mpp_and_errors_name_the_row(tmp_path):
    from wsigraph.cli._options import mpp_resolver
    from wsigraph.errors import InputError

    table = tmp_path / "mpp.csv"
    table.write_text("slide_id,mpp\na,0.25\nb,-1\n")
    parser = build_parser()
    args = parser.parse_args(["slide-info", "x.svs", "--mpp", "0.5", "--mpp-csv", str(table)])
    with pytest.raises(InputError, match=r"mpp\.csv, row 3"):
        mpp_resolver(args)
    table.write_text("slide_id,mpp\na,0.25\n")
    resolve = mpp_resolver(args)
    assert (resolve("a"), resolve("a", 0.3), resolve("b"), resolve("b", 0.3)) == (0.25, 0.25, 0.5, 0.3)


def test_overrides_may_follow_the_options():
    from wsigraph.cli import parse_command_line

    parser = build_parser()
    args = parse_command_line(parser, ["bench", "--config", "b.yaml", "output_dir=o", "--only-models", "m",
                                       "seeds=[0,1]", "train.epochs=2"])
    assert args.overrides == ["output_dir=o", "seeds=[0,1]", "train.epochs=2"] and args.only_models == ["m"]
    args = parse_command_line(parser, ["train", "--config", "t.yaml", "--fold", "0", "train.lr=0.1"])
    assert args.overrides == ["train.lr=0.1"]
    for bad in (["bench", "--config", "b.yaml", "--no-such-flag"],
                ["bench", "--config", "b.yaml", "a=1", "--only-models", "m", "stray"]):  # not an override
        with pytest.raises(SystemExit):
            parse_command_line(parser, bad)
