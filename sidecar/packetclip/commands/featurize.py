"""`packetclip featurize`: connections of captures as conn.log-like records, for inspection and pipelines.

Owns the command line only; the work is `packetclip.featurizer.featurize_pcap`. Records go to stdout (or -o FILE),
one per connection in order of connection end; the parse summary, malformed frames by reason included, goes to
stderr so that it never mixes with the records. A capture that cannot be read is reported on stderr as it fails
and skipped, the others still give their records, and the command exits 1 (0 when every capture was read).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

import click

from packetclip.commands.options import output_option
from packetclip.featurizer import FACT_NAMES, FeaturizerConfig, ParseStats, PcapError, featurize_pcap

log = logging.getLogger(__name__)

_TSV_COLUMNS = (
    "uid",
    "ts",
    "proto",
    "orig_h",
    "orig_p",
    "resp_h",
    "resp_p",
    "ip_version",
    "vlan",
    "community_id",
    *FACT_NAMES,
)


def _tsv_value(value: object) -> str:
    if value is None or value == "":
        return "-"  # Zeek's unset marker
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _write_records(
    pcaps: tuple[str, ...],
    config: FeaturizerConfig,
    stats: ParseStats,
    fmt: str,
    out: TextIO,
    errors: list[PcapError],
) -> int:
    count = 0
    if fmt == "tsv":
        out.write("\t".join(_TSV_COLUMNS) + "\n")

    def skip(exc: PcapError) -> None:
        errors.append(exc)
        click.echo(f"error: {exc}", err=True)

    for conn in featurize_pcap(pcaps, config, stats, on_file_error=skip):
        record = conn.record()
        if fmt == "tsv":
            out.write("\t".join(_tsv_value(record[name]) for name in _TSV_COLUMNS) + "\n")
        else:
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
        count += 1
    return count


@click.command("featurize")
@click.argument("pcaps", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "tsv"]),
    default="json",
    show_default=True,
    help="json: one object per line; tsv: a header line, then Zeek-style columns.",
)
@output_option
@click.option(
    "--max-packets",
    type=click.IntRange(min=1),
    default=FeaturizerConfig.max_packets,
    show_default=True,
    help="Packets kept per connection.",
)
@click.option(
    "--snaplen",
    type=click.IntRange(min=20),
    default=FeaturizerConfig.snaplen,
    show_default=True,
    help="Bytes kept per packet, from the IP header on.",
)
def featurize(pcaps: tuple[str, ...], fmt: str, output: str | None, max_packets: int, snaplen: int) -> None:
    """Print one record per connection of PCAP... (pcap, pcapng, gzip'd) with its facts and Community ID.

    A capture that cannot be read is reported on stderr and skipped, and the exit status is 1 (0 when every
    capture was read).
    """
    config = FeaturizerConfig(max_packets=max_packets, snaplen=snaplen)
    stats = ParseStats()
    errors: list[PcapError] = []
    if output is None:
        count = _write_records(pcaps, config, stats, fmt, sys.stdout, errors)
    else:
        with open(output, "w", encoding="utf-8") as out:
            count = _write_records(pcaps, config, stats, fmt, out, errors)
    _print_summary(count, stats)
    if errors:
        click.echo(f"unreadable captures: {len(errors)} of {len(pcaps)} (reported above)", err=True)
        raise click.exceptions.Exit(1)


def _print_summary(connections: int, stats: ParseStats) -> None:
    click.echo(
        f"connections: {connections}  frames: {stats.frames}  parsed: {stats.parsed}  non-IP: {stats.non_ip}  "
        f"truncated: {stats.truncated}  malformed: {stats.malformed_total}  skipped: {stats.skipped_total}",
        err=True,
    )
    for title, counts in (
        ("malformed", stats.malformed),
        ("skipped", stats.skipped),
        ("file errors", stats.file_errors),
    ):
        for reason, count in sorted(counts.items(), key=lambda item: -item[1]):
            click.echo(f"  {title}: {reason}: {count}", err=True)
