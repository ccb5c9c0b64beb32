"""``--config FILE.toml`` for a command with many options: the file holds the options, the
command line overrides it, and the command writes what it resolved into its run folder.

The command's own Typer options are the schema: a key is an option's name without ``--``
(``local-steps``), and its type, range and help text are the option's. So the file, the
flags and ``--help`` cannot drift apart. The settings sit in the command's table::

    [federate]                       # raregraph federate --config run.toml
    rounds = 3
    sites = ["site-1=hospitals/a/train", "hospitals/b/train"]

    [deploy.local]                   # raregraph deploy local --config run.toml
    sites = 3

Rules (the same for every command that takes ``--config``):

- a flag given on the command line wins over the file; a list option given as flags replaces
  the file's list, it is not merged;
- relative paths in the file are relative to the file's folder, not to the working folder;
- an unknown key, a wrong type, a value out of the option's range, or a key outside the
  command's table stops the command with one line naming the file, the table and the key;
- an option the command requires may come from the file instead; given by neither, it is an
  error;
- display and safety switches (``--quiet``, ``--json``, ``--overwrite``) are flags only: a
  file reused next month must not delete a folder or change what a script parses.

Only Typer, click and the standard library load here (issue 23: the command line stays light).
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

import click
import typer
from click.core import ParameterSource

from shared.atomic import write_bytes_atomic
from shared.console import cli_errors
from shared.errors import ConfigError, quote

F = TypeVar("F", bound=Callable[..., Any])

#: where the resolved settings wait, in the click context, for the command to write them
META_KEY = "raregraph.cli_config"
#: appended to the help of an option the command requires (it may now come from the file)
REQUIRED_NOTE = " \\[required: here or in --config]"
#: flags that never come from a file: display, machine output, deleting a folder
CLI_ONLY = ("quiet", "json")
#: how a source is spelled in the resolved file
SOURCES = ("default", "file", "flag")

#: ``(value, base folder) → value``: makes a path-like string absolute against ``base``
PathValue = Callable[[str, Path], str]


def config_option_help(table: str) -> str:
    """The ``--config`` option's help text for a command whose settings sit in ``[table]``."""
    return (f"A TOML file of this command's options under \\[{table}]: keys are the option names without --, e.g. "
            "local-steps = 40; paths are relative to the file. Options given here override it. "
            "Example: deploy/run.example.toml.")


@dataclass(frozen=True)
class Setting:
    """One option's final value and where it came from."""

    key: str  # the option's name without --, as in the file
    name: str  # the command function's parameter
    value: Any  # None: unset (an optional option nobody gave)
    source: str  # one of SOURCES


@dataclass(frozen=True)
class ResolvedConfig:
    """Every file-settable option of one command invocation, resolved."""

    command: str  # e.g. "deploy local"
    table: tuple[str, ...]  # the file's table, e.g. ("deploy", "local")
    file: Path | None  # the --config file as given, if one was given
    settings: tuple[Setting, ...]
    path_values: Mapping[str, PathValue]  # key → how its values are made absolute

    def values(self) -> dict[str, Any]:
        """Parameter name → final value, for calling the command's function."""
        return {s.name: s.value for s in self.settings}

    def source(self, key: str) -> str:
        """Where ``key``'s value came from: ``default``, ``file`` or ``flag``."""
        return next(s.source for s in self.settings if s.key == key)

    def label(self, key: str) -> str:
        """How an error names the setting ``key``: its flag, or the file and key it came from."""
        if self.file is not None and self.source(key) == "file":
            return f"{self.file}: key {'.'.join((*self.table, key))!r}"
        return f"--{key}"

    def to_toml(self) -> str:
        """The resolved settings as a TOML file that ``--config`` reads back.

        Paths are absolute (so the file works from any folder), unset options are commented
        out, each line says where its value came from, and ``[resolved]`` records the command,
        the config file and every key's source. Passwords in URLs are replaced by ``***``.
        """
        table = ".".join(self.table)
        lines = [f"# `raregraph {self.command}`: every setting of this run, its final value and where it came from",
                 "# (flag: the command line; file: the --config file; default: the option's default).",
                 f"# Repeat the run with `raregraph {self.command} --config THIS-FILE`.", "", f"[{table}]"]
        for s in self.settings:
            if s.value is None:
                lines.append(f"# {s.key} is unset  # {s.source}")
                continue
            value = _absolute(s.value, self.path_values.get(s.key), Path.cwd())
            lines.append(f"{s.key} = {_toml_value(value)}  # {s.source}")
        lines += ["", "[resolved]", f"command = {_toml_value(f'raregraph {self.command}')}"]
        if self.file is not None:
            lines.append(f"config = {_toml_value(os.path.abspath(self.file))}")
        lines += ["", "[resolved.source]", *(f"{s.key} = {_toml_value(s.source)}" for s in self.settings)]
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> Path:
        """Write :meth:`to_toml` to ``path`` atomically (the folder must exist); ``path``."""
        write_bytes_atomic(path, self.to_toml().encode("utf-8"))
        return path


