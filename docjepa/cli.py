"""Command-line plumbing shared by every entry point: a mistake on the command line (an unknown
flag, an unknown or mistyped config override, a missing or unloadable --config file, a bad
value) becomes one line on stderr naming the flag, field or file, and exit code 2, never a
traceback. absl entry points pass `parse_flags` to `app.run`; argparse ones use `ArgumentParser`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from absl import flags
from ml_collections.config_flags import config_flags  # the module: is_config_flag is not re-exported

USAGE_ERROR = 2  # the exit code of a command-line mistake (argparse's and most tools')


def usage_error(message: object) -> NoReturn:
    """Print `error: <message>` (its first line if several) on stderr and exit with code 2."""
    text = " ".join(str(message).split("\n", 1)[0].split()) if str(message).strip() else "bad command line"
    print(f"error: {text}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def _message(e: BaseException) -> str:
    """The innermost message of an exception that wraps others (ml_collections nests KeyErrors
    in AttributeErrors), unquoted."""
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    msg = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return msg


def flag_argument(argv: Sequence[str], name: str) -> str | None:
    """The value given to --name on the command line (last one wins, as in absl)."""
    value = None
    for i, arg in enumerate(argv):
        for prefix in (f"--{name}=", f"-{name}="):
            if arg.startswith(prefix):
                value = arg[len(prefix):]
        if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _overrides(argv: Sequence[str], name: str) -> list[str]:
    """The dotted field paths overridden with --name.a.b=... on the command line."""
    return [m.group(1) for arg in argv if (m := re.match(rf"--?{re.escape(name)}\.([\w.]+)", arg))]


def _config_flag_names(flag_values: flags.FlagValues) -> list[str]:
    return [n for n in flag_values if config_flags.is_config_flag(flag_values[n])]


def _explain(e: BaseException, argv: Sequence[str], flag_values: flags.FlagValues) -> str:
    """One line for a failure while parsing `argv`, naming the flag, config field or file."""
    if isinstance(e, flags.Error):
        msg = _message(e)
        if "Error whilst parsing config file" in msg:  # get_config raised: keep its last line
            last = [ln.strip() for ln in msg.splitlines() if ln.strip()][-1]
            return f"{msg.split(':', 1)[0]}: cannot load the config file: {last}"
        return msg.splitlines()[0]
    msg = _message(e).strip()
    for name in _config_flag_names(flag_values):
        path = flag_argument(argv, name)
        if isinstance(e, (AttributeError, KeyError)):
            # An override of a field the config does not have: ml_collections names the key and
            # may suggest the field that was meant ("Did you mean ...").
            key, _, hint = msg.partition("\n")
            key = key.strip("'\"")
            for field in _overrides(argv, name):
                if key in field.split("."):
                    hint = hint.strip().rstrip("?")
                    suggestion = f" ({hint[0].lower()}{hint[1:]}?)" if hint else ""
                    return f"--{name}.{field}: no such field in {path}{suggestion}"
        if isinstance(e, OSError) or path is not None:
            return f"--{name}: cannot load {path} ({type(e).__name__}: {msg.splitlines()[-1] if msg else ''})"
    return f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}"


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """absl flags parser for `app.run(main, flags_parser=parse_flags)`: the remaining argv, or
    one line on stderr and exit 2 for any mistake, before any work (or JAX compilation) starts."""
    for name in _config_flag_names(flag_values):  # a missing config file: say so before parsing
        path = flag_argument(argv[1:], name)
        if path is not None and not os.path.isfile(path.split(":", 1)[0]):
            usage_error(f"--{name}: {path.split(':', 1)[0]}: no such config file")
    try:
        rest = flag_values(argv)
        for name in _config_flag_names(flag_values):
            value = flag_values[name].value
            if value is not None:
                getattr(value, "keys", None)  # a config that failed to load raises on first access
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - anything raised while reading the command line is a usage error
        usage_error(_explain(e, argv[1:], flag_values))
    return rest


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the same contract: a bad command line is one line on stderr and exit 2
    (argparse's own error() prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        usage_error(message)
