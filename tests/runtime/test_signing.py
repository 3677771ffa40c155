"""Bundle signatures: `packetclip models keygen` and `sign` make a signature that `models install
--require-signature` accepts, and the install refuses an unsigned bundle, a manifest changed by one byte after
signing and a signature by a key it does not trust; a signed archive installs with its signature; the settings
`public_keys` and `require_signature` come from the config file and the environment, and when a signature is
required, activation and every command that loads the active bundle (classify here) refuse an unsigned installed
bundle, while the bundle embedded in the package is exempt.

The bundles are copies of the embedded default bundle under other versions: real models, so install runs its
parity fixtures as it does on a sensor.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from packetclip import config as config_module
from packetclip.bundle import SIGNATURE_NAME, default_bundle_path, load_bundle
from packetclip.commands.classify import classify
from packetclip.commands.models import models
from packetclip.config import ConfigError, load_config
from packetclip.signing import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    SignatureError,
    SignaturePolicy,
    load_public_key,
    read_signature,
)
from packetclip.store import ModelStore

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "lab-quick" / "capture.pcap"


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the machine: every variable unset, XDG folders and /etc inside tmp_path."""
    for variable in [*config_module.ENVIRONMENT.values(), config_module.CONFIG_ENV]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PACKETCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", tmp_path / "etc" / "packetclip" / "config.toml")


def bundle_copy(folder: Path, version: str) -> Path:
    """The embedded bundle under another version (the manifest is the one file its hashes do not cover)."""
    copy = shutil.copytree(default_bundle_path(), folder)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["version"] = version
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return copy


def run(store: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(models, ["--store", str(store), *args], catch_exceptions=False)


def keygen(folder: Path) -> tuple[Path, Path]:
    result = run(folder / "unused-store", "keygen", "--out", str(folder))
    assert result.exit_code == 0, result.output
    return folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return keygen(tmp_path / "keys")


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    bundle = bundle_copy(tmp_path / "signed", "2030.01.01-1")
    result = run(tmp_path / "unused-store", "sign", str(bundle), "--key", str(keys[0]))
    assert result.exit_code == 0, result.output
    return bundle


def require(store: Path, bundle: Path, public: Path) -> Result:
    return run(store, "install", str(bundle), "--require-signature", "--public-key", str(public))


def key_id(public: Path) -> str:
    return load_public_key(public).key_id


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = private.read_bytes()
    again = run(tmp_path / "unused-store", "keygen", "--out", str(private.parent))
    assert again.exit_code == 1 and "already exists" in again.output
    assert private.read_bytes() == before


def test_a_signed_bundle_installs_when_a_signature_is_required(
    tmp_path: Path, keys: tuple[Path, Path], signed: Path
) -> None:
    """The signature names the key by its id, travels into the store as a plain 0644 file, and `verify` reports
    it verified against the configured key."""
    store = tmp_path / "store"
    signature = read_signature(signed)
    assert signature is not None and signature.key_id == key_id(keys[1])
    installed = require(store, signed, keys[1])
    assert installed.exit_code == 0, installed.output
    copy = store / "bundles" / "packetclip-default-2030.01.01-1"
    assert (copy / SIGNATURE_NAME).read_bytes() == (signed / SIGNATURE_NAME).read_bytes()
    assert stat.S_IMODE((copy / SIGNATURE_NAME).stat().st_mode) == 0o644
    verified = run(store, "verify", str(copy), env={"PACKETCLIP_PUBLIC_KEYS": str(keys[1])})
    assert verified.exit_code == 0, verified.output
    assert f"signature: signed by key {key_id(keys[1])} ({keys[1]}), signature verified" in verified.output
    untrusted = run(store, "verify", str(copy))
    assert untrusted.exit_code == 0 and "not among the trusted public keys" in untrusted.output


def test_an_unsigned_bundle_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    store = tmp_path / "store"
    unsigned = bundle_copy(tmp_path / "unsigned", "2030.01.01-2")
    refused = require(store, unsigned, keys[1])
    assert refused.exit_code == 3 and "unsigned, and a signature is required" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert not (store / "bundles" / "packetclip-default-2030.01.01-2").exists()
    assert run(store, "install", str(unsigned)).exit_code == 0  # unless a signature is required


def test_a_manifest_changed_by_one_byte_after_signing_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], signed: Path
) -> None:
    """The manifest still parses and its hashes still match every file: only the signature can tell. A signature
    by a trusted key must verify even where none is required."""
    store = tmp_path / "store"
    manifest = (signed / "manifest.json").read_bytes()
    at = manifest.index(b'"2030.01.01-1"') + len(b'"2030.01.01-')
    (signed / "manifest.json").write_bytes(manifest[:at] + b"7" + manifest[at + 1 :])
    load_bundle(signed, verify=True)  # a consistent bundle by its own hashes
    refused = require(store, signed, keys[1])
    assert refused.exit_code == 3 and "does not match manifest.json" in refused.output, refused.output
    trusted = run(store, "install", str(signed), "--public-key", str(keys[1]))
    assert trusted.exit_code == 3 and "does not match manifest.json" in trusted.output
    assert not (store / "bundles").exists() or not any((store / "bundles").iterdir())


