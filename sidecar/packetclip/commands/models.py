"""`packetclip models`: the model lifecycle on a sensor — list, install, verify, show, activate, rollback, the
bundle signing keys (keygen, sign), and the one-time export of the optional text encoder.

Owns the command line only; the store's rules (verification before visibility, atomic activation, history) are
`packetclip.store`'s, signatures and keys `packetclip.signing`'s, the settings' precedence is
`packetclip.config`'s. `text-encoder` runs the factory's `packetclip-train text export` as a separate process:
the runtime never imports the factory (nor torch).

Exit codes (scripts and configuration management rely on them):

    0  done (also: installing an identical bundle again, activating the active one)
    1  store or settings problem (unwritable folder, bad config file, nothing to roll back to, an unusable key
       file, a signature required with no public key configured)
    2  usage error (click's; also: `sign` given an archive)
    3  bundle refused: a hash, the manifest or a parity fixture does not match, or its signature is missing where
       one is required, by a key not trusted, or does not match the manifest (the active bundle stays)
    4  no such bundle
    5  conflict: the same name and version is installed with other contents
    6  the text encoder cannot be exported here (the `train` extras are missing, or the export failed)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from packetclip.bundle import SIGNATURE_NAME, BundleError, load_bundle
from packetclip.commands.options import config_option
from packetclip.config import ConfigError, RuntimeConfig, load_config
from packetclip.signing import (
    SignaturePolicy,
    SigningKeyError,
    generate_key_pair,
    load_private_key,
    sign_bundle,
)
from packetclip.store import (
    EMBEDDED,
    BundleNotFound,
    InstallConflict,
    InstalledBundle,
    ModelStore,
    StoreError,
)
from packetclip.text_encoder import META_FILE, ONNX_FILE, TOKENIZER_FILE

log = logging.getLogger(__name__)

EXIT_STORE = 1
EXIT_REFUSED = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_TEXT_ENCODER = 6
FACTORY_COMMAND = "packetclip-train"
CONFIG_KEY = "packetclip.config"  # where the group leaves the resolved settings for its commands


class ModelsError(click.ClickException):
    """A store or settings problem; subclasses carry the other exit codes (see the module docstring)."""

    exit_code = EXIT_STORE


class BundleRefused(ModelsError):
    exit_code = EXIT_REFUSED


class NoSuchBundle(ModelsError):
    exit_code = EXIT_NOT_FOUND


class InstalledWithOtherContents(ModelsError):
    exit_code = EXIT_CONFLICT


class TextEncoderExportFailed(ModelsError):
    exit_code = EXIT_TEXT_ENCODER


def _failure(exc: Exception) -> ModelsError:
    """The command-line error (and exit code) of a store or bundle failure."""
    if isinstance(exc, BundleError):
        return BundleRefused(f"refused: {exc}")
    if isinstance(exc, BundleNotFound):
        return NoSuchBundle(str(exc))
    if isinstance(exc, InstallConflict):
        return InstalledWithOtherContents(str(exc))
    return ModelsError(str(exc))


def _store(ctx: click.Context) -> ModelStore:
    store = ctx.find_object(ModelStore)
    if store is None:  # only when a command is invoked outside the group
        raise ModelsError("no model store configured")
    return store


@click.group("models")
@click.option(
    "--store",
    "store_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model store folder (default: $PACKETCLIP_STORE, the config file, "
    "then ~/.local/share/packetclip/models).",
)
@config_option("its store, trusted keys and signature policy")
@click.pass_context
def models(ctx: click.Context, store_dir: Path | None, config: str | None) -> None:
    """Installed model bundles: which one classifies, and how to change it safely."""
    try:
        settings = load_config(config=config, store=store_dir)
    except ConfigError as exc:
        raise ModelsError(str(exc)) from exc
    log.info("model store %s (%s)", settings.store, settings.sources["store"])
    ctx.meta[CONFIG_KEY] = settings
    ctx.obj = ModelStore.from_settings(settings)


def _checking_signatures(store: ModelStore) -> ModelStore:
    """The store, once its trusted keys are read (an unusable key file, or a signature required without any key,
    is a settings problem: exit 1, before any bundle is looked at)."""
    try:
        keys = store.signatures.keys
    except SigningKeyError as exc:
        raise ModelsError(f"public key: {exc}") from exc
    if store.signatures.required and not keys:
        raise ModelsError(
            "a signature is required but no public key is configured (--public-key FILE, PACKETCLIP_PUBLIC_KEYS "
            "or public_keys in the config file)"
        )
    return store


LIST_HEADINGS = ("BUNDLE", "VERSION", "CREATED", "PATH")


def _table_lines(entries: list[InstalledBundle]) -> list[str]:
    """The heading and one line per entry, each column as wide as its widest cell (the active one marked `*`);
    an unreadable entry says why in place of its version, date and path."""
    rows: list[tuple[str, ...]] = []
    for entry in entries:
        if entry.problem:
            rows.append((entry.key, f"UNREADABLE: {entry.problem}"))
        else:
            version = f"{entry.name} {entry.version}" if entry.embedded else entry.version
            rows.append((entry.key, version, entry.created, str(entry.path)))
    # the last column is not padded, and an unreadable entry's reason runs on as its last column
    widths = [
        max(len(cells[column]) for cells in [LIST_HEADINGS, *rows] if len(cells) > column + 1)
        for column in range(len(LIST_HEADINGS) - 1)
    ]

    def line(marker: str, cells: tuple[str, ...]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths, strict=False)]
        return f"{marker} " + " ".join([*padded, cells[-1]])

    lines = [line(" ", LIST_HEADINGS)]
    for entry, cells in zip(entries, rows, strict=True):
        lines.append(line("*" if entry.active else " ", cells))
    return lines


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: store, active, bundles.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """Installed bundles and the embedded default; `*` marks the active one."""
    store = _store(ctx)
    entries = store.list()
    if as_json:
        active = next((e.key for e in entries if e.active), EMBEDDED)
        document = {"store": str(store.root), "active": active, "bundles": [e.to_dict() for e in entries]}
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"store {store.root}")
    for line in _table_lines(entries):
        click.echo(line)


@models.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--activate", is_flag=True, help="Activate it once installed.")
@click.option(
    "--require-signature",
    is_flag=True,
    help="Refuse it unless signed by a trusted key (default: require_signature in the config file, "
    "$PACKETCLIP_REQUIRE_SIGNATURE).",
)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A trusted public key (PEM); repeat for several. Replaces public_keys of the config file "
    "and $PACKETCLIP_PUBLIC_KEYS.",
)
@click.pass_context
def install(
    ctx: click.Context, source: Path, activate: bool, require_signature: bool, public_keys: tuple[Path, ...]
) -> None:
    """Install a bundle folder or .tar.gz (verified before it becomes visible, with its signature if signed)."""
    store = _store(ctx)
    if require_signature or public_keys:
        signatures = SignaturePolicy(
            public_keys or store.signatures.key_files, require_signature or store.signatures.required
        )
        store = ModelStore(store.root, signatures)
    _checking_signatures(store)
    try:
        result = store.install(source, activate=activate)
    except (BundleError, StoreError) as exc:
        raise _failure(exc) from exc
    entry = result.bundle
    what = "already installed (same hashes)" if result.already_installed else "installed"
    click.echo(f"{what}: {entry.key} -> {entry.path}")
    if activate:
        click.echo(f"active: {entry.key}")


@models.command()
@click.argument("reference", required=False)
@click.pass_context
def verify(ctx: click.Context, reference: str | None) -> None:
    """Check hashes, manifest and parity fixtures of a bundle (default: the active one).

    REFERENCE is an installed bundle (key, name or version), `embedded`, or a path to a bundle.
    """
    store = _checking_signatures(_store(ctx))
    try:
        bundle, differences = store.verify(reference)
        signature = store.check_signature(bundle)
    except (BundleError, StoreError) as exc:
        raise _failure(exc) from exc
    worst = ", ".join(f"{role} {difference:.1e}" for role, difference in differences.items())
    click.echo(
        f"ok: {bundle.name} {bundle.version} ({bundle.source}): {len(bundle.manifest['files'])} files "
        f"match their sha256; fixtures max |difference|: {worst}"
    )
    if signature is None:
        click.echo("signature: not checked (the embedded bundle comes with the installed package)")
    else:
        click.echo(f"signature: {signature.describe()}")


@models.command()
@click.argument("reference", required=False)
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object.")
@click.pass_context
def show(ctx: click.Context, reference: str | None, as_json: bool) -> None:
    """Summary of a bundle's manifest (default: the active one): classes, missions, metrics, data, sizes."""
    store = _store(ctx)
    try:
        summary = store.show(reference)
    except (BundleError, StoreError) as exc:
        raise _failure(exc) from exc
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for line in _summary_lines(summary):
        click.echo(line)


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    card = summary["data_card"]
    lines = [
        f"bundle    {summary['name']} {summary['version']}{'  (active)' if summary['active'] else ''}",
        f"path      {summary['path']}",
        f"created   {summary['created']}",
        f"coarse    {', '.join(summary['classes']['coarse'])}",
        f"fine      {', '.join(summary['classes']['fine'])}",
        f"missions  {', '.join(summary['missions'])}",
    ]
    for role, spec in summary["models"].items():
        flops = spec["flops_per_packet"]
        cost = f"{flops} FLOPs per packet" if flops is not None else "FLOPs not recorded"
        lines.append(f"model     {role}: {spec['file']}, {spec['parameters']} parameters, {cost}")
    metrics = summary["metrics"]
    lines.append(
        "metrics   " + (", ".join(f"{k} {_short(v)}" for k, v in metrics.items()) or "none recorded")
    )
    totals = ", ".join(f"{split} {count}" for split, count in card.get("total", {}).items())
    lines.append(f"data      {card.get('name') or '?'}: {totals or 'no counts'}")
    for coarse, splits in card.get("coarse", {}).items():
        lines.append(
            f"          {coarse}: " + ", ".join(f"{split} {count}" for split, count in splits.items())
        )
    lines.append(
        f"size      {summary['sizes']['total_bytes'] / 1e6:.2f} MB in {len(summary['sizes']['files'])} files"
    )
    return lines


