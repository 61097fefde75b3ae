"""The command groups that run the pipeline stages are all loaded, and a broken one fails loudly
(``wsigraph.cli.build_parser``): a missing internal module is a broken install or a bug, never a reason to
drop its commands silently. (It tests ``wsigraph.cli``; it sits here because the task that added it owned
``tests/pipeline/`` only.)"""
from __future__ import annotations

import pytest

import wsigraph.cli as cli

STAGE_COMMANDS = ["segment", "tile", "extract", "preprocess", "build-graphs", "label-patches", "import-srmil",
                  "predict", "heatmap", "evaluate", "view"]


def _commands() -> set[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)


def test_every_stage_command_is_registered():
    assert set(STAGE_COMMANDS) <= _commands()


def test_a_missing_command_module_is_an_error_not_a_silently_missing_command(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "wsigraph.cli.no_such_group"))
    with pytest.raises(ModuleNotFoundError, match="wsigraph.cli.no_such_group"):
        cli.build_parser()


def test_predict_takes_overwrite():
    args = cli.build_parser().parse_args(["predict", "--checkpoint", "c", "--features", "f", "--out", "o",
                                          "--overwrite"])
    assert args.overwrite is True