def test_a_signature_by_another_key_is_refused(tmp_path: Path, keys: tuple[Path, Path], signed: Path) -> None:
    _, other_public = keygen(tmp_path / "other-keys")
    refused = require(tmp_path / "store", signed, other_public)
    assert refused.exit_code == 3
    assert f"signed by key {key_id(keys[1])}, which is not among the trusted public keys" in refused.output
    assert key_id(other_public) in refused.output
    # a trusted key among several is enough
    both = run(
        tmp_path / "store",
        "install",
        str(signed),
        "--require-signature",
        "--public-key",
        str(other_public),
        "--public-key",
        str(keys[1]),
    )
    assert both.exit_code == 0, both.output


def test_a_signed_archive_installs_with_its_signature(
    tmp_path: Path, keys: tuple[Path, Path], signed: Path
) -> None:
    archive = tmp_path / "signed.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(signed, arcname="packetclip-default-2030.01.01-1")
    refused = run(tmp_path / "unused-store", "sign", str(archive), "--key", str(keys[0]))
    assert refused.exit_code == 2 and "sign the folder, then archive it" in refused.output
    store = tmp_path / "store"
    installed = require(store, archive, keys[1])
    assert installed.exit_code == 0, installed.output
    copy = store / "bundles" / "packetclip-default-2030.01.01-1"
    assert (copy / SIGNATURE_NAME).read_bytes() == (signed / SIGNATURE_NAME).read_bytes()
    ModelStore(store, SignaturePolicy((keys[1],), required=True)).verify(str(copy))


