"""Command-line mistakes: one line on stderr naming the flag, field or file, exit code 2, for
every entry point, before any work (or JAX compilation) starts."""

import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

import train_utils
from docjepa import cli

# One mistake per entry point, and what its one line must name.
CASES = {
    "docjepa.prepare": (["--config", "configs/demo.py", "--config.prepare.max_pagez=3", "--out", "{tmp}/out"],
                        'error: --config.prepare.max_pagez: no such field in configs/demo.py '
                        '(did you mean "max_pages" instead of "max_pagez"?)'),
    "docjepa.train": (["--config", "configs/demo.py", "--config.foo=1", "--workdir", "{tmp}/run"],
                      "error: --config.foo: no such field in configs/demo.py"),
    "docjepa.eval": (["--config", "configs/missing.py", "--workdir", "{tmp}/run"],
                     "error: --config: configs/missing.py: no such config file"),
    "docjepa.scaling": (["--sweep", "configs/missing.py:cpu", "--out", "{tmp}/study"],
                        "error: flag --sweep=configs/missing.py:cpu: no such config file"),
    "docjepa.export": (["--workdir", "{tmp}/run", "--out", "{tmp}/export"],
                       "error: {tmp}/run/config.json: missing (is {tmp}/run a docjepa workdir?)"),
    "docjepa.embed": (["--config", "configs/missing.py", "--data", "{tmp}/data"],
                      "error: --config: configs/missing.py: no such config file"),
    "docjepa.data.show": (["{tmp}/data", "--config.foo=1", "--out", "{tmp}/page.png"],
                          "error: unrecognized arguments: --config.foo=1"),
}


@pytest.mark.parametrize("module", sorted(CASES))
def test_entry_point_mistake_is_one_line_and_exit_2(module, tmp_path):
    args, line = CASES[module]
    cmd = [sys.executable, "-m", module, *(a.format(tmp=tmp_path) for a in args)]
    r = subprocess.run(cmd, cwd=train_utils.ROOT, env=train_utils.env(), capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr.strip().splitlines()) == (2, [line.format(tmp=tmp_path)]), r.stderr[-3000:]
    assert not list(tmp_path.iterdir())  # nothing was started


@pytest.fixture()
def fv(tmp_path):
    """A fresh flag registry with a config flag, as the entry points define it."""
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config", flag_values=values, lock_config=True)
    flags.DEFINE_integer("steps", 1, "an ordinary flag", flag_values=values)
    (tmp_path / "good.py").write_text(
        "import ml_collections as mlc\n\n"
        "def get_config(arg=None):\n"
        "    if arg not in (None, 'small'):\n"
        "        raise ValueError(f'unknown variant {arg!r}')\n"
        "    return mlc.ConfigDict({'data': {'max_pages': 2, 'batch_size': 4}, 'seed': 0})\n")
    (tmp_path / "broken.py").write_text("def get_config(:\n")
    return values


@pytest.mark.parametrize("args,line", [
    (["--config={tmp}/good.py", "--config.data.max_pagez=3"],
     'error: --config.data.max_pagez: no such field in {tmp}/good.py (did you mean "max_pages" instead of "max_pagez"?)'),
    (["--config={tmp}/good.py", "--config.dta.max_pages=3"],
     'error: --config.dta.max_pages: no such field in {tmp}/good.py (did you mean "data" instead of "dta"?)'),
    (["--config={tmp}/good.py", "--config.foo=3"], "error: --config.foo: no such field in {tmp}/good.py"),
    (["--config={tmp}/absent.py", "--config.seed=1"], "error: --config: {tmp}/absent.py: no such config file"),
    (["--config={tmp}/broken.py"], "error: --config: cannot load {tmp}/broken.py (SyntaxError: invalid syntax (broken.py, line 1))"),
    (["--config={tmp}/good.py:huge"], "error: flag --config={tmp}/good.py: cannot load the config file: ValueError: unknown variant 'huge'"),
    (["--config={tmp}/good.py", "--config.data.max_pages=two"],
     "error: flag --config.data.max_pages=two: invalid literal for int() with base 10: 'two'"),
    (["--config={tmp}/good.py", "--stepz=3"], "error: Unknown command line flag 'stepz'. Did you mean: steps ?"),
])
def test_parse_flags_one_line(fv, tmp_path, capsys, monkeypatch, args, line):
    argv = ["prog", *(a.format(tmp=tmp_path) for a in args)]
    monkeypatch.setattr(sys, "argv", argv)  # ml_collections finds the overrides in sys.argv
    with pytest.raises(SystemExit) as e:
        cli.parse_flags(argv, fv)
    assert e.value.code == cli.USAGE_ERROR == 2
    assert capsys.readouterr().err.splitlines() == [line.format(tmp=tmp_path)]


def test_parse_flags_accepts_a_good_command_line(fv, tmp_path, monkeypatch):
    argv = ["prog", f"--config={tmp_path}/good.py:small", "--config.data.max_pages=3", "--steps=5", "x"]
    monkeypatch.setattr(sys, "argv", argv)
    rest = cli.parse_flags(argv, fv)
    assert rest == ["prog", "x"] and fv.config.data.max_pages == 3 and fv.steps == 5


def test_argument_parser_one_line(capsys):
    ap = cli.ArgumentParser(prog="p")
    ap.add_argument("--index", type=int)
    with pytest.raises(SystemExit) as e:
        ap.parse_args(["--index", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["error: argument --index: invalid int value: 'x'"]
