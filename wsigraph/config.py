"""Typed configuration: nested dataclasses loaded from YAML (or a dict), strictly checked.

``load_config(src, cls, overrides)`` turns a mapping into an instance of the dataclass ``cls``:

* unknown keys are rejected: the :class:`~wsigraph.errors.ConfigError` names the dotted key, where it
  came from (the file, or the command-line override) and the valid keys of that section;
* values are type-checked against the annotations (``int``, ``float`` (an int is accepted), ``str``,
  ``bool``, ``Optional[...]``/``X | None``, ``list[...]``, ``tuple[...]``, ``dict[...]``, ``Literal[...]``,
  unions of these, ``Any`` and nested dataclasses);
* overrides ``"a.b=value"`` are applied first; the value is parsed with ``yaml.safe_load`` so
  ``train.lr=1e-3``, ``data.classes=[normal,tumor]`` and ``train.early_stopping_patience=null`` work;
* a dataclass may set ``__config_extra__ = "<dict field>"``: its unknown keys are then collected into that
  dict field instead of rejected (the experiment config uses this so model hyper-parameters sit flat under
  ``model:``, ``model.mask_rate=0.5``; they are validated later against the model's constructor);
* ``__post_init__`` may raise ``ValueError``/``ConfigError`` for cross-field checks: the message is
  re-raised prefixed with the source and the section's dotted key.

``dump_config(cfg)`` gives plain dicts/lists back (round-trips through ``load_config``), ``save_config``
writes YAML atomically, ``config_to_yaml`` renders a commented YAML (field ``metadata={"help": ...}``).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, TypeVar, Union

from wsigraph.errors import ConfigError, MissingFileError

T = TypeVar("T")

_MISSING = dataclasses.MISSING


# ----------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------


def load_config(src: str | os.PathLike | Mapping[str, Any] | None, cls: type[T],
                overrides: Iterable[str] = ()) -> T:
    """Build ``cls`` (a dataclass) from a YAML file or a mapping, with dotted overrides.

    Args:
        src: path to a YAML file, a mapping, or None (defaults + overrides only).
        cls: the dataclass type to build.
        overrides: ``"a.b=value"`` strings; values parsed with ``yaml.safe_load``.

    Raises:
        MissingFileError: the file does not exist.
        ConfigError: bad YAML, unknown key, wrong type, missing required key, failed cross-field check;
            the message names the source and the dotted key.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"cls must be a dataclass type, got {cls!r}")
    if src is None:
        raw: Any = {}
        source = "<defaults>"
    elif isinstance(src, Mapping):
        raw = _deep_copy(src)
        source = "<dict>"
    else:
        path = Path(src)
        source = str(path)
        raw = _read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values, got {type(raw).__name__}")
    origins: dict[str, str] = {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(raw, key, value, f"override {text!r}")
        origins[key] = f"command-line override {text!r}"
    return _build(cls, raw, "", _Ctx(source, origins))


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"a.b=value"`` into ``("a.b", yaml.safe_load("value"))``."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. train.lr=1e-3")
    key, value_text = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key or empty part in the dotted key {key!r}")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value {value_text!r} is not valid YAML ({e})") from e
    return key, value


def _read_yaml(path: Path) -> Any:
    import yaml

    if not path.exists():
        raise MissingFileError(f"{path}: config file does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def _set_dotted(raw: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"{where}: '{'.'.join(parts[:i + 1])}' is a value ({nxt!r}), not a section, "
                              f"so '{key}' cannot be set")
        node = nxt
    node[parts[-1]] = value


class _Ctx:
    """Where values come from, for error messages."""

    def __init__(self, source: str, origins: dict[str, str]):
        self.source = source
        self.origins = origins

    def where(self, dotted: str) -> str:
        for key, origin in self.origins.items():  # an override of this key or of a section above it
            if dotted == key or dotted.startswith(key + "."):
                return origin
        return self.source

    def where_section(self, prefix: str) -> str:
        """The source of a whole section: the file, plus the overrides of keys inside it."""
        inside = [o for k, o in self.origins.items() if not prefix or k.startswith(prefix + ".")]
        if not inside:
            return self.where(prefix)
        return f"{self.source} with {', '.join(inside)}"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def config_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The init fields of a dataclass, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _build(cls: type, raw: Any, prefix: str, ctx: _Ctx) -> Any:
    section = prefix or "the top level"
    if dataclasses.is_dataclass(raw) and isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{ctx.where(prefix)}: '{section}' must be a mapping (section {cls.__name__}), "
                          f"got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = config_fields(cls)
    extra_field = getattr(cls, "__config_extra__", None)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = _join(prefix, str(key))
        if key not in fields:
            if extra_field:
                extra[str(key)] = value
                continue
            valid = sorted(fields)
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{_join(prefix, close[0])}'?)" if close else ""
            raise ConfigError(f"{ctx.where(dotted)}: unknown key '{dotted}'{hint}; valid keys in {section}: "
                              f"{', '.join(valid)}")
        kwargs[key] = _convert(value, hints[key], dotted, ctx)
    if extra:
        base = dict(kwargs.get(extra_field) or {})
        clash = sorted(set(base) & set(extra))
        if clash:
            raise ConfigError(f"{ctx.where(prefix)}: {section}: {clash} given both flat and under "
                              f"'{_join(prefix, extra_field)}'")
        base.update(extra)
        kwargs[extra_field] = base
    missing = [name for name, f in fields.items() if name not in kwargs
               and f.default is _MISSING and f.default_factory is _MISSING]
    if missing:
        raise ConfigError(f"{ctx.where(prefix)}: missing required key(s) "
                          f"{', '.join(repr(_join(prefix, m)) for m in missing)} in {section}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        raise ConfigError(f"{ctx.where_section(prefix)}: {section}: {e}") from e


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        args = typing.get_args(tp)
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, dotted: str, ctx: _Ctx) -> Any:
    """Check ``value`` against type ``tp``; return it converted (int->float, dict->dataclass, list->tuple)."""
    ok, out = _try_convert(value, tp, dotted, ctx)
    if not ok:
        raise ConfigError(f"{ctx.where(dotted)}: key '{dotted}' must be {_type_name(tp)}, "
                          f"got {value!r} ({type(value).__name__})")
    return out


