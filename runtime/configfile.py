"""Typed YAML configuration: a tree of dataclasses filled from a YAML file and `--set key=value` overrides.

Every configuration in facecue (the pipeline, training recipes, calibration) is a dataclass whose fields have
defaults; a file states only what differs. Unknown keys and values of the wrong type are errors that name the
file and the key (`wrong.yaml: classifier.max_batch: expected int, got 'x'`), raised as the caller's own error
class. Overrides are parsed as YAML scalars, so `--set classifier.model=null` means None.

Hand-written (about 100 lines) rather than a library: dacite and cattrs are not dependencies, and their errors
name neither the file nor the list index and accept `true` where an int is expected; pydantic (strict mode) is
far heavier than the torch-free runtime wants and would still need these messages mapped. Needs only PyYAML.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

T = TypeVar("T")


class _Problem(Exception):
    """A bad value at `where` (a dotted key); `from_dict` turns it into the caller's error naming the file."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)


def load(cls: type[T], path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *,
         error: type[Exception], what: str = "config file",
         validate: Callable[[T, str], None] | None = None) -> T:
    """`cls` with defaults, then the YAML file at `path` (None: none), then `section.key=value` overrides.

    `validate(config, origin)` checks values that types alone do not catch, after the file and again after the
    overrides, so an error names where the bad value came from.
    """
    origin = str(path) if path is not None else "defaults"
    config = from_dict(cls, read_yaml(path, error, what) if path is not None else {}, origin, error)
    if validate:
        validate(config, origin)
    if overrides:
        data = merge(dataclasses.asdict(config), parse_overrides(overrides, error))
        config = from_dict(cls, data, "--set", error)
        if validate:
            validate(config, "--set")
    return config


def profile_path(path: str | Path) -> Path:
    """A YAML file as given, or a shipped profile by name: "laptop", "train/lora" or "models/pe-core-t16-384" →
    the installed configs/<name>.yaml (so "configs/laptop.yaml" also works from any folder). A file wins."""
    given = Path(path)
    if given.is_file():
        return given
    from configs import FOLDER
    name = str(path).replace("\\", "/").removeprefix("configs/").removesuffix(".yaml").removesuffix(".yml")
    shipped = FOLDER / f"{name}.yaml"
    return shipped if shipped.is_file() else given


def read_yaml(path: str | Path, error: type[Exception], what: str = "config file") -> dict[str, Any]:
    """The YAML document at `path` or a shipped profile name (`profile_path`; an empty file is {}); a missing
    file or bad YAML raises `error`."""
    path = profile_path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML ({problem})") from None


def from_dict(cls: type[T], data: Any, origin: str, error: type[Exception]) -> T:
    """A `cls` dataclass from a mapping, checking every key and type; errors read `origin: key: problem`."""
    try:
        return _convert(cls, data, "")
    except _Problem as problem:
        raise error(f"{origin}: {problem}") from None


def parse_overrides(pairs: list[str] | tuple[str, ...], error: type[Exception]) -> dict[str, Any]:
    """["optim.lr=3e-4", "run.epochs=2"] → {"optim": {"lr": 0.0003}, "run": {"epochs": 2}}."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip() or "" in key.strip().split("."):
            raise error(f"--set {pair!r}: expected section.key=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as problem:
            raise error(f"--set {key}: value {text!r} is not a YAML scalar ({problem})") from None
        *parents, name = key.strip().split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = value
    return nested


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s keys replaced, recursing into mappings present in both."""
    merged = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if both else value
    return merged


def _convert(hint: Any, value: Any, where: str) -> Any:
    """`value` checked against the type `hint` (ints widened to float, nested dataclasses built)."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(inner, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise _Problem(where, f"expected list, got {value!r}")
        return [_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _Problem(where, f"expected {len(args)} values, got {value!r}")
        return tuple(_convert(arg, item, f"{where}[{i}]") for i, (arg, item) in enumerate(zip(args, value)))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _Problem(where, f"expected mapping, got {value!r}")
        return dict(value) if not args else {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(hint, value, where)


def _scalar(hint: type, value: Any, where: str) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is float and number:
        return float(value)
    if hint is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # `--set source.uri=0` is the webcam "0"
    if hint is str and isinstance(value, bool):
        return "on" if value else "off"  # YAML 1.1 reads an unquoted off/on (`detector.tiles: off`) as a bool
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise _Problem(where, f"expected {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise _Problem(where, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in fields:
            raise _Problem(_join(where, key), f"unknown key (known: {', '.join(fields)})")
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in data:
            raise _Problem(_join(where, f.name), "missing (it has no default)")
    return cls(**{key: _convert(hints[key], value, _join(where, key)) for key, value in data.items()})


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)
