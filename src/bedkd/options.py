"""Typed option records shared by the Python API and the CLI.

Each option is a dataclass field made with :func:`option`; its metadata holds the help text and
the allowed range. :class:`Options` checks every field on construction, and
:func:`add_options` / :func:`options_from_args` turn the same fields into CLI flags, so the API
and the CLI cannot drift apart.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from typing import Any

from .errors import ConfigError


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           choices: tuple | None = None, above: float | None = None, cli: bool = True, flag: str | None = None,
           added: bool = False, keyed_with: str | None = None):
    """A dataclass field with help text and bounds (``low <= x <= high``, ``x > above``).

    ``flag`` renames the CLI flag (default: the field name with dashes). ``added``: an option added
    after results were cached and recorded; ``to_dict`` leaves it out while it holds its default,
    so the cache keys and recorded setups of earlier runs stay valid. ``keyed_with`` (an added
    option that changes how another option acts, whose earlier runs acted otherwise): ``to_dict``
    keeps it, default or not, whenever that other option is on, so those runs' keys do not match."""
    meta = {"help": help, "low": low, "high": high, "above": above, "choices": choices, "cli": cli, "flag": flag,
            "added": added, "keyed_with": keyed_with}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp):
    """(python type, optional?) for an annotation such as ``int | None``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return tp, False


class Options:
    """Base for option dataclasses: checks types and ranges on construction."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            tp, optional = _base_type(hints[f.name])
            _check_value(type(self).__name__, f, tp, optional, value)
        self.check()

    def check(self) -> None:
        """Cross-field checks; subclasses override."""

    @classmethod
    def from_dict(cls, values: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{cls.__name__}: unknown option '{key}'{hint}")
        return cls(**values)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.metadata.get("added") and out[f.name] == f.default and \
                    not (f.metadata.get("keyed_with") and out.get(f.metadata["keyed_with"])):
                del out[f.name]
        return out

    def replace(self, **changes):
        return self.from_dict({**self.to_dict(), **changes})


def _check_value(owner: str, f, tp, optional: bool, value) -> None:
    name = f"{owner}.{f.name}"
    if value is None:
        if optional:
            return
        raise ConfigError(f"{name} must not be None")
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp in (int, float) and (isinstance(value, bool) or not isinstance(value, tp)):
        raise ConfigError(f"{name} must be {tp.__name__}, got {value!r}")
    if tp in (bool, str) and not isinstance(value, tp):
        raise ConfigError(f"{name} must be {tp.__name__}, got {value!r}")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
    if meta.get("low") is not None and value < meta["low"]:
        raise ConfigError(f"{name} must be >= {meta['low']}, got {value!r}")
    if meta.get("high") is not None and value > meta["high"]:
        raise ConfigError(f"{name} must be <= {meta['high']}, got {value!r}")
    if meta.get("above") is not None and value <= meta["above"]:
        raise ConfigError(f"{name} must be > {meta['above']}, got {value!r}")


def _parse_optional(tp):
    def parse(text: str):
        if text.lower() in ("none", "off"):
            return None
        return tp(text)
    parse.__name__ = tp.__name__
    return parse


def add_options(parser: argparse.ArgumentParser, cls, prefix: str = "", title: str | None = None,
                exclude: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per CLI field of ``cls`` (except ``exclude``); unset flags stay absent
    from the namespace."""
    group = parser.add_argument_group(title or cls.__doc__.strip().splitlines()[0])
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or f.name in exclude:
            continue
        tp, optional = _base_type(hints[f.name])
        flag = "--" + prefix + (f.metadata.get("flag") or f.name.replace("_", "-"))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default: {default})".replace("%", "%%")   # argparse formats help
        kwargs: dict[str, Any] = {"dest": prefix.replace("-", "_") + f.name, "default": argparse.SUPPRESS,
                                  "help": help_text}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is list:
            kwargs.update(nargs="+", type=typing.get_args(tp)[0])
        else:
            kwargs["type"] = _parse_optional(tp) if optional else tp
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            if optional:
                kwargs["help"] += "; 'none' for no limit"
        group.add_argument(flag, **kwargs)


def options_from_args(cls, args: argparse.Namespace, prefix: str = "", base=None):
    """Build ``cls`` from parsed flags; flags the user did not give keep ``base``'s values."""
    values = base.to_dict() if base is not None else {}
    dest_prefix = prefix.replace("-", "_")
    for f in dataclasses.fields(cls):
        dest = dest_prefix + f.name
        if hasattr(args, dest):
            values[f.name] = getattr(args, dest)
    return cls.from_dict(values)


def options_of(obj) -> dict:
    """Every ``Options`` attribute of an attack or defense object, by attribute name."""
    return {k: v.to_dict() for k, v in sorted(vars(obj).items()) if isinstance(v, Options)}
