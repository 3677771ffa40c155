"""`packetclip serve` over TLS and with a token, against the Zeek-faithful peer served over wss:// with a throwaway
CA made here: a verified connection serves; a certificate from another CA is refused, counted and retried as any
failed connect; an endpoint that requires a client certificate (mutual TLS) accepts the sidecar's and refuses a
sidecar without one; the token file's token arrives as `Authorization: Bearer` (and a peer requiring it refuses a
handshake without it); bad TLS settings or files stop the command with a one-line error.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from packetclip.commands.serve import serve
from packetclip.config import ConfigError
from packetclip.engine import Engine
from packetclip.zeek.service import HELLO_EVENT, Sidecar
from packetclip.zeek.settings import ServeSettings, read_serve_table
from tests.runtime.test_engine import runtime_bundle
from tests.zeek_peer.peer import PeerOptions, ZeekPeer

HERE = Path(__file__).resolve().parent

TOKEN = "s3cret-token.42"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


# --- a throwaway PKI ------------------------------------------------------------------------------------------


@dataclass
class Issued:
    cert: Path
    key: Path


class Authority:
    """A self-signed CA that issues leaf certificates into `folder`."""

    def __init__(self, folder: Path, name: str):
        self.folder = folder
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            _builder(self.name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = folder / f"{name}.pem"
        self.pem.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, server: bool, passphrase: bytes | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        issued.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        issued.key.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        )
        return issued


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class Pki:
    ca: Authority
    other_ca: Authority  # signed nothing the peer presents
    server: Issued
    client: Issued
    token_file: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder, "zeek-ca")
    token_file = folder / "token"
    token_file.write_text(f"{TOKEN}\n")
    return Pki(
        ca, Authority(folder, "other-ca"), ca.issue("zeek", True), ca.issue("sidecar", False), token_file
    )


def server_context(pki: Pki, require_client: bool = False) -> ssl.SSLContext:
    """Zeek's endpoint with `tls_options` (and `ca_file` for peer verification when `require_client`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca.pem)
    return context


def connect(
    bundle_path: Path, options: PeerOptions, expect_hello: bool, **settings: Any
) -> tuple[ZeekPeer, int]:
    """Run a sidecar against a peer until it said hello (`expect_hello`) or failed to connect twice; the peer
    and the count of failed connects."""

    async def main() -> tuple[ZeekPeer, int]:
        async with ZeekPeer(options) as peer:
            peer.script_subscriptions = ["packetclip/control/"]
            config = ServeSettings(zeek=peer.url, reconnect_initial=0.01, reconnect_max=0.05, **settings)
            sidecar = Sidecar(config, Engine(bundle_path))
            stop = asyncio.Event()
            task = asyncio.create_task(sidecar.run(stop))
            try:
                if expect_hello:
                    await peer.wait_for(lambda received: any(r.event.name == HELLO_EVENT for r in received))
                else:
                    async with asyncio.timeout(20):
                        while sidecar.metrics.errors["connect_failed"] < 2:
                            await asyncio.sleep(0.01)
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)
            return peer, sidecar.metrics.errors["connect_failed"]

    return asyncio.run(main())


# --- connections ----------------------------------------------------------------------------------------------


def test_a_verified_tls_connection_serves_and_carries_the_token(bundle_path: Path, pki: Pki) -> None:
    options = PeerOptions(ssl=server_context(pki), token=TOKEN)
    peer, failures = connect(
        bundle_path, options, True, tls_ca=str(pki.ca.pem), token_file=str(pki.token_file)
    )
    assert peer.url.startswith("wss://") and failures == 0
    assert peer.handshakes == ["packetclip-sidecar"]
    assert peer.request_headers[0]["Authorization"] == f"Bearer {TOKEN}"


def test_a_certificate_from_another_ca_is_refused_counted_and_retried(
    bundle_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        peer, failures = connect(
            bundle_path, PeerOptions(ssl=server_context(pki)), False, tls_ca=str(pki.other_ca.pem)
        )
    assert failures >= 2 and peer.handshakes == [] and peer.request_headers == []
    assert "connect_failed" in caplog.text and "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_mutual_tls_accepts_the_sidecars_certificate_and_refuses_a_sidecar_without_one(
    bundle_path: Path, pki: Pki
) -> None:
    options = PeerOptions(ssl=server_context(pki, require_client=True))
    peer, failures = connect(
        bundle_path,
        options,
        True,
        tls_ca=str(pki.ca.pem),
        tls_cert=str(pki.client.cert),
        tls_key=str(pki.client.key),
    )
    assert failures == 0 and peer.handshakes == ["packetclip-sidecar"]
    peer, failures = connect(bundle_path, options, False, tls_ca=str(pki.ca.pem))
    assert failures >= 2 and peer.handshakes == []


def test_a_peer_requiring_a_token_refuses_a_handshake_without_it(bundle_path: Path) -> None:
    peer, failures = connect(bundle_path, PeerOptions(token=TOKEN), False)
    assert failures >= 2 and peer.handshakes == []
    assert len(peer.request_headers) >= 2 and "Authorization" not in peer.request_headers[0]


# --- settings and the command line ----------------------------------------------------------------------------


def test_tls_settings_need_wss_and_a_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="need a wss:// URL"):
        ServeSettings(tls_ca="ca.pem")
    with pytest.raises(ConfigError, match="go together"):
        ServeSettings(zeek="wss://zeek:27759/v1/messages/json", tls_cert="sidecar.pem")
    config = tmp_path / "config.toml"
    config.write_text(
        '[serve]\nzeek = "wss://zeek:27759/v1/messages/json"\ntls_ca = "/etc/ca.pem"\n'
        'tls_cert = "/etc/c.pem"\ntls_key = "/etc/c.key"\ntoken_file = "/etc/token"\n'
    )
    table = read_serve_table(config)
    assert (table["tls_ca"], table["tls_key"], table["token_file"]) == (
        "/etc/ca.pem",
        "/etc/c.key",
        "/etc/token",
    )


def test_the_command_refuses_bad_tls_files_with_one_line(bundle_path: Path, pki: Pki, tmp_path: Path) -> None:
    wss = "wss://127.0.0.1:1/v1/messages/json"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    locked = pki.ca.issue("locked", False, passphrase=b"passphrase")
    spaced = tmp_path / "spaced-token"
    spaced.write_text("two words\n")
    cases = [
        ([wss, "--tls-ca", str(tmp_path / "missing.pem")], "tls_ca"),
        ([wss, "--tls-ca", str(garbage)], "cannot load the CA file"),
        ([wss, "--tls-cert", str(pki.client.cert)], "go together"),
        ([wss, "--tls-cert", str(garbage), "--tls-key", str(pki.client.key)], "cannot load the client"),
        ([wss, "--tls-cert", str(locked.cert), "--tls-key", str(locked.key)], "encrypted"),
        (["ws://127.0.0.1:1/v1/messages/json", "--tls-ca", str(pki.ca.pem)], "need a wss:// URL"),
        ([wss, "--token-file", str(tmp_path / "missing-token")], "token_file"),
        ([wss, "--token-file", str(spaced)], "printable ASCII"),
    ]
    for (url, *flags), words in cases:
        result = CliRunner().invoke(serve, ["--zeek", url, *flags, "--model", str(bundle_path)])
        assert result.exit_code == 1, (flags, result.output)
        assert words in result.output and "Traceback" not in result.output, (flags, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