def _short(value: object) -> str:
    if isinstance(value, float):
        # three decimals (0.9996 is 1.000, not 1); a small rate keeps three significant digits instead
        return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:.3f}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))[:80]
    return str(value)


@models.command()
@click.argument("reference")
@click.pass_context
def activate(ctx: click.Context, reference: str) -> None:
    """Make an installed bundle (or `embedded`) the active one, after verifying it."""
    store = _checking_signatures(_store(ctx))
    try:
        entry = store.activate(reference)
    except (BundleError, StoreError) as exc:
        raise _failure(exc) from exc
    click.echo(f"active: {entry.key} ({entry.path})")


@models.command()
@click.pass_context
def rollback(ctx: click.Context) -> None:
    """Re-activate the bundle that was active before the current one."""
    store = _checking_signatures(_store(ctx))
    try:
        entry = store.rollback()
    except (BundleError, StoreError) as exc:
        raise _failure(exc) from exc
    click.echo(f"active: {entry.key} ({entry.path})")


@models.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the key pair (created if absent; existing key files are never overwritten).",
)
def keygen(out: Path) -> None:
    """Make an Ed25519 key pair for signing bundles: the private key (0600) and the public key, both PEM."""
    try:
        private, public, identity = generate_key_pair(out)
    except SigningKeyError as exc:
        raise ModelsError(str(exc)) from exc
    click.echo(f"private key {private} (keep it off the sensors)")
    click.echo(f"public key  {public} (give it to the sensors: public_keys in the config file)")
    click.echo(f"key id      {identity}")


