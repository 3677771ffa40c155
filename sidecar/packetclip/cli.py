"""The `packetclip` command: the sensor-side entry point. Each command group lives in its own module."""

from __future__ import annotations

import logging

import click

from packetclip import __version__
from packetclip.commands.bench import bench
from packetclip.commands.classify import classify
from packetclip.commands.featurize import featurize
from packetclip.commands.feedback import feedback
from packetclip.commands.models import models
from packetclip.commands.serve import serve
from packetclip.commands.suricata import suricata


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="packetclip")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """PacketCLIP verdicts for network sensors."""
    configure_logging(verbose)


cli.add_command(classify)
cli.add_command(featurize)
cli.add_command(feedback)
cli.add_command(bench)
cli.add_command(models)
cli.add_command(serve)
cli.add_command(suricata)


def configure_logging(verbose: int) -> None:
    """The one logging set-up of a command line: warnings by default, -v info, -vv debug."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_group(group: click.Group, prog_name: str, argv: list[str] | None) -> int:
    """Run a click group and turn its outcome into an exit code (tests call this instead of a subprocess).

    Exit codes: 0 done; 1 the command failed, or some of its input could not be read (it says which on
    stderr); 2 usage error; 130 interrupted; commands document any others (`packetclip models`)."""
    try:
        # Outside standalone mode click does not raise a command's `Exit(code)` (nor `ctx.exit(code)`): it
        # returns the code, the same way it returns whatever a command returns. No command returns a value,
        # so an integer here is an exit code.
        outcome = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    if isinstance(outcome, int) and not isinstance(outcome, bool):
        return outcome
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console-script entry of `packetclip`."""
    return run_group(cli, "packetclip", argv)
