"""Typed, strict configuration: one dataclass per service or job, validated at start-up.

A config comes from a YAML file, then environment variables `<PREFIX>_<FIELD>` for
top-level fields, then explicit overrides. Unknown keys, wrong types and failed
`validate()` checks raise ConfigError naming the source and the field.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def _convert(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping, got {value!r}")
        return _build(kind, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: must be a list, got {value!r}")
        (inner, *_) = typing.get_args(kind) or (Any,)
        return origin(_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping, got {value!r}")
        _, inner = typing.get_args(kind) or (Any, Any)
        return {str(k): _convert(v, inner, f"{where}.{k}") for k, v in value.items()}
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: must be {'an integer' if kind is int else 'a number'}"
                              f", got {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise ConfigError(f"{where}: must be an integer, got {value!r}")
        return number
    if kind is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type[T], raw: dict, source: str, origins: dict | None = None) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    origins = origins or {}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{origins.get(unknown[0], source)}: unknown key(s) "
                          f"{', '.join(map(repr, unknown))}; "
                          f"allowed: {', '.join(sorted(fields))}")
    values = {k: _convert(v, hints[k], f"{origins.get(k, source)}: field '{k}'")
              for k, v in raw.items()}
    try:
        obj = cls(**values)
    except TypeError as err:
        raise ConfigError(f"{source}: {err}") from None
    check = getattr(obj, "validate", None)
    if check:
        try:
            check()
        except ValueError as err:
            raise ConfigError(f"{source}: {err}") from None
    return obj


def from_dict(cls: type[T], raw: dict, source: str) -> T:
    """A config object from a mapping (part of a larger document), checked as load's."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: must be a mapping, got {raw!r}")
    return _build(cls, raw, source)


def load(cls: type[T], path: str | Path | None = None, env_prefix: str | None = None,
         overrides: dict | None = None, overrides_name: str = "override") -> T:
    raw: dict = {}
    sources, origins = [], {}
    if path:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        raw.update(loaded)
        origins.update(dict.fromkeys(loaded, str(path)))
        sources.append(str(path))
    if env_prefix:
        for f in dataclasses.fields(cls):
            name = f"{env_prefix}_{f.name.upper()}"
            if name in os.environ:
                value = os.environ[name]
                raw[f.name] = yaml.safe_load(value) if value.strip() else value
                origins[f.name] = name
                sources.append(name)
    if overrides:
        raw.update(overrides)
        origins.update(dict.fromkeys(overrides, overrides_name))
        sources.append(overrides_name)
    return _build(cls, raw, " + ".join(sources) or cls.__name__, origins)


def parse_overrides(pairs: list[str]) -> dict:
    """["key=value", ...] -> {key: YAML-parsed value}."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        overrides[key] = yaml.safe_load(value) if value.strip() else value
    return overrides


def from_command_line(cls: type[T], description: str, default_path: str | Path,
                      env_prefix: str, argv: list[str] | None = None) -> T:
    """Standard service flags: --config FILE and --set key=value; exits 2 on a bad config."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=str(default_path), help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one field (after the file and the environment)")
    args = parser.parse_args(argv)
    try:
        return load(cls, args.config, env_prefix=env_prefix,
                    overrides=parse_overrides(args.set), overrides_name="--set")
    except ConfigError as err:
        print(f"error: invalid configuration: {err}", file=sys.stderr)
        raise SystemExit(2) from None
