"""The click options several `packetclip` commands take, each declared once, so that a flag means the same thing
(name, type, default, help) wherever it appears.

Owns the declarations: each decorator adds its option(s) with the parameter name the commands' functions
take. What a value then means — flags > environment > config file > defaults — is `packetclip.config`'s, and what
a command does with it is the command's. Options one command alone takes are declared on that command. It also owns
`setup_errors`, which turns settings the core cannot use (`packetclip.pipeline.SetupError`) into the one-line
error every command stops with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from packetclip.logs import LOG_FORMATS
from packetclip.pipeline import SetupError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _model_option(help_text: str) -> Decorator:
    return click.option("--model", "model", default=None, metavar="DIR|TAR", help=help_text)


# `--model DIR|TAR` for the commands that classify once with one bundle (classify, bench)
model_option = _model_option(
    "Bundle folder or .tar.gz (default: the store's active bundle, else the embedded one)."
)
# `--model DIR|TAR` for the live sidecars (serve, suricata run): without it they follow the store's activations
live_model_option = _model_option(
    "Bundle folder or .tar.gz, served without hot reload (default: the store's active bundle, reloaded on "
    "activation, else the embedded one)."
)


def threads_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--threads N`, for the commands that run the engine."""
    return click.option(
        "--threads",
        "threads",
        type=click.IntRange(min=1),
        default=None,
        help="onnxruntime threads per model (default: config, else 1).",
    )(command)


def batch_size_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--batch-size N`, for the commands that run the engine."""
    return click.option(
        "--batch-size",
        "batch_size",
        type=click.IntRange(min=1),
        default=None,
        help="Most connections per inference call (default: config, else 256).",
    )(command)


def config_option(reads: str) -> Decorator:
    """`--config FILE`; `reads` says what the command reads from the file."""
    return click.option(
        "--config",
        "config",
        default=None,
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help=f"TOML config file ({reads}; default: $PACKETCLIP_CONFIG, else the first of "
        "~/.config/packetclip/config.toml and /etc/packetclip/config.toml that exists).",
    )


def log_format_option(table: str) -> Decorator:
    """`--log-format text|json`, for the long-running commands; `table` is the config file's table that sets it."""
    return click.option(
        "--log-format",
        "log_format",
        type=click.Choice(LOG_FORMATS),
        default=None,
        help=f"Log lines as text or JSON (default: the config file's [{table}] log_format, else text).",
    )


def output_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`-o/--output FILE`, for the commands that print records."""
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Path(dir_okay=False, writable=True),
        default=None,
        help="Write records here instead of stdout.",
    )(command)


def allowlist_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--allowlist FILE`, for the commands that write verdicts."""
    return click.option(
        "--allowlist",
        "allowlist",
        default=None,
        metavar="FILE",
        help="TOML allowlist: matching verdicts keep label and scores and are marked allowed (default: config, "
        "else none; re-read when it changes).",
    )(command)


def missions_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--missions DIR` and `--text-encoder DIR`, for the commands that write user-mission scores."""
    command = click.option(
        "--text-encoder",
        "text_encoder",
        default=None,
        metavar="DIR",
        help="The exported text encoder (default: config, else <store>/text-encoder; `packetclip models "
        "text-encoder` writes it).",
    )(command)
    return click.option(
        "--missions",
        "missions",
        default=None,
        metavar="DIR",
        help="Folder of user-written mission YAML: each mission the bundle was not trained with gets a score "
        "(default: config, else none).",
    )(command)


def keep_inputs_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--keep-inputs FILE`, for the commands that write verdicts."""
    return click.option(
        "--keep-inputs",
        "keep_inputs",
        default=None,
        metavar="FILE",
        help="Keep every verdict's model input in this SQLite feedback store, for `packetclip feedback` "
        "(default: config, else none).",
    )(command)


@contextmanager
def setup_errors() -> Iterator[None]:
    """A setting, bundle or file the settings name that the core cannot use stops the command with its one line
    (click prints it as `Error: ...` and exits 1)."""
    try:
        yield
    except SetupError as exc:
        raise click.ClickException(str(exc)) from exc