def resolved_config(ctx: click.Context) -> ResolvedConfig:
    """What :func:`with_config_file` resolved for the command running in ``ctx``."""
    return ctx.meta[META_KEY]


def file_options(command: click.Command, *, cli_only: Sequence[str] = CLI_ONLY) -> dict[str, click.Option]:
    """Key (the long option name without ``--``) → option, for every option a file may set."""
    out = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "config":
            continue
        longs = [o for o in param.opts if o.startswith("--")]
        if longs and longs[0][2:] not in cli_only:
            out[longs[0][2:]] = param
    return out


def plain_help(option: click.Option) -> str:
    """An option's help as a person reads it (no markup escapes, no :data:`REQUIRED_NOTE`)."""
    return (option.help or "").removesuffix(REQUIRED_NOTE).replace("\\[", "[")


def describe(option: click.Option) -> str:
    """What a file value of ``option`` must be, e.g. ``an integer ≥ 1`` or ``an array of paths``."""
    kind = _kind(option.type)
    if option.multiple:
        return f"an array of {_PLURAL.get(kind, kind + 's')}"
    article = "an" if kind[0] in "aeiou" else "a"
    text = "true or false" if kind == "boolean" else f"{article} {kind}"
    return text + _range_text(option.type)


def load_table(path: Path, table: Sequence[str]) -> dict[str, Any]:
    """The ``[table]`` of the TOML file at ``path`` (a dotted table such as ``deploy.local``).

    Other top-level tables are left alone (one file may serve several commands); a key at the
    top level is an error, since it would silently do nothing.

    Raises
    ------
    ConfigError
        Not TOML, no such table, or a top-level key that is not a table.
    OSError
        The file cannot be read.
    """
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    name = ".".join(table)
    for key, value in doc.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: key {key!r} is outside any table: put the settings in the {name!r} table")
    node: Any = doc
    for part in table:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        found = sorted(_tables(doc))
        hint = difflib.get_close_matches(name, found, n=1)
        raise ConfigError(f"{path}: no {name!r} table, where this command's settings go"
                          + (f" (did you mean {hint[0]!r}?)" if hint else f" (tables: {', '.join(found) or 'none'})"))
    return node


def check_value(value: Any, option: click.Option, *, where: str, base: Path, path_value: PathValue | None) -> Any:
    """A file's ``value`` for ``option``, checked and converted as the flag would be.

    ``where`` opens the message (``run.toml: key 'federate.rounds'``); ``base`` is the file's
    folder, against which path values are made absolute (``path_value`` for strings that hold a
    path, such as ``ID=PATH``).

    Raises
    ------
    ConfigError
        ``where: must be <what the option takes>, got <value>``.
    """
    def bad() -> ConfigError:
        return ConfigError(f"{where}: must be {describe(option)}, got {quote(value)}")

    items = value if option.multiple else [value]
    if option.multiple and not isinstance(value, list):
        raise bad()
    out = []
    for item in items:
        converted = _scalar(item, option.type)
        if converted is _BAD:
            raise bad()
        if isinstance(option.type, click.Path):
            converted = Path(path_value(converted, base) if path_value else base / converted)
        elif path_value is not None:
            converted = path_value(converted, base)
        out.append(converted)
    return out if option.multiple else out[0]


