"""`packetclip feedback add|list|export`: an analyst's label for a verdict, and the labelled inputs for the factory.

Owns the commands over a feedback store (`packetclip.feedback`); the sensor commands keep inputs in one through
`packetclip.pipeline.open_input_store` (their `--keep-inputs FILE` is declared in `packetclip.commands.options`). The
store a `feedback` command reads is `--store FILE`, else the `keep_inputs` setting (PACKETCLIP_KEEP_INPUTS or the config file), else
$XDG_DATA_HOME/packetclip/feedback.sqlite; the commands never create one.

Exit codes: 0 done; 1 the store cannot be used, or holds no kept input for the uid or community_id; 2 usage
(an unknown label among them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from packetclip.commands.options import config_option
from packetclip.config import ConfigError, load_config
from packetclip.feedback import (
    CLASS_NAMES,
    FeedbackStore,
    FeedbackStoreError,
    default_feedback_store,
    export_record,
    parse_since,
    summary_record,
)


def _store_path(store: str | None, config: str | None) -> Path:
    if store is not None:
        return Path(store).expanduser()
    try:
        settings = load_config(config=config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return settings.keep_inputs if settings.keep_inputs is not None else default_feedback_store()


def _open(store: str | None, config: str | None) -> FeedbackStore:
    try:
        return FeedbackStore(_store_path(store, config))
    except FeedbackStoreError as exc:
        raise click.ClickException(str(exc)) from None


def store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = config_option("its keep_inputs names the store")(command)
    return click.option(
        "--store",
        "store",
        default=None,
        metavar="FILE",
        help="The feedback store (default: the keep_inputs setting, else $XDG_DATA_HOME/packetclip/"
        "feedback.sqlite).",
    )(command)


@click.group("feedback")
def feedback() -> None:
    """Label verdicts the sensor kept the inputs of, and export them for training."""


@feedback.command("add")
@click.option("--uid", default=None, help="The connection's uid (packetclip.log, JSON records).")
@click.option(
    "--community-id",
    "community_id",
    default=None,
    metavar="ID",
    help="Every kept connection with this Community ID (eve, conn.log).",
)
@click.option(
    "--label",
    required=True,
    type=click.Choice(CLASS_NAMES),
    help="What the connection is: a coarse or fine class.",
)
@click.option("--note", default="", help="Why, for whoever trains on it.")
@store_options
def add(
    uid: str | None, community_id: str | None, label: str, note: str, store: str | None, config: str | None
) -> None:
    """Record the right label for a connection the sensor kept the input of."""
    if (uid is None) == (community_id is None):
        raise click.UsageError("give exactly one of --uid and --community-id")
    with _open(store, config) as opened:
        try:
            labelled = opened.add(label, note, uid=uid, community_id=community_id)
        except FeedbackStoreError as exc:
            raise click.ClickException(str(exc)) from None
    for row in labelled:
        was = f" (was labelled {row.replaced})" if row.replaced is not None else ""
        click.echo(
            f"{row.uid}\t{row.community_id}\tverdict {row.verdict_label}/{row.verdict_attack} -> {label}{was}"
        )
    if community_id is not None:
        click.echo(f"{len(labelled)} connection(s) of community_id {community_id} labelled {label}", err=True)


@feedback.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@store_options
def list_feedback(as_json: bool, store: str | None, config: str | None) -> None:
    """The labelled connections, oldest label first."""
    with _open(store, config) as opened:
        try:
            records = [summary_record(row) for row in opened.rows()]
        except FeedbackStoreError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        for record in records:
            click.echo(json.dumps(record, ensure_ascii=False))
        return
    columns = ("id", "added", "label", "verdict", "verdict_attack", "uid", "community_id", "model", "note")
    click.echo("\t".join(columns))
    for record in records:
        click.echo("\t".join(str(record[name]) for name in columns))


@feedback.command("export")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--since",
    default=None,
    metavar="WHEN",
    help="Only labels added from this date or ISO date-time on (UTC unless it has an offset).",
)
@store_options
def export(out: str, since: str | None, store: str | None, config: str | None) -> None:
    """Write the labelled connections with their model inputs to OUT ('-': stdout) as packetclip-feedback/1
    JSON lines (docs/feedback.md)."""
    try:
        start = None if since is None else parse_since(since)
    except FeedbackStoreError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    with _open(store, config) as opened:
        try:
            stream = sys.stdout if out == "-" else open(out, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise click.ClickException(f"{out}: cannot write the export ({exc.strerror or exc})") from None
        written = 0
        try:
            for row in opened.rows(start):
                stream.write(json.dumps(export_record(row), ensure_ascii=False) + "\n")
                written += 1
        except FeedbackStoreError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            if stream is not sys.stdout:
                stream.close()
    click.echo(f"{written} labelled connection(s) exported to {out}", err=True)
