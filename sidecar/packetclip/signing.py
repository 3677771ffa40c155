"""Bundle signatures: Ed25519 keys, signing a bundle's manifest, and checking a signature against trusted keys.

Owns the signing key files (`generate_key_pair`, `load_private_key`, `load_public_key`), the detached signature
file `manifest.sig` beside a bundle's `manifest.json` (`sign_bundle`, `read_signature`), and `SignaturePolicy`,
the rule every load path applies: which public keys are trusted and whether a signature is required. It does not
hash a bundle's files (`packetclip.bundle` does; the signature covers them through the manifest, which holds
the sha256 of every file) and does not decide which bundles are checked (`packetclip.store` does: installed
bundles are, the bundle embedded in the package is not).

The signature file is JSON:

    {"format": "packetclip-signature/1", "algorithm": "ed25519",
     "key_id": "<first 16 hex digits of the sha256 of the raw 32-byte public key>",
     "signature": "<base64 of the 64-byte Ed25519 signature of the exact bytes of manifest.json>"}

The manifest does not list it (it cannot hold its own signature's hash), so a bundle may be signed, or signed
again with another key, after it was written without changing a byte of it. Keys are PEM files: the private key
PKCS#8 without a passphrase, the public key SubjectPublicKeyInfo — what `openssl genpkey -algorithm ed25519` and
`openssl pkey -pubout` write, so keys made elsewhere work too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from packetclip.bundle import MANIFEST_NAME, MAX_MANIFEST_BYTES, SIGNATURE_NAME, BundleError

log = logging.getLogger(__name__)

SIGNATURE_FORMAT = "packetclip-signature/1"
ALGORITHM = "ed25519"
KEY_ID_DIGITS = 16  # 64 bits of the key's sha256: names a key in messages, never stands in for it
PRIVATE_KEY_NAME = "signing-key.pem"
PUBLIC_KEY_NAME = "signing-key.pub.pem"
MAX_KEY_BYTES = 64 * 1024  # a PEM Ed25519 key is about 120 bytes; read no more of a file named as one
MAX_SIGNATURE_BYTES = 64 * 1024  # a signature file is about 200 bytes


class SigningKeyError(ValueError):
    """A key file that cannot be used (missing, unreadable, not an Ed25519 key); the message names the file."""


class SignatureError(BundleError):
    """A bundle refused for its signature: unsigned where one is required, signed by an untrusted key, or a
    signature that does not verify."""


@dataclass(frozen=True)
class PublicKey:
    """A trusted public key and the file it came from (named in messages)."""

    key: Ed25519PublicKey
    path: Path

    @property
    def key_id(self) -> str:
        return key_id(self.key)


@dataclass(frozen=True)
class Signature:
    """A bundle's `manifest.sig`, parsed."""

    key_id: str
    signature: bytes


def key_id(public: Ed25519PublicKey) -> str:
    """The short name of a public key: the first hex digits of the sha256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_DIGITS]


# --- key files ----------------------------------------------------------------------------------------------


def generate_key_pair(folder: Path) -> tuple[Path, Path, str]:
    """A new key pair in `folder`: (private key file, public key file, key id). The private key is written
    readable by its owner only (0600); an existing key file is never overwritten (`SigningKeyError`)."""
    private_path, public_path = folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise SigningKeyError(
                f"{path}: already exists; a key is never overwritten (choose another --out)"
            )
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_new(private_path, private_pem, 0o600)
        try:
            _write_new(public_path, public_pem, 0o644)
        except OSError:
            private_path.unlink()  # half a key pair is no use, and a stray private key is a liability
            raise
    except OSError as exc:
        raise SigningKeyError(f"{folder}: cannot write the key pair ({exc})") from exc
    return private_path, public_path, key_id(private.public_key())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (O_EXCL: never through an existing file or link)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as out:
        os.fchmod(out.fileno(), mode)  # the umask may have narrowed it; it must not have widened it
        out.write(data)


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read key file ({exc.strerror or exc})") from exc
    if len(data) > MAX_KEY_BYTES:
        raise SigningKeyError(f"{path}: larger than any key file ({MAX_KEY_BYTES} bytes)")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) file without a passphrase."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # the file is encrypted
        raise SigningKeyError(
            f"{path}: the private key has a passphrase; sign with an unencrypted key"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path}: not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> PublicKey:
    """An Ed25519 public key from a PEM (SubjectPublicKeyInfo) file."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return PublicKey(key, path)


# --- signatures ---------------------------------------------------------------------------------------------


