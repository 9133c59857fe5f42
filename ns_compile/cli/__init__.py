"""The `ns-compile` command line.

Each command lives in its own module in this package and registers itself on `cli` through
`COMMAND_MODULES`; commands stay thin and call library functions, so everything the CLI does
is also reachable from Python.
"""
from __future__ import annotations

import importlib
import sys

import click

from ns_compile import __version__
from ns_compile.errors import ToleranceExceeded, UserError

# module name -> command name; imported lazily so `--help` stays fast and a command whose
# optional dependency (Lava) is missing does not break the others.
COMMAND_MODULES = {
    "inspect": "ns_compile.cli.inspect_cmd",
    "logits": "ns_compile.cli.logits_cmd",
    "generate": "ns_compile.cli.generate_cmd",
    "compile": "ns_compile.cli.compile_cmd",
    "run": "ns_compile.cli.run_cmd",
    "plan": "ns_compile.cli.plan_cmd",
    "trace": "ns_compile.cli.trace_cmd",
    "compare": "ns_compile.cli.compare_cmd",
    "demo": "ns_compile.cli.demo_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [n for n, m in COMMAND_MODULES.items() if importlib.util.find_spec(m) is not None]

    def get_command(self, ctx, name):
        mod = COMMAND_MODULES.get(name)
        if mod is None or importlib.util.find_spec(mod) is None:
            return None
        return importlib.import_module(mod).command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ns-compile")
def cli():
    """Compile GPU-trained spiking language models (NeuronSpark, Nord) for Intel Loihi 2.

    \b
    Typical path:
      ns-compile inspect  CKPT              what the model is and what maps on chip
      ns-compile compile  CKPT -o ART       quantize, lower and partition
      ns-compile run      ART --backend lava-sim --prompt "..."
      ns-compile compare  ART --reference CKPT --text FILE
    """


def main(argv=None):
    try:
        cli.main(args=argv, standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e.format()}", err=True)
        sys.exit(e.exit_code)
    except ToleranceExceeded as e:
        click.echo(f"tolerance exceeded: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:  # usage errors: click's own message, exit 2
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
