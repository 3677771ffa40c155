"""`packetclip serve`: the live sidecar for Zeek (Broker WebSocket API).

Owns the command line: resolving settings (flags > config file's `[serve]` table and runtime keys > defaults),
choosing the bundle (`--model`, else the store's active bundle with hot reload on activation, else the embedded
one), the allowlist and user missions the settings name, the connection's TLS files and token (read before the model
loads, so that a bad one is a one-line error), the log format, signal handling (SIGINT/SIGTERM stop the loop, which drains before exiting). The loop
itself is `packetclip.zeek.service`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from packetclip.bundle import BundleError, load_bundle
from packetclip.commands.options import (
    allowlist_option,
    batch_size_option,
    config_option,
    keep_inputs_option,
    live_model_option,
    log_format_option,
    missions_options,
    threads_option,
)
from packetclip.config import ConfigError, find_config_file, load_config
from packetclip.engine import Engine
from packetclip.logs import announce, use_json_logs
from packetclip.pipeline import sensor_options
from packetclip.store import ActiveModelWatcher, ModelStore
from packetclip.zeek.client import Credentials, load_credentials
from packetclip.zeek.metrics import MetricsPortError
from packetclip.zeek.service import Sidecar
from packetclip.zeek.settings import ServeSettings, serve_settings

log = logging.getLogger(__name__)


def open_serving_engine(
    model: str | None,
    config: str | None,
    threads: int | None,
    batch_size: int,
    shards: int = 1,
    missions: str | None = None,
    text_encoder: str | None = None,
    allowlist: str | None = None,
    keep_inputs: str | None = None,
) -> tuple[Engine, ActiveModelWatcher | None]:
    """The engine, and the store watcher when the bundle comes from the store (a fixed --model never reloads);
    with a missions folder (flag, PACKETCLIP_MISSIONS or the config file) its user-written missions are scored,
    with an allowlist (flag, PACKETCLIP_ALLOWLIST or the config file) the verdicts it matches are marked allowed,
    with a `keep_inputs` store (flag, PACKETCLIP_KEEP_INPUTS or the config file) every verdict's input is kept."""
    settings = load_config(
        config=config,
        threads=threads,
        batch_size=batch_size,
        missions=missions,
        text_encoder=text_encoder,
        allowlist=allowlist,
        keep_inputs=keep_inputs,
    )
    watcher = None
    if model:
        path = Path(model)
    else:
        watcher = ActiveModelWatcher(ModelStore.from_settings(settings))
        path = watcher.active_bundle_path()
    engine = Engine(
        load_bundle(path),
        threads=settings.threads,
        batch_size=batch_size,
        shards=shards,
        **sensor_options(settings),
    )
    return engine, watcher


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)


async def serve_forever(
    settings: ServeSettings,
    engine: Engine,
    watcher: ActiveModelWatcher | None,
    credentials: Credentials | None = None,
) -> Sidecar:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    sidecar = Sidecar(settings, engine, watcher, credentials=credentials)
    await sidecar.run(stop)
    return sidecar


@click.command("serve")
@click.option(
    "--zeek",
    "zeek",
    default=None,
    metavar="URL",
    help="Zeek's WebSocket endpoint (default ws://127.0.0.1:27759/v1/messages/json).",
)
@live_model_option
@click.option(
    "--shard",
    type=click.IntRange(min=0),
    default=None,
    help="Subscribe to packetclip/request/N/ instead of the unsharded topic.",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=None,
    help="How many sidecars share the requests (PacketCLIP::num_shards); scales responder counts.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.",
)
@batch_size_option
@click.option(
    "--max-queue",
    type=click.IntRange(min=1),
    default=None,
    help="Requests waiting for the engine; the newest above it is answered 'error' (default 10000).",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="The Zeek scripts' PacketCLIP::max_wait, for first-packet order (default 5, the scripts' "
    "default and the default recipe's featurizer window).",
)
@click.option("--name", default=None, help="This sidecar's name (X-Application-Name and hello).")
@threads_option
@log_format_option("serve")
@click.option(
    "--tls-ca",
    default=None,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="wss:// only: trust these CAs alone for Zeek's certificate (default: the system's).",
)
@click.option(
    "--tls-cert",
    default=None,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="wss:// only: client certificate for mutual TLS (with --tls-key).",
)
@click.option(
    "--tls-key",
    default=None,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The client certificate's private key (unencrypted).",
)
@click.option(
    "--token-file",
    default=None,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Send the token in FILE as 'Authorization: Bearer <token>' on the handshake.",
)
@config_option("runtime keys and a [serve] table")
@missions_options
@allowlist_option
@keep_inputs_option
def serve(
    zeek: str | None,
    model: str | None,
    shard: int | None,
    shards: int | None,
    metrics_port: int | None,
    batch_size: int | None,
    max_queue: int | None,
    max_wait: float | None,
    name: str | None,
    threads: int | None,
    log_format: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    token_file: str | None,
    config: str | None,
    missions: str | None,
    text_encoder: str | None,
    allowlist: str | None,
    keep_inputs: str | None,
) -> None:
    """Classify the connections Zeek publishes and send the verdicts back (runs until SIGINT/SIGTERM)."""
    try:
        config_file = find_config_file(config)
        settings = serve_settings(
            config_file,
            zeek=zeek,
            shard=shard,
            shards=shards,
            metrics_port=metrics_port,
            max_queue=max_queue,
            max_wait=max_wait,
            name=name,
            log_format=log_format,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            token_file=token_file,
        )
        # read now: a missing or unusable file stops the command before the model loads
        credentials = load_credentials(
            settings.tls_ca, settings.tls_cert, settings.tls_key, settings.token_file
        )
        runtime_batch = load_config(config=config, batch_size=batch_size).batch_size
        settings = settings.updated(batch_size=runtime_batch)
        if settings.log_format == "json":
            use_json_logs()
        engine, watcher = open_serving_engine(
            model,
            config,
            threads,
            settings.batch_size,
            settings.shards,
            missions,
            text_encoder,
            allowlist,
            keep_inputs,
        )
    except (ConfigError, BundleError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    where = f"shard {settings.shard}" if settings.shard is not None else "the unsharded topic"
    started = f"serving model {engine.model_version} for {settings.zeek} on {where}"
    if settings.log_format == "json":  # stderr is all JSON lines then
        announce(log, started, model=engine.model_version, zeek=settings.zeek, shard=settings.shard)
    else:
        click.echo(started, err=True)
    try:
        sidecar = asyncio.run(serve_forever(settings, engine, watcher, credentials))
    except MetricsPortError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.close()
    report_totals(sidecar, settings, allowed=engine.allowlist is not None)


def report_totals(sidecar: Sidecar, settings: ServeSettings, allowed: bool) -> None:
    """The run's closing totals on stderr: one line of counts, or with JSON logs one log line carrying them
    (`allowed` only when an allowlist was in force)."""
    metrics = sidecar.metrics
    totals = {
        "requests": metrics.requests,
        "verdicts": sum(metrics.verdicts.values()),
        **({"allowed": metrics.allowed} if allowed else {}),
        "errors": sum(metrics.errors.values()),
        "dropped": sum(metrics.dropped.values()),
    }
    if settings.log_format == "json":
        announce(log, "serve finished", **totals)
    else:
        click.echo(", ".join(f"{count} {name}" for name, count in totals.items()), err=True)
