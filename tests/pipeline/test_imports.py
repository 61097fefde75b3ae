"""Import of SRMIL feature pickles (lists of PyG Data) into feature files + manifest."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from wsigraph.cli import main
from wsigraph.data.features import read_features
from wsigraph.data.splits import make_splits
from wsigraph.pipeline.imports import import_srmil
from wsigraph.errors import InputError, MissingFileError


def make_item(name, n: int, label: int, num_classes: int = 2, dim: int = 6, seed: int = 0,
              patch_labels: bool = True) -> Data:
    """One slide the way the SRMIL reference pickles it: float pos on a 224 grid, one-hot graph_y."""
    g = torch.Generator().manual_seed(seed)
    side = int(np.ceil(np.sqrt(n)))
    idx = torch.randperm(side * side, generator=g)[:n]
    pos = torch.stack([idx % side, idx // side], dim=1).float() * 224 + 224 * 7
    graph_y = torch.zeros(1, num_classes)
    graph_y[0, label] = 1.0
    d = Data(x=torch.randn(n, dim, generator=g), pos=pos, graph_y=graph_y, slide_index=name)
    if patch_labels:
        d.y = (torch.rand(n, generator=g) < 0.2).long()
    return d


def dump(path, items):
    with open(path, "wb") as fh:
        pickle.dump(items, fh)
    return path


def test_refuses_without_trust_pickle(tmp_path):
    pkl = dump(tmp_path / "C16.pkl", [make_item("tumor_001", 20, 1)])
    with pytest.raises(InputError) as e:
        import_srmil(pkl, tmp_path / "out")
    msg = str(e.value)
    assert "C16.pkl" in msg and "arbitrary code" in msg and "--trust-pickle" in msg and "trust" in msg
    assert not (tmp_path / "out").exists()


def test_cli_refuses_without_flag(tmp_path, capsys):
    pkl = dump(tmp_path / "C16.pkl", [make_item("tumor_001", 20, 1)])
    assert main(["import-srmil", str(pkl), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "arbitrary code" in err and "--trust-pickle" in err
    assert not (tmp_path / "out").exists()


def test_round_trip(tmp_path):
    items = [make_item("normal_001", 30, 0, seed=1), make_item("test_017.tif", 25, 1, seed=2),
             make_item(torch.tensor(42), 12, 1, seed=3, patch_labels=False)]
    pkl = dump(tmp_path / "C16_R50.pkl", items)
    cohort = import_srmil(pkl, tmp_path / "out", classes=["normal", "tumor"], trust_pickle=True, progress=False)
    assert cohort.slide_ids == ["normal_001", "test_017", "42"]
    assert cohort.classes == ["normal", "tumor"] and cohort.label_indices == [0, 1, 1]
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    assert list(manifest.columns) == ["slide_id", "label"] and list(manifest["label"]) == ["normal", "tumor", "tumor"]
    for item, path in zip(items, cohort.feature_paths):
        bag = read_features(path)
        assert bag.features.dtype == np.float32
        np.testing.assert_array_equal(bag.features, item.x.numpy())
        assert bag.coords.dtype == np.int64
        np.testing.assert_array_equal(bag.coords, item.pos.numpy().astype(np.int64))
        assert bag.attrs["encoder"] == "srmil-import" and bag.patch_size_level0 == 224 and bag.attrs["mpp"] == 0.5
        if "y" in item:
            np.testing.assert_array_equal(bag.patch_labels, item.y.numpy())
        else:
            assert bag.patch_labels is None
    assert set(pd.read_csv(tmp_path / "out" / "import_srmil_report.csv")["status"]) == {"done"}


def test_default_class_names_and_lattice_unit_positions(tmp_path):
    item = make_item("a", 16, 2, num_classes=3)
    item.pos = item.pos / 224  # some exports keep lattice units
    pkl = dump(tmp_path / "x.pkl", [item, make_item("b", 9, 0, num_classes=3)])
    cohort = import_srmil(pkl, tmp_path / "out", trust_pickle=True, patch_size_level0=224, progress=False)
    assert cohort.classes == ["class0", "class1", "class2"] and cohort.label_indices == [2, 0]
    bag = read_features(cohort.feature_paths[0])
    np.testing.assert_array_equal(bag.coords, (item.pos * 224).numpy().astype(np.int64))


def test_broken_item_raises_naming_item_and_slide(tmp_path):
    bad = make_item("bad_slide", 10, 1)
    bad.x[3, 1] = float("nan")
    pkl = dump(tmp_path / "C16.pkl", [make_item("ok", 10, 0), bad])
    with pytest.raises(InputError, match=r"C16\.pkl, item 1 \(slide bad_slide\).*NaN or inf.*row 3"):
        import_srmil(pkl, tmp_path / "out", trust_pickle=True, on_error="raise", progress=False)
    mismatch = make_item("short_pos", 10, 0)
    mismatch.pos = mismatch.pos[:7]
    pkl = dump(tmp_path / "m.pkl", [mismatch])
    with pytest.raises(InputError, match=r"m\.pkl, item 0 \(slide short_pos\).*10 rows but 'coords' has 7"):
        import_srmil(pkl, tmp_path / "out2", trust_pickle=True, on_error="raise", progress=False)


def test_broken_items_skipped_with_report(tmp_path):
    bad = make_item("bad_slide", 10, 1)
    bad.x[0, 0] = float("inf")
    no_pos = Data(x=torch.randn(5, 6), graph_y=torch.tensor([[1.0, 0.0]]), slide_index="no_pos")
    wrong_classes = make_item("three", 8, 2, num_classes=3)
    pkl = dump(tmp_path / "C16.pkl", [make_item("ok1", 10, 0), bad, no_pos, wrong_classes, make_item("ok2", 9, 1)])
    cohort = import_srmil(pkl, tmp_path / "out", classes=["normal", "tumor"], trust_pickle=True, on_error="skip",
                          progress=False)
    assert cohort.slide_ids == ["ok1", "ok2"]
    report = pd.read_csv(tmp_path / "out" / "import_srmil_report.csv").query("status == 'failed'")
    assert list(report["slide_id"]) == ["bad_slide", "no_pos", "three"]
    errors = dict(zip(report["slide_id"], report["error"]))
    assert "item 1" in errors["bad_slide"] and "NaN or inf" in errors["bad_slide"]
    assert "item 2" in errors["no_pos"] and "missing pos" in errors["no_pos"]
    assert "graph_y has 3 classes but the class list has 2" in errors["three"]
    assert not (tmp_path / "out" / "features" / "bad_slide.h5").exists()
    assert cohort.import_report.failed.keys() == {"bad_slide", "no_pos", "three"}
    assert main(["import-srmil", str(pkl), str(tmp_path / "cli"), "--trust-pickle", "--classes", "normal", "tumor",
                 "--on-error", "skip", "--no-progress"]) == 1  # finished, with failures listed in the report
    assert (tmp_path / "cli" / "import_srmil_report.csv").exists()


def test_duplicate_slide_index(tmp_path):
    pkl = dump(tmp_path / "d.pkl", [make_item("same", 5, 0), make_item("same", 6, 1)])
    with pytest.raises(InputError, match=r"d\.pkl, item 1 \(slide same\): duplicate slide_index 'same' "
                                         r"\(first at .*d\.pkl, item 0"):
        import_srmil(pkl, tmp_path / "out", trust_pickle=True, on_error="raise", progress=False)


def test_not_a_pickle_missing_file_and_wrong_content(tmp_path):
    with pytest.raises(MissingFileError, match=r"nope\.pkl"):
        import_srmil(tmp_path / "nope.pkl", tmp_path / "out", trust_pickle=True)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"this is not a pickle")
    with pytest.raises(InputError, match=r"junk\.pkl: cannot be unpickled"):
        import_srmil(junk, tmp_path / "out", trust_pickle=True)
    truncated = tmp_path / "trunc.pkl"
    truncated.write_bytes(pickle.dumps([make_item("a", 30, 0)])[:200])
    with pytest.raises(InputError, match=r"trunc\.pkl: cannot be unpickled.*truncated"):
        import_srmil(truncated, tmp_path / "out", trust_pickle=True)
    dict_pkl = dump(tmp_path / "dict.pkl", {"a": 1})
    with pytest.raises(InputError, match=r"dict\.pkl: expected a list of torch_geometric Data, got dict"):
        import_srmil(dict_pkl, tmp_path / "out", trust_pickle=True)


def test_two_pickles_with_splits_and_cli(tmp_path, capsys):
    train = dump(tmp_path / "C16_R50.pkl", [make_item(f"tr{i}", 8, i % 2, seed=i) for i in range(10)])
    test = dump(tmp_path / "C16_R50_test.pkl", [make_item(f"te{i}", 8, i % 2, seed=50 + i) for i in range(4)])
    out = tmp_path / "c16"
    assert main(["import-srmil", str(train), str(test), str(out), "--trust-pickle", "--classes", "normal", "tumor",
                 "--splits", "train", "test"]) == 0
    assert "imported 14 slides" in capsys.readouterr().out
    from wsigraph.data.manifest import read_manifest

    cohort = read_manifest(out / "manifest.csv", classes=["normal", "tumor"], feature_dir=out / "features")
    assert list(cohort.table["split"]).count("test") == 4
    fold = make_splits(cohort, val_frac=0.2)[0]
    assert sorted(fold["test"]) == [f"te{i}" for i in range(4)]
    assert fold["val"] and not set(fold["val"]) & set(fold["train"])


def test_rerun_resumes_refuses_other_parameters_and_shards(tmp_path):
    from wsigraph.pipeline.runner import StaleOutputError

    items = [make_item(f"s{i}", 10, i % 2, seed=i) for i in range(5)]
    pkl = dump(tmp_path / "C16.pkl", items)
    out = tmp_path / "out"
    # two shards first: each converts its share and writes its own manifest
    for i in range(2):
        part = import_srmil(pkl, out, classes=["normal", "tumor"], trust_pickle=True, progress=False,
                            shard=f"{i}/2")
        assert part.slide_ids == [f"s{k}" for k in range(i, 5, 2)]
        assert (out / f"manifest.shard-{i}-of-2.csv").exists()
    assert not (out / "manifest.csv").exists()
    mtime = (out / "features" / "s3.h5").stat().st_mtime_ns
    whole = import_srmil(pkl, out, classes=["normal", "tumor"], trust_pickle=True, progress=False, shard=False)
    assert sorted(whole.import_report.resumed) == [f"s{i}" for i in range(5)] and not whole.import_report.done
    assert (out / "features" / "s3.h5").stat().st_mtime_ns == mtime  # not converted again
    table = pd.read_csv(out / "manifest.csv")
    assert list(table["label"]) == ["normal", "tumor", "normal", "tumor", "normal"]  # labels read back
    with pytest.raises(StaleOutputError, match=r"patch_size_level0: 224 -> 448"):
        import_srmil(pkl, out, classes=["normal", "tumor"], trust_pickle=True, progress=False,
                     patch_size_level0=448, shard=False)
    items[2] = make_item("s2", 12, 0, seed=99)  # the pickle changed: its items are inputs that differ
    dump(pkl, items)
    with pytest.raises(StaleOutputError, match=r"inputs\.pickle"):
        import_srmil(pkl, out, classes=["normal", "tumor"], trust_pickle=True, progress=False, shard=False)
    redone = import_srmil(pkl, out, classes=["normal", "tumor"], trust_pickle=True, progress=False, shard=False,
                          overwrite=True)
    assert len(redone.import_report.done) == 5 and read_features(out / "features" / "s2.h5").num_patches == 12