def resolve(ctx: click.Context, config: Path | None, *, table: Sequence[str], required: Sequence[str] = (),
            cli_only: Sequence[str] = CLI_ONLY, path_values: Mapping[str, PathValue] | None = None,
            given: Mapping[str, Any]) -> ResolvedConfig:
    """Every file-settable option's final value: the flag if given, else the file's, else the default.

    Parameters
    ----------
    ctx
        The running command's context (its options and where each value came from).
    config
        The ``--config`` file, or None.
    table
        The file's table for this command, e.g. ``("deploy", "local")``.
    required
        Parameter names the command cannot run without.
    cli_only
        Keys a file may not set (:data:`CLI_ONLY`).
    path_values
        Key → how a string option's values are made absolute (``ID=PATH``, URL or path).
    given
        Parameter name → the value Typer parsed (flag or default).

    Raises
    ------
    ConfigError
        An unknown key, a wrong type or range, or a required option set nowhere.
    """
    path_values = dict(path_values or {})
    options = file_options(ctx.command, cli_only=cli_only)
    name = ".".join(table)
    data: dict[str, Any] = {}
    file = base = None
    if config is not None:
        file = Path(config)
        base = Path(os.path.abspath(config)).parent
        data = load_table(config, table)
        for key in data:
            if key in options:
                continue
            if key in cli_only:
                raise ConfigError(f"{config}: key {f'{name}.{key}'!r}: a command-line switch only (--{key})")
            hint = difflib.get_close_matches(key.replace("_", "-"), options, n=1)
            raise ConfigError(f"{config}: unknown key {f'{name}.{key}'!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else f"; known keys: {', '.join(options)}"))
    settings = []
    for key, option in options.items():
        if ctx.get_parameter_source(option.name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None):
            value, source = given[option.name], "flag"
        elif key in data:
            value = check_value(data[key], option, where=f"{config}: key {f'{name}.{key}'!r}", base=base,
                                path_value=path_values.get(key))
            source = "file"
        else:
            value, source = given[option.name], "default"
        if option.name in required and value in (None, [], ()):
            where = f"or as {f'{name}.{key}'!r} in {config}" if config else "or in a --config file"
            raise ConfigError(f"--{key} is required: give it on the command line {where}")
        if isinstance(value, tuple):
            value = list(value)
        settings.append(Setting(key=key, name=option.name, value=value, source=source))
    return ResolvedConfig(command=" ".join(table), table=tuple(table), file=file, settings=tuple(settings),
                          path_values=path_values)


def with_config_file(*table: str, cli_only: Sequence[str] = CLI_ONLY,
                     path_values: Mapping[str, PathValue] | None = None) -> Callable[[F], F]:
    """Give a Typer command a ``--config FILE.toml`` option whose ``[table]`` sets its options.

    The decorated function keeps its signature; the command the user sees gains ``--config``,
    and its required options become optional on the command line (they may come from the
    file; :func:`resolve` enforces them, and their help says so). The function is called with
    the resolved values, and may read the whole resolution with :func:`resolved_config` when it
    declares a ``typer.Context`` parameter. A resolution error is the usual one-line
    ``error: ...`` and exit 1, before the function runs.

    Parameters
    ----------
    table
        The file's table, e.g. ``"deploy", "local"`` for ``[deploy.local]``.
    cli_only
        Keys that stay flags only (:data:`CLI_ONLY` plus e.g. ``overwrite``).
    path_values
        Key → how a string option's values are made absolute against the file's folder.
    """
    def decorate(func: F) -> F:
        hints = get_type_hints(func, include_extras=True)
        signature = inspect.signature(func)
        ctx_name = next((n for n, h in hints.items() if isinstance(h, type) and issubclass(h, click.Context)), None)
        if "config" in signature.parameters:
            raise TypeError(f"{func.__name__} has its own 'config' parameter; --config is added by with_config_file")
        required = [p.name for p in signature.parameters.values()
                    if p.default is inspect.Parameter.empty and p.name != ctx_name]
        params = [inspect.Parameter(ctx_name or "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
                  inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=Annotated[Path | None, typer.Option(
                                        "--config", help=config_option_help(".".join(table)), show_default=False)])]
        for p in signature.parameters.values():
            if p.name == ctx_name:
                continue
            annotation = hints[p.name]
            if p.name in required:
                annotation, p = _optional_on_command_line(annotation), p.replace(default=None)
            params.append(p.replace(annotation=annotation))

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            ctx = kwargs.pop(ctx_name or "ctx")
            config = kwargs.pop("config")
            with cli_errors():
                resolved = resolve(ctx, config, table=table, required=required, cli_only=cli_only,
                                   path_values=path_values, given=kwargs)
            ctx.meta[META_KEY] = resolved
            call = {**kwargs, **resolved.values()}
            if ctx_name:
                call[ctx_name] = ctx
            return func(**call)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return decorate


def site_path_value(value: str, base: Path) -> str:
    """``ID=PATH`` or ``PATH`` with the path made absolute against ``base`` (``--sites`` of federate)."""
    site_id, sep, path = value.partition("=")
    if not sep:
        return str(base / value)
    return f"{site_id}={base / path}" if path else value


def data_path_value(value: str, base: Path) -> str:
    """A folder or file made absolute against ``base``; a database URL unchanged (``--site`` of deploy local)."""
    return value if "://" in value else str(base / value)


# helpers

_BAD = object()
_PLURAL = {"boolean": "booleans", "integer": "integers", "number": "numbers", "path": "paths", "string": "strings"}


def _kind(param_type: click.ParamType) -> str:
    """The TOML-facing name of a click type."""
    if isinstance(param_type, click.types.BoolParamType):
        return "boolean"
    if isinstance(param_type, click.types.IntParamType):
        return "integer"
    if isinstance(param_type, click.types.FloatParamType):
        return "number"
    if isinstance(param_type, click.Path):
        return "path"
    return "string"


def _range_text(param_type: click.ParamType) -> str:
    """`` ≥ 1``, `` from 0 to 1`` or nothing, for a click range type."""
    if not isinstance(param_type, click.types._NumberRangeBase):
        return ""
    low, high = param_type.min, param_type.max
    if low is not None and high is not None and not (param_type.min_open or param_type.max_open):
        return f" from {low:g} to {high:g}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if param_type.min_open else '≥'} {low:g}")
    if high is not None:
        parts.append(f"{'<' if param_type.max_open else '≤'} {high:g}")
    return " " + " and ".join(parts)


