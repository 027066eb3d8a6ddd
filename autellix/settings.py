"""One way to configure every subcommand: a pydantic-settings model, fed by flags, env and YAML.

Theory of operation
-------------------
Each subcommand declares one ``BaseSettings`` subclass (``env_prefix="AUTELLIX_"``). From that model
this module derives the command-line flags (one ``--kebab-case`` flag per scalar field, ``--x/--no-x``
for booleans, a repeatable flag for lists of scalars), so the flag set, the environment variables and
the YAML keys can never drift apart. Precedence, highest first:

1. flags given on the command line,
2. ``AUTELLIX_<FIELD>`` environment variables,
3. the YAML file named by ``--config`` (or ``AUTELLIX_CONFIG``),
4. the model's defaults.

Invalid input of any source ends in :class:`SettingsError`, whose message is one line that names the
offending key; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource

S = TypeVar("S", bound=BaseSettings)

_SCALARS: tuple[type, ...] = (str, int, float, bool)


class SettingsError(ValueError):
    """A configuration problem, worded as one line for a human."""


def _unwrap_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _flag_kind(annotation: Any) -> str | None:
    """Classify a field: 'bool', 'scalar', 'list' (of scalars) or None (YAML/env only)."""
    annotation = _unwrap_optional(annotation)
    if annotation is bool:
        return "bool"
    if annotation in _SCALARS:
        return "scalar"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "scalar"
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        if args and _unwrap_optional(args[0]) in _SCALARS:
            return "list"
    return None


def add_settings_arguments(parser: argparse.ArgumentParser, model: type[BaseSettings]) -> None:
    """Add ``--config`` and one flag per flag-able field of ``model`` to ``parser``.

    Flags default to ``argparse.SUPPRESS`` so that only what the user typed overrides other sources.
    """
    parser.add_argument(
        "--config",
        metavar="YAML",
        default=argparse.SUPPRESS,
        help="YAML file with settings (keys as the flags, with underscores); flags and AUTELLIX_* "
        "environment variables override it",
    )
    for name, field in model.model_fields.items():
        kind = _flag_kind(field.annotation)
        if kind is None:
            continue
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "").replace("%", "%%")
        default = field.get_default(call_default_factory=True)
        if default is not None and default != [] and kind != "bool":
            help_text += f" (default: {default})"
        literal = typing.get_origin(_unwrap_optional(field.annotation)) is typing.Literal
        choices = list(typing.get_args(_unwrap_optional(field.annotation))) if literal else None
        if kind == "bool":
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text + f" (default: {'on' if default else 'off'})",
            )
        elif kind == "list":
            parser.add_argument(
                flag, dest=name, action="append", default=argparse.SUPPRESS, help=help_text + " (repeatable)"
            )
        else:
            parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, choices=choices, help=help_text)


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path!r} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"config file {path!r} must hold a mapping of settings, not {type(data).__name__}"
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one line: ``setting 'port': Input should be ...``."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    message = first.get("msg", "invalid value")
    if not where:  # a rule across settings (a model validator): its own words say what is wrong
        return f"invalid settings: {message.removeprefix('Value error, ')}{suffix}"
    return f"invalid setting {where!r}: {message}{suffix}"


def load_settings(model: type[S], namespace: argparse.Namespace | None = None) -> S:
    """Build ``model`` from parsed flags, the environment and an optional YAML file."""
    flags = {k: v for k, v in vars(namespace or argparse.Namespace()).items() if k in model.model_fields}
    config_path = getattr(namespace, "config", None) or os.environ.get("AUTELLIX_CONFIG")
    file_values = _read_yaml(config_path) if config_path else {}
    unknown = sorted(set(file_values) - set(model.model_fields))
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r} in {config_path}")
    try:
        env_values = EnvSettingsSource(model)()
        return model(**{**file_values, **env_values, **flags})
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from exc
    except ValueError as exc:  # pydantic-settings raises this for unparsable env JSON
        raise SettingsError(str(exc).splitlines()[0]) from exc