def _manifest_bytes(root: Path, source: Path) -> bytes:
    try:
        with (root / MANIFEST_NAME).open("rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"bundle {source}: {MANIFEST_NAME}: unreadable ({exc})") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"bundle {source}: {MANIFEST_NAME}: larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def sign_bundle(root: Path, private: Ed25519PrivateKey) -> Signature:
    """Write `manifest.sig` into the bundle folder `root` (replacing an earlier signature): the signature of its
    manifest's bytes as they are now. The caller verifies the bundle first: a signature vouches for it."""
    signature = Signature(key_id(private.public_key()), private.sign(_manifest_bytes(root, root)))
    document = {
        "format": SIGNATURE_FORMAT,
        "algorithm": ALGORITHM,
        "key_id": signature.key_id,
        "signature": base64.b64encode(signature.signature).decode("ascii"),
    }
    handle, temporary = tempfile.mkstemp(prefix=f".{SIGNATURE_NAME}.", suffix=".tmp", dir=root)
    try:
        os.fchmod(handle, 0o644)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        os.replace(temporary, root / SIGNATURE_NAME)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return signature


def read_signature(root: Path, source: Path | None = None) -> Signature | None:
    """The bundle's parsed `manifest.sig`; None when it has none. A malformed one is a `SignatureError`."""
    source = source or root
    path = root / SIGNATURE_NAME
    where = f"bundle {source}: {SIGNATURE_NAME}"
    if path.is_symlink():
        raise SignatureError(f"{where}: a symbolic link; a bundle holds regular files")
    if not path.exists():
        return None
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SIGNATURE_BYTES + 1)
        document = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SignatureError(f"{where}: unreadable ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != SIGNATURE_FORMAT:
        raise SignatureError(f"{where}: not a {SIGNATURE_FORMAT} document")
    if document.get("algorithm") != ALGORITHM:
        raise SignatureError(f"{where}: algorithm {document.get('algorithm')!r} is not {ALGORITHM!r}")
    identity, encoded = document.get("key_id"), document.get("signature")
    if not isinstance(identity, str) or not isinstance(encoded, str):
        raise SignatureError(f"{where}: needs a 'key_id' and a base64 'signature'")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{where}: the signature is not base64") from exc
    return Signature(identity, raw)


@dataclass(frozen=True)
class SignatureCheck:
    """What `SignaturePolicy.check` found: whether the bundle is signed, by which key, and whether that key is
    trusted here (then the signature verified, or the check would have raised)."""

    signed: bool
    key_id: str = ""
    trusted_key: Path | None = None  # the public key file that verified it; None: unsigned or key not trusted

    def describe(self) -> str:
        if not self.signed:
            return "unsigned"
        if self.trusted_key is None:
            return f"signed by key {self.key_id}, which is not among the trusted public keys"
        return f"signed by key {self.key_id} ({self.trusted_key}), signature verified"


@dataclass(frozen=True)
class SignaturePolicy:
    """Which public keys are trusted, and whether every bundle must carry a signature by one of them.

    Whatever `required` says, a signature by a trusted key must verify (a signature that fails is a sign the
    manifest changed after signing), and a malformed signature file is refused. Keys are read on first use, so
    a policy costs nothing where no signature is checked; an unreadable key then refuses the bundle."""

    key_files: tuple[Path, ...] = ()
    required: bool = False

    @classmethod
    def load(cls, key_files: Sequence[Path], required: bool) -> SignaturePolicy:
        """A policy trusting `key_files`, each read now (`SigningKeyError`): a command that was given keys says at
        once that one is unusable, rather than when a bundle meets it."""
        signatures = cls(tuple(key_files), required)
        _ = signatures.keys
        return signatures

    @cached_property
    def keys(self) -> dict[str, PublicKey]:
        """Key id → trusted key, read from `key_files` on first use; `SigningKeyError` names an unusable file."""
        trusted: dict[str, PublicKey] = {}
        for path in self.key_files:
            public = load_public_key(path)
            trusted.setdefault(public.key_id, public)
        return trusted

    def check(self, root: Path, source: Path | None = None) -> SignatureCheck:
        """Apply the policy to the bundle folder `root` (`source` names it in messages); `SignatureError` when
        it is refused."""
        source = source or root
        signature = read_signature(root, source)
        if signature is None:
            if self.required:
                raise SignatureError(
                    f"bundle {source}: unsigned, and a signature is required (sign it with `packetclip models "
                    f"sign`)"
                )
            return SignatureCheck(signed=False)
        try:
            trusted = self.keys
        except SigningKeyError as exc:
            raise SignatureError(f"bundle {source}: its signature cannot be checked: {exc}") from exc
        if self.required and not trusted:
            raise SignatureError(
                f"bundle {source}: a signature is required but no public key is configured (public_keys)"
            )
        public = trusted.get(signature.key_id)
        if public is None:
            if self.required:
                raise SignatureError(
                    f"bundle {source}: signed by key {signature.key_id}, which is not among the trusted public "
                    f"keys ({', '.join(sorted(trusted)) or 'none'})"
                )
            log.info("bundle %s: signed by key %s, not a trusted key", source, signature.key_id)
            return SignatureCheck(signed=True, key_id=signature.key_id)
        try:
            public.key.verify(signature.signature, _manifest_bytes(root, source))
        except InvalidSignature:
            raise SignatureError(
                f"bundle {source}: {SIGNATURE_NAME}: the signature by key {signature.key_id} does not match "
                f"{MANIFEST_NAME} (changed after signing?)"
            ) from None
        return SignatureCheck(signed=True, key_id=signature.key_id, trusted_key=public.path)