def _scalar(value: Any, param_type: click.ParamType) -> Any:
    """``value`` as the option's type, or :data:`_BAD` (TOML types only: no string parsing)."""
    kind = _kind(param_type)
    if kind == "boolean":
        return value if isinstance(value, bool) else _BAD
    if isinstance(value, bool):
        return _BAD
    if kind == "integer":
        out = value if isinstance(value, int) else _BAD
    elif kind == "number":
        out = float(value) if isinstance(value, int | float) else _BAD
    else:
        return value if isinstance(value, str) and (value or kind == "string") else _BAD
    if out is _BAD or (isinstance(out, float) and math.isnan(out)):
        return _BAD
    if isinstance(param_type, click.types._NumberRangeBase):
        low, high = param_type.min, param_type.max
        if low is not None and (out < low or (param_type.min_open and out == low)):
            return _BAD
        if high is not None and (out > high or (param_type.max_open and out == high)):
            return _BAD
    if isinstance(param_type, click.Choice) and out not in param_type.choices:
        return _BAD
    return out


def _optional_on_command_line(annotation: Any) -> Any:
    """``Annotated[T, Option(help=...)]`` with :data:`REQUIRED_NOTE` added to the help."""
    if get_origin(annotation) is not Annotated:
        return annotation
    inner, *meta = get_args(annotation)
    meta = [copy.copy(m) for m in meta]
    for m in meta:
        if isinstance(m, typer.models.OptionInfo):
            m.help = (m.help or "") + REQUIRED_NOTE
    return Annotated[(inner, *meta)]


def _tables(doc: dict, prefix: str = "") -> list[str]:
    """Every table name in a parsed TOML document, dotted."""
    out = []
    for key, value in doc.items():
        if isinstance(value, dict):
            out.append(prefix + key)
            out += _tables(value, prefix + key + ".")
    return out


_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]+@")


def _redact(text: str) -> str:
    """No password from a URL, no private key, in a file written into a run folder."""
    if "PRIVATE KEY" in text:
        return "<private key removed>"
    return _URL_PASSWORD.sub(r"\1***@", text)


def _absolute(value: Any, path_value: PathValue | None, base: Path) -> Any:
    """``value`` with every path in it made absolute against ``base`` (lists item by item)."""
    if isinstance(value, list):
        return [_absolute(v, path_value, base) for v in value]
    if isinstance(value, Path):
        return Path(os.path.abspath(base / value))
    if isinstance(value, str) and path_value is not None:
        return path_value(value, base)
    return value


def _toml_value(value: Any) -> str:
    """One TOML value: a string, path, boolean, integer, float or an array of them."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    return json.dumps(_redact(str(value)))  # a JSON string is a valid TOML basic string
