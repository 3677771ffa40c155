"""The `packetclip-train` command: the model factory. Each stage's group lives in its own module."""

from __future__ import annotations

import click

from packetclip.cli import configure_logging, run_group
from packetclip_training import __version__
from packetclip_training.align_cli import align
from packetclip_training.all_cli import all_stages
from packetclip_training.baselines.cli import baseline
from packetclip_training.dataset.cli import dataset
from packetclip_training.describe.cli import describe
from packetclip_training.etbert_cli import etbert
from packetclip_training.evaluate_cli import evaluate
from packetclip_training.evaluate_lab_run_cli import evaluate_lab_run_command
from packetclip_training.evaluate_real_cli import evaluate_real
from packetclip_training.export_cli import export
from packetclip_training.knowledge.cli import kg
from packetclip_training.lab.cli import lab
from packetclip_training.loso_cli import loso
from packetclip_training.pretrain_cli import pretrain
from packetclip_training.reasoner_cli import reasoner
from packetclip_training.text.cli import text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="packetclip-train")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Build PacketCLIP models from real traffic."""
    configure_logging(verbose)


cli.add_command(lab)
cli.add_command(dataset)
cli.add_command(pretrain)
cli.add_command(kg)
cli.add_command(describe)
cli.add_command(text)
cli.add_command(baseline)
cli.add_command(align)
cli.add_command(reasoner)
cli.add_command(export)
cli.add_command(evaluate)
cli.add_command(evaluate_real)
cli.add_command(evaluate_lab_run_command)
cli.add_command(all_stages)
cli.add_command(loso)
cli.add_command(etbert)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry of `packetclip-train`."""
    return run_group(cli, "packetclip-train", argv)