def _try_convert(value: Any, tp: Any, dotted: str, ctx: _Ctx) -> tuple[bool, Any]:
    if tp is Any or tp is object:
        return True, value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None) or tp is None:
        return value is None, None
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args), value
    if origin in (Union, types.UnionType):
        # dataclass members raise their own, more precise errors; try the scalars first
        for member in sorted(args, key=lambda a: dataclasses.is_dataclass(a)):
            if dataclasses.is_dataclass(member):
                if isinstance(value, Mapping):
                    return True, _build(member, value, dotted, ctx)
                continue
            ok, out = _try_convert(value, member, dotted, ctx)
            if ok:
                return True, out
        return False, None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return True, value
        if not isinstance(value, Mapping):
            return False, None
        return True, _build(tp, value, dotted, ctx)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; accept numeric strings
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if tp is str:
        return isinstance(value, str), value
    if tp in (Path, os.PathLike):
        return isinstance(value, (str, Path)), (str(value) if isinstance(value, (str, Path)) else None)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, None
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False, None
            items = [_convert(v, a, f"{dotted}[{i}]", ctx) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, f"{dotted}[{i}]", ctx) for i, v in enumerate(value)]
        return True, (tuple(items) if (origin is tuple or tp is tuple) else items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            return False, None
        vt = args[1] if len(args) == 2 else Any
        return True, {k: _convert(v, vt, _join(dotted, str(k)), ctx) for k, v in value.items()}
    if isinstance(tp, type):
        return isinstance(value, tp), value
    raise TypeError(f"unsupported annotation {tp!r} for config key {dotted!r}")


# ----------------------------------------------------------------------------------------------------
# dumping
# ----------------------------------------------------------------------------------------------------


def dump_config(cfg: Any) -> Any:
    """Plain YAML/JSON-able data (dicts, lists, scalars) of a config; ``load_config`` reads it back."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        out: dict[str, Any] = {}
        extra_field = getattr(type(cfg), "__config_extra__", None)
        for name in config_fields(type(cfg)):
            value = dump_config(getattr(cfg, name))
            if name == extra_field and isinstance(value, dict):
                out.update(value)  # written flat, the way it is read
            else:
                out[name] = value
        return out
    if isinstance(cfg, Mapping):
        return {str(k): dump_config(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [dump_config(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def save_config(cfg: Any, path: str | os.PathLike, comments: bool = False) -> Path:
    """Write ``cfg`` as YAML to ``path`` atomically (with field help as comments if ``comments``)."""
    from wsigraph.utils.atomic import atomic_write_text

    return atomic_write_text(path, config_to_yaml(cfg, comments=comments))


def config_to_yaml(cfg: Any, comments: bool = True) -> str:
    """YAML text of a config; with ``comments``, each field's ``metadata["help"]`` follows it as ``# ...``."""
    import yaml

    if not comments:
        return yaml.safe_dump(dump_config(cfg), sort_keys=False, default_flow_style=False)
    lines: list[str] = []
    _yaml_lines(cfg, 0, lines)
    return "\n".join(lines) + "\n"


def _scalar_yaml(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    if text == "...":
        text = ""
    return text


def _yaml_lines(cfg: Any, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    extra_field = getattr(type(cfg), "__config_extra__", None)
    for name, f in config_fields(type(cfg)).items():
        value = getattr(cfg, name)
        help_text = f.metadata.get("help", "") if f.metadata else ""
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{name}:" + (f"  # {help_text}" if help_text else ""))
            _yaml_lines(value, indent + 1, lines)
            continue
        if name == extra_field and isinstance(value, Mapping):
            if help_text:
                lines.append(f"{pad}# {help_text}")
            for k, v in value.items():
                lines.append(f"{pad}{k}: {_scalar_yaml(dump_config(v))}")
            continue
        line = f"{pad}{name}: {_scalar_yaml(dump_config(value))}"
        lines.append(line + (f"  # {help_text}" if help_text else ""))


__all__ = ["load_config", "parse_override", "dump_config", "save_config", "config_to_yaml", "config_fields"]