@models.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The private key (PEM, from `packetclip models keygen`).",
)
def sign(bundle: Path, key_file: Path) -> None:
    """Sign a bundle folder: verify its hashes, then write manifest.sig beside its manifest (replacing an earlier
    signature). An archive is signed as the folder it is made from, before archiving."""
    if not bundle.is_dir():
        raise click.BadParameter(
            f"{bundle} is not a bundle folder; sign the folder, then archive it (tar -czf)",
            param_hint="BUNDLE",
        )
    try:
        private = load_private_key(key_file)
    except SigningKeyError as exc:
        raise ModelsError(str(exc)) from exc
    try:
        opened = load_bundle(bundle, verify=True)
        signature = sign_bundle(opened.root, private)
    except BundleError as exc:
        raise _failure(exc) from exc
    except OSError as exc:
        raise ModelsError(f"bundle {bundle}: cannot write {SIGNATURE_NAME} ({exc})") from exc
    click.echo(
        f"signed: {opened.name} {opened.version} ({bundle / SIGNATURE_NAME}) with key {signature.key_id}"
    )


def factory_command() -> list[str] | None:
    """The factory's console script, if the `train` extras are installed: beside this Python first (a virtual
    environment need not be on PATH), then on PATH."""
    beside = Path(sys.executable).parent / FACTORY_COMMAND
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which(FACTORY_COMMAND)
    return [found] if found else None


def _text_encoder_present(directory: Path) -> bool:
    return all((directory / name).is_file() for name in (ONNX_FILE, TOKENIZER_FILE, META_FILE))


@models.command("text-encoder")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write it (default: the text_encoder setting, <store>/text-encoder unless set).",
)
@click.option("--force", is_flag=True, help="Export again even if an export is there.")
@click.pass_context
def text_encoder(ctx: click.Context, out: Path | None, force: bool) -> None:
    """Export all-MiniLM-L6-v2 to ONNX once (~90 MB), for user-written missions; needs the `train` extras."""
    config: RuntimeConfig | None = ctx.meta.get(CONFIG_KEY)
    directory = out or (
        config.text_encoder if config and config.text_encoder else _store(ctx).root / "text-encoder"
    )
    if _text_encoder_present(directory) and not force:
        click.echo(f"text encoder already exported at {directory} (use --force to export again)")
        return
    command = factory_command()
    if command is None:
        raise TextEncoderExportFailed(
            f"exporting the text encoder needs the factory ({FACTORY_COMMAND}) and its train extras: "
            "pip install 'packetclip[train]' (for this export only: scoring missions afterwards needs only "
            "'packetclip[text]')"
        )
    argv = [*command, "text", "export", "--out", str(directory)]
    click.echo(f"exporting the text encoder to {directory} (about a minute) ...", err=True)
    log.info("running %s", " ".join(argv))
    try:
        finished = subprocess.run(argv, check=False)
    except OSError as exc:
        raise TextEncoderExportFailed(f"cannot run {argv[0]}: {exc}") from exc
    if finished.returncode != 0:
        raise TextEncoderExportFailed(
            f"{' '.join(argv)} failed with exit code {finished.returncode} (its messages are above)"
        )
    if not _text_encoder_present(directory):
        raise TextEncoderExportFailed(f"{' '.join(argv)} finished but {directory} holds no text encoder")
    click.echo(f"text encoder exported to {directory}")
