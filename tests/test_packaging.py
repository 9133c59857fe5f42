"""The sibling folders install inside the ns_compile namespace, never as top-level packages
(a top-level `kernels` would shadow the package transformers probes for)."""
import importlib.util
import subprocess
import sys
from pathlib import Path


def test_siblings_are_namespaced_and_not_top_level(tmp_path):
    # run from a neutral directory so the repo root is not on sys.path
    code = (
        "import importlib.util, ns_compile.kernels, ns_compile.sim, ns_compile.backends, ns_compile.partition;"
        "print([importlib.util.find_spec(n) is None for n in ('kernels', 'sim', 'backends', 'partition')]);"
        "print(ns_compile.kernels.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "[True, True, True, True]", out.stdout
    assert Path(lines[1]).parent.name == "kernels"


def test_cli_entry_point_lists_every_command():
    from click.testing import CliRunner

    from ns_compile.cli import COMMAND_MODULES, cli
    assert all(importlib.util.find_spec(m) for m in COMMAND_MODULES.values())
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    for name in COMMAND_MODULES:
        assert name in r.output
