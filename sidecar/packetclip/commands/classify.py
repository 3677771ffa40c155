"""`packetclip classify`: verdicts for every connection of one or more captures.

Owns the command line and its output: the options, the engine opened from them (`packetclip.pipeline.open_engine`:
`--model`, else the store's active bundle, else the embedded one), the records on stdout or `-o FILE` (never mixed
with the summary), the progress bar on a terminal, and the summary on stderr. The stream from captures to verdicts
itself — one connection table per capture, first-packet order, micro-batches, bounded memory — is
`packetclip.pipeline.classify_captures`.

A capture that cannot be read (missing, empty, not a capture, a folder) is reported on stderr the moment it
fails, counted in the summary and skipped; the other captures are still classified in full, and the command then
exits 1 (0 when every capture was read, 2 for a usage error).

It does not parse frames (`packetclip.featurizer`), run models (`packetclip.engine`), stream captures
(`packetclip.pipeline`) or format records (`packetclip.output`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import click

from packetclip.allowlist import AllowlistFile
from packetclip.commands.options import (
    allowlist_option,
    batch_size_option,
    keep_inputs_option,
    missions_options,
    model_option,
    output_option,
    setup_errors,
    threads_option,
)
from packetclip.output import FORMATS, open_writer
from packetclip.pipeline import StreamSummary, classify_captures, open_engine


def print_summary(
    summary: StreamSummary, model: str, out: TextIO | None = None, allowlist: AllowlistFile | None = None
) -> None:
    """Connections per label, malformed frames by reason, time and rates (and with an allowlist, the verdicts it
    marked allowed), to stderr."""
    stats = summary.stats
    seconds = max(summary.seconds, 1e-9)

    def say(text: str) -> None:
        click.echo(text, file=out, err=out is None)

    say(
        f"{summary.connections} connections in {summary.seconds:.2f} s ({stats.frames / seconds:,.0f} packets/s, "
        f"{summary.connections / seconds:,.0f} connections/s), model {model}"
    )
    for label, count in sorted(summary.labels.items(), key=lambda item: (-item[1], item[0])):
        say(f"  {label}: {count}")
    if allowlist is not None:
        expired = allowlist.counts.expired
        say(
            f"allowed: {allowlist.counts.allowed} by {allowlist.path} ({len(allowlist.allowlist.entries)} entries "
            f"in force{f', {expired} expired' if expired else ''})"
        )
    say(
        f"frames: {stats.frames}  parsed: {stats.parsed}  non-IP: {stats.non_ip}  truncated: {stats.truncated}  "
        f"malformed: {stats.malformed_total}  skipped: {stats.skipped_total}"
    )
    if summary.evicted:
        say(
            f"{summary.evicted} connections ended early, idle longest first, to stay within the open-connection limit"
        )
    if summary.reordered_forced:
        say(
            f"{summary.reordered_forced} connections classified before an earlier one still open "
            "(more were waiting for it than the reorder bound)"
        )
    for title, counts in (
        ("malformed", stats.malformed),
        ("skipped", stats.skipped),
        ("file errors", stats.file_errors),
    ):
        for reason, count in sorted(counts.items(), key=lambda item: -item[1]):
            say(f"  {title}: {reason}: {count}")
    if summary.file_errors:
        # each was reported as it failed (report_file_error); the summary counts them
        say(f"unreadable captures: {len(summary.file_errors)} of {summary.captures} (reported above)")


def _total_bytes(paths: Iterable[str]) -> int:
    total = 0
    for path in paths:
        try:
            total += Path(path).stat().st_size
        except OSError:
            continue  # reported when the file is read
    return total


@click.command("classify")
@click.argument("pcaps", nargs=-1, required=True, type=click.Path(dir_okay=True))
@model_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="zeek",
    show_default=True,
    help="zeek: Zeek's ASCII log layout; json: one object per line with per-class scores.",
)
@output_option
@batch_size_option
@threads_option
@click.option(
    "--max-open",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Open connections followed at most; above it the one idle longest ends with what it saw, "
    "counted (default 1,000,000; about 2.6 KB each under a spoofed SYN flood).",
)
@missions_options
@allowlist_option
@keep_inputs_option
def classify(
    pcaps: tuple[str, ...],
    model: str | None,
    fmt: str,
    output: str | None,
    batch_size: int | None,
    threads: int | None,
    max_open: int | None,
    missions: str | None,
    text_encoder: str | None,
    allowlist: str | None,
    keep_inputs: str | None,
) -> None:
    """Print one verdict record per connection of PCAP... (pcap, pcapng, gzip'd).

    A capture that cannot be read is reported on stderr and skipped, the others are classified in full, and the
    exit status is 1 (0 when every capture was read).
    """
    with setup_errors():
        engine = open_engine(model, threads, batch_size, missions, text_encoder, allowlist, keep_inputs)
    stream = sys.stdout if output is None else open(output, "w", encoding="utf-8")  # noqa: SIM115
    writer = open_writer(fmt, stream)
    try:
        if _stderr_is_terminal():
            with click.progressbar(length=_total_bytes(pcaps), label="classifying", file=sys.stderr) as bar:
                summary = classify_captures(
                    engine,
                    pcaps,
                    writer.write,
                    progress=bar.update,
                    on_file_error=lambda message: report_file_error(message, below_progress_bar=True),
                    max_open=max_open,
                )
        else:
            summary = classify_captures(
                engine, pcaps, writer.write, on_file_error=report_file_error, max_open=max_open
            )
    finally:
        writer.close()
        if output is not None:
            stream.close()
        engine.close()
    print_summary(summary, engine.model_version, allowlist=engine.allowlist)
    if engine.inputs is not None:
        click.echo(f"inputs kept: {engine.inputs.describe()}", err=True)
    if summary.file_errors:
        raise click.exceptions.Exit(1)


def report_file_error(message: str, below_progress_bar: bool = False) -> None:
    """An unreadable capture, on stderr as it fails: a script or an operator sees it before the run ends."""
    # the progress bar redraws its line in place; the error takes a line of its own under it
    prefix = "\n" if below_progress_bar else ""
    click.echo(f"{prefix}error: {message}", err=True)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