def test_installing_a_signed_copy_again_signs_the_installed_bundle(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    store = tmp_path / "store"
    bundle = bundle_copy(tmp_path / "later", "2030.01.01-3")
    assert run(store, "install", str(bundle)).exit_code == 0
    assert require(store, bundle, keys[1]).exit_code == 3  # installed, unsigned, and still unsigned
    assert run(store, "sign", str(bundle), "--key", str(keys[0])).exit_code == 0
    again = require(store, bundle, keys[1])
    assert again.exit_code == 0 and again.output.startswith("already installed"), again.output
    copy = store / "bundles" / "packetclip-default-2030.01.01-3"
    assert (copy / SIGNATURE_NAME).read_bytes() == (bundle / SIGNATURE_NAME).read_bytes()
    assert sorted(p.name for p in (store / ".staging").iterdir()) == []


def test_public_keys_and_require_signature_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_config().public_keys, load_config().require_signature) == ((), False)
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('public_keys = ["keys/a.pem", "/abs/b.pem"]\nrequire_signature = true\n')
    settings = load_config(config=config)
    assert settings.public_keys == (config.parent / "keys" / "a.pem", Path("/abs/b.pem"))
    assert settings.require_signature is True and settings.sources["public_keys"] == str(config)
    monkeypatch.setenv("PACKETCLIP_PUBLIC_KEYS", os.pathsep.join(["/env/a.pem", "", "/env/b.pem"]))
    monkeypatch.setenv("PACKETCLIP_REQUIRE_SIGNATURE", "No")
    settings = load_config(config=config)
    assert settings.public_keys == (Path("/env/a.pem"), Path("/env/b.pem"))
    assert settings.require_signature is False and settings.sources["require_signature"] == "environment"
    flagged = load_config(config=config, public_keys=["/flag.pem"], require_signature=True)
    assert (flagged.public_keys, flagged.require_signature) == ((Path("/flag.pem"),), True)
    monkeypatch.setenv("PACKETCLIP_REQUIRE_SIGNATURE", "maybe")
    with pytest.raises(ConfigError, match=r"PACKETCLIP_REQUIRE_SIGNATURE.*'maybe'"):
        load_config()
    for text, message in (
        ('public_keys = "a.pem"\n', "'public_keys': expected a list of path strings"),
        ("public_keys = [1]\n", "'public_keys': expected a list of path strings"),
        ('require_signature = "yes"\n', "'require_signature': expected true or false"),
    ):
        config.write_text(text)
        with pytest.raises(ConfigError, match=message):
            config_module.read_config_file(config)


def test_a_required_signature_holds_for_activation_and_every_load_of_the_active_bundle(
    tmp_path: Path, keys: tuple[Path, Path], signed: Path
) -> None:
    """Installed and activated before signatures were required, an unsigned bundle is then refused by
    `activate`, by `verify` and wherever the active bundle is loaded (classify; serve, suricata run and bench
    resolve it the same way); a signed one is served; the embedded bundle is exempt."""
    store = tmp_path / "store"
    unsigned = bundle_copy(tmp_path / "unsigned", "2030.01.01-2")
    assert run(store, "install", str(unsigned), "--activate").exit_code == 0
    assert run(store, "install", str(signed)).exit_code == 0
    config = tmp_path / "config.toml"
    shutil.copy(keys[1], tmp_path / "trusted.pub.pem")
    config.write_text('public_keys = ["trusted.pub.pem"]\nrequire_signature = true\n')
    env = {"PACKETCLIP_CONFIG": str(config), "PACKETCLIP_STORE": str(store)}

    result = CliRunner(env=env).invoke(classify, [str(SAMPLE), "-o", os.devnull])
    assert result.exit_code == 1 and "unsigned, and a signature is required" in result.output, result.output
    with pytest.raises(SignatureError, match="unsigned"):
        ModelStore.from_settings(load_config(config=config, store=store)).active_bundle_path()
    verified = run(store, "--config", str(config), "verify")
    assert verified.exit_code == 3 and "unsigned" in verified.output

    assert run(store, "--config", str(config), "activate", "packetclip-default-2030.01.01-1").exit_code == 0
    refused = run(store, "--config", str(config), "activate", "packetclip-default-2030.01.01-2")
    assert refused.exit_code == 3 and "unsigned" in refused.output
    served = ModelStore.from_settings(load_config(config=config, store=store)).active_bundle_path()
    assert served == store / "bundles" / "packetclip-default-2030.01.01-1"
    # the signed active bundle classifies: the refusal above is the signature's, not the store's
    result = CliRunner(env=env).invoke(classify, [str(SAMPLE), "-o", os.devnull])
    assert result.exit_code == 0, result.output

    assert run(store, "--config", str(config), "activate", "embedded").exit_code == 0
    embedded = run(store, "--config", str(config), "verify")
    assert embedded.exit_code == 0 and "signature: not checked" in embedded.output

    config.write_text("require_signature = true\n")  # required, but no key to check against
    no_key = run(store, "--config", str(config), "activate", "packetclip-default-2030.01.01-1")
    assert no_key.exit_code == 1 and "no public key is configured" in no_key.output
