"""`packetclip suricata run`: the live sidecar for a stock Suricata 7.

Owns the command line: where eve comes from (`--eve FILE`, followed across rotation, or `--eve-socket PATH`, a
socket Suricata's `unix_stream` eve output connects to), where verdict records go (`--verdicts FILE` or
`--verdicts-socket PATH`, stdout by default), whether flagged originators go back into Suricata
(`--control-socket PATH`, Suricata's unix command socket), the engine settings shared with `classify` (the
allowlist among them: allowed verdicts flag nothing), the log format (`--log-format`, else the config file's
`[suricata]` table: `packetclip.suricata.settings`), stopping cleanly on SIGTERM/SIGINT (open flows are classified
first), and the statistics printed as JSON on stderr at exit (indented, or with JSON logs one log line that carries
them as its field `stats`, so that stderr holds JSON lines only).
The mechanism and its measurements are described in `packetclip.suricata`.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import click

from packetclip.commands.options import (
    allowlist_option,
    batch_size_option,
    keep_inputs_option,
    live_model_option,
    log_format_option,
    missions_options,
    setup_errors,
    threads_option,
)
from packetclip.config import ConfigError, find_config_file, load_config
from packetclip.logs import announce, use_json_logs
from packetclip.pipeline import open_engine
from packetclip.store import ActiveModelWatcher, ModelStore
from packetclip.suricata.control import SuricataControl
from packetclip.suricata.datasets import DEFAULT_SET_V4, DEFAULT_SET_V6, DatasetFeedback
from packetclip.suricata.follow import EveFileFollower, EveSocketListener, EveSource
from packetclip.suricata.settings import run_settings
from packetclip.suricata.sidecar import SidecarSettings, SuricataSidecar
from packetclip.suricata.verdicts import FileSink, RecordSink, SocketSink

log = logging.getLogger(__name__)


@click.group("suricata")
def suricata() -> None:
    """Verdicts for flows a stock Suricata 7 sees (eve packets in, eve-style verdicts and datasets out)."""


@suricata.command("run")
@click.option(
    "--eve",
    "eve_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Suricata's eve.json to follow (rotation and restarts are followed).",
)
@click.option(
    "--eve-socket",
    type=click.Path(dir_okay=False),
    default=None,
    help="Listen here for Suricata's unix_stream eve output.",
)
@click.option(
    "--from-end",
    is_flag=True,
    help="Skip what --eve already holds; read only what Suricata appends from now on.",
)
@click.option(
    "--verdicts",
    "verdicts_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append eve-style verdict records to this file (default: stdout).",
)
@click.option(
    "--verdicts-socket",
    type=click.Path(dir_okay=False),
    default=None,
    help="Send eve-style verdict records to this listening unix socket.",
)
@click.option(
    "--control-socket",
    type=click.Path(dir_okay=False),
    default=None,
    help="Suricata's unix command socket: flagged originators go into its datasets.",
)
@click.option(
    "--flag-threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="A non-benign verdict flags its originator at this score or above.",
)
@click.option(
    "--flag-ttl",
    type=click.FloatRange(min=1.0),
    default=3600.0,
    show_default=True,
    help="Seconds an originator stays in the dataset after its latest flagging verdict.",
)
@click.option(
    "--dataset-v4", default=DEFAULT_SET_V4, show_default=True, help="Dataset of flagged IPv4 sources."
)
@click.option(
    "--dataset-v6", default=DEFAULT_SET_V6, show_default=True, help="Dataset of flagged IPv6 sources."
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0.01),
    default=None,
    metavar="SECONDS",
    help="Seconds after a flow's first packet before it is classified with the packets it has "
    "(default: the bundle's featurizer window, else 2).",
)
@click.option(
    "--sensor", default="suricata", show_default=True, help="Sensor name: the key of originator histories."
)
@click.option(
    "--stop-after-idle",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Exit once the eve stream has been idle this many seconds (a finished run).",
)
@live_model_option
@batch_size_option
@threads_option
@log_format_option("suricata")
@missions_options
@allowlist_option
@keep_inputs_option
def run(
    eve_file: str | None,
    eve_socket: str | None,
    from_end: bool,
    verdicts_file: str | None,
    verdicts_socket: str | None,
    control_socket: str | None,
    flag_threshold: float,
    flag_ttl: float,
    dataset_v4: str,
    dataset_v6: str,
    max_wait: float | None,
    sensor: str,
    stop_after_idle: float | None,
    model: str | None,
    batch_size: int | None,
    threads: int | None,
    log_format: str | None,
    missions: str | None,
    text_encoder: str | None,
    allowlist: str | None,
    keep_inputs: str | None,
) -> None:
    """Classify the flows Suricata samples (rules/suricata/packetclip-sampling.rules) as it sees them."""
    if (eve_file is None) == (eve_socket is None):
        raise click.UsageError("give exactly one of --eve and --eve-socket")
    if verdicts_file is not None and verdicts_socket is not None:
        raise click.UsageError("give at most one of --verdicts and --verdicts-socket")
    try:
        settings = run_settings(find_config_file(), log_format=log_format)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if settings.log_format == "json":
        use_json_logs()
    with setup_errors():
        engine = open_engine(model, threads, batch_size, missions, text_encoder, allowlist, keep_inputs)
    source: EveSource = (
        EveFileFollower(eve_file, from_start=not from_end)
        if eve_file is not None
        else EveSocketListener(str(eve_socket))
    )
    sink: RecordSink = (
        SocketSink(verdicts_socket)
        if verdicts_socket is not None
        else FileSink(verdicts_file if verdicts_file is not None else sys.stdout)
    )
    feedback = None
    if control_socket is not None:
        feedback = DatasetFeedback(
            SuricataControl(control_socket), flag_threshold, flag_ttl, dataset_v4, dataset_v6
        )
    sidecar = SuricataSidecar(
        engine,
        source,
        sink,
        feedback,
        SidecarSettings(sensor=sensor, max_wait=max_wait),
        watcher=None if model else _watcher(),
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        sidecar.run(stop, stop_after_idle)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if feedback is not None:
            feedback.control.close()
        engine.close()
        stats = sidecar.stats()
        if settings.log_format == "json":
            announce(log, "suricata run finished", stats=stats)
        else:
            click.echo(json.dumps(stats, indent=1), err=True)


def _watcher() -> ActiveModelWatcher | None:
    """Watches the store's activation so `packetclip models activate` reaches a running sidecar."""
    try:
        return ActiveModelWatcher(ModelStore.from_settings(load_config()))
    except (ConfigError, OSError) as exc:
        log.warning("model store not watched: %s", exc)
        return None
