"""The model store: installed bundles, which one is active, and the history that rollback walks back.

Owns the store's folder (install, list, verify, show, activate, rollback), the activation pointer that every
`packetclip` process reads, and `ActiveModelWatcher`, the cheap check a running sidecar makes between batches to
notice an activation. It does not read a bundle's contents (`packetclip.bundle` does: every check of hashes,
manifest and fixtures is that module's) and does not run verdicts or reload engines (`packetclip.reload` does,
for the live sidecars, when the watcher says so). Signatures are
`packetclip.signing`'s; the store decides where its `SignaturePolicy` applies: to every bundle it installs,
activates, verifies or hands out as active, except the bundle embedded in the package (it is part of the installed
package, whose integrity is the package manager's, and no operator key could have signed it).

Layout of a store root:

    bundles/<name>-<version>/   installed bundles, each verified (hashes and parity fixtures) before it appears,
                                with its manifest.sig when it came signed
    active.json                 the activation pointer: {"bundle": "<name>-<version>" | null, "activated": ...}
                                (null, or no file: the bundle embedded in the package is active)
    history.json                {"previous": [pointer, ...]}: earlier pointers, most recent last, for rollback
    manifests.json              {"<name>-<version>": sha256 of its manifest.json}, recorded at install: the
                                manifest is the one file a bundle's own hashes cannot cover, so the store keeps
                                its hash to refuse a manifest edited after installation
    .lock                       fcntl lock held by every change to the store
    .staging/                   scratch space of installs (same file system, so the final rename is atomic)

Atomicity: a bundle becomes visible by one `rename` of a complete, verified folder; a pointer changes by one
`os.replace` of a fully written file. Activation writes history first, then the pointer; a crash between the two
leaves a history whose last entry equals the active pointer, which rollback recognises and drops, so the store
is consistent after a crash at any step.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from packetclip.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Bundle,
    BundleError,
    check_fixtures,
    default_bundle_path,
    load_bundle,
    read_manifest,
    sha256_file,
)
from packetclip.signing import SignatureCheck, SignaturePolicy

if TYPE_CHECKING:
    from packetclip.config import RuntimeConfig

log = logging.getLogger(__name__)

BUNDLES_DIR = "bundles"
POINTER_NAME = "active.json"
HISTORY_NAME = "history.json"
MANIFEST_INDEX_NAME = "manifests.json"
LOCK_NAME = ".lock"
STAGING_DIR = ".staging"
EMBEDDED = "embedded"  # the name operators use for the bundle shipped inside the package
HISTORY_LIMIT = 20  # rollbacks kept: enough for a season of updates, small enough to read at a glance


# Named here because `ModelStore.list` shadows the builtin inside the class body.
Pointer = dict[str, Any]  # the content of active.json: {"bundle": key or None, "activated": timestamp}
History = list[Pointer]  # earlier pointers, most recent last


class StoreError(RuntimeError):
    """The store cannot do what was asked (unknown bundle, nothing to roll back to, unwritable folder)."""


class BundleNotFound(StoreError):
    """No installed bundle answers to the name given."""


class InstallConflict(StoreError):
    """A bundle with the same name and version is installed with different contents."""


@dataclass(frozen=True)
class InstalledBundle:
    """One entry of `ModelStore.list()`."""

    key: str  # "<name>-<version>", the folder name under bundles/ (EMBEDDED for the shipped bundle)
    name: str
    version: str
    created: str
    path: Path
    active: bool
    embedded: bool = False
    problem: str = ""  # why the manifest cannot be read (the entry is still listed: operators must see it)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "path": str(self.path),
            "active": self.active,
            "embedded": self.embedded,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class InstallResult:
    """What `install` did: the installed bundle, and whether it was already there with the same hashes."""

    bundle: InstalledBundle
    already_installed: bool


def _copy_listed(bundle: Bundle, destination: Path) -> None:
    """The manifest, its signature when there is one, and the files the manifest lists (plain relative names: the
    manifest reader refuses others), copied as regular files readable by all (0644; folders 0755) whatever the
    source's modes; a symbolic link is refused (`BundleError`)."""
    folders = {destination}
    signature = bundle.root / SIGNATURE_NAME
    signed = (SIGNATURE_NAME,) if signature.exists() or signature.is_symlink() else ()
    for name in (MANIFEST_NAME, *signed, *bundle.manifest["files"]):
        relative = PurePosixPath(name)
        source = bundle.root / relative
        if source.is_symlink():
            raise BundleError(
                f"bundle {bundle.source}: {name} is a symbolic link; a bundle holds regular files"
            )
        target = destination / relative
        folders.update(target.parents[: len(relative.parts) - 1])
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open("rb") as reader, target.open("xb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
        target.chmod(0o644)
    for folder in folders:
        folder.chmod(0o755)


def _plain_key(key: str) -> bool:
    """A key names a folder directly under the store's bundles folder: no separator, not `.` or `..`."""
    return bool(key) and key not in (".", "..") and "/" not in key and "\\" not in key and "\0" not in key


def bundle_key(name: str, version: str) -> str:
    return f"{name}-{version}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomically(path: Path, data: object) -> None:
    """Write JSON to a temporary file beside `path`, flush it to disk, then `os.replace` it over `path`."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o644)  # sensors often run as another user than the operator who activates
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (the folder entry), where the platform allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class ModelStore:
    """The bundles installed under `root` and the activation pointer (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], signatures: SignaturePolicy | None = None):
        self.root = Path(root)
        self.signatures = signatures or SignaturePolicy()
        self.bundles_dir = self.root / BUNDLES_DIR
        self.pointer_path = self.root / POINTER_NAME
        self.history_path = self.root / HISTORY_NAME
        self.manifest_index_path = self.root / MANIFEST_INDEX_NAME

    @classmethod
    def from_settings(cls, settings: RuntimeConfig) -> ModelStore:
        """The store the settings name, trusting their `public_keys` and requiring a signature when they say so
        (keys are read when a signature is first checked)."""
        return cls(settings.store, SignaturePolicy(settings.public_keys, settings.require_signature))

    # --- reading ----------------------------------------------------------------------------------------

    def active_key(self) -> str | None:
        """The key of the active installed bundle, or None when the embedded default is active."""
        pointer = self._read_pointer()
        key = pointer.get("bundle")
        return str(key) if key else None

    def active_bundle_path(self) -> Path:
        """The active bundle's folder; the embedded default when nothing is activated (or the pointer is
        unusable — missing bundle, or a key that is not a folder of the store: a sensor must keep classifying,
        so that case is logged, not raised). An installed bundle whose manifest differs from the one recorded at
        install, or that the signature policy refuses, raises `BundleError`: every command that loads the active
        bundle refuses it, as `verify` does (its own hashes, which `load_bundle` checks, cover every other file)."""
        key = self.active_key()
        if key is None:
            return default_bundle_path()
        if not _plain_key(key):
            log.error(
                "store %s: active pointer names %r, not a bundle of the store; using the embedded default",
                self.root,
                key,
            )
            return default_bundle_path()
        path = self.bundles_dir / key
        if not (path / MANIFEST_NAME).is_file():
            log.error("store %s: active bundle %s is missing; using the embedded default", self.root, key)
            return default_bundle_path()
        self._check_recorded_manifest(path)
        self.signatures.check(path)
        return path

    def list(self) -> list[InstalledBundle]:
        """Installed bundles sorted by key, then the embedded default (listed even when absent)."""
        active = self.active_key()
        entries = []
        if self.bundles_dir.is_dir():
            for folder in sorted(p for p in self.bundles_dir.iterdir() if p.is_dir()):
                entries.append(self._entry(folder, folder.name, active == folder.name, embedded=False))
        entries.append(self._entry(default_bundle_path(), EMBEDDED, active is None, embedded=True))
        return entries

    def _entry(self, folder: Path, key: str, active: bool, embedded: bool) -> InstalledBundle:
        try:
            manifest = read_manifest(folder)
        except BundleError as exc:
            return InstalledBundle(key, "", "", "", folder, active, embedded, problem=str(exc))
        return InstalledBundle(
            key,
            str(manifest["name"]),
            str(manifest["version"]),
            str(manifest["created"]),
            folder,
            active,
            embedded,
        )

    def resolve(self, reference: str | None) -> Path:
        """The folder a reference names: None (the active bundle), "embedded", a key "<name>-<version>", a
        bundle name or a version (when exactly one installed bundle has it), or a path to a bundle."""
        if reference is None:
            return self.active_bundle_path()
        if reference == EMBEDDED:
            return default_bundle_path()
        folder = self._installed_folder(reference)
        if folder is not None:
            return folder
        candidate = Path(reference)
        if candidate.exists():
            return candidate
        raise BundleNotFound(f"store {self.root}: no installed bundle or path {reference!r}{self._known()}")

    def _installed_folder(self, reference: str) -> Path | None:
        """An installed bundle's folder by key, name or version; None when nothing installed matches."""
        if "/" not in reference and reference not in (".", "..") and (self.bundles_dir / reference).is_dir():
            return self.bundles_dir / reference
        matches = [
            entry.path
            for entry in self.list()
            if not entry.embedded and reference in (entry.name, entry.version)
        ]
        if len(matches) > 1:
            keys = ", ".join(sorted(p.name for p in matches))
            raise StoreError(f"store {self.root}: {reference!r} is ambiguous ({keys}); give the full key")
        return matches[0] if matches else None

    def _known(self) -> str:
        keys = [entry.key for entry in self.list()]
        return f" (known: {', '.join(keys)})"

    def verify(self, reference: str | None = None) -> tuple[Bundle, dict[str, float]]:
        """Hashes, manifest, signature (by the store's policy) and parity fixtures of a bundle (see `resolve`);
        raises `BundleError`."""
        folder = self.resolve(reference)
        self._check_recorded_manifest(folder)
        bundle = load_bundle(folder, verify=True)
        self.check_signature(bundle)
        return bundle, check_fixtures(bundle)

    def check_signature(self, bundle: Bundle) -> SignatureCheck | None:
        """The store's signature policy applied to an opened bundle (`SignatureError` when it refuses it); None
        for the bundle embedded in the package, which the policy does not cover (see the module docstring)."""
        if bundle.root.resolve() == default_bundle_path().resolve():
            return None
        return self.signatures.check(bundle.root, bundle.source)

    def show(self, reference: str | None = None) -> dict[str, Any]:
        """A summary of a bundle's manifest (no hashing: `verify` does that)."""
        folder = self.resolve(reference)
        bundle = load_bundle(folder, verify=False)
        return manifest_summary(bundle, active=folder.resolve() == self.active_bundle_path().resolve())

    # --- changing ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's exclusive lock (blocks until other `packetclip` processes release it)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = (self.root / LOCK_NAME).open("a")
        except OSError as exc:
            raise StoreError(f"store {self.root}: cannot create or lock the store ({exc})") from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def install(self, source: str | os.PathLike[str], activate: bool = False) -> InstallResult:
        """Install a bundle folder or `.tar.gz`: verified (hashes and fixtures) before it becomes visible.

        Installing the same name-version with the same hashes again is a no-op; with other hashes it is refused
        (`InstallConflict`): a version names one set of bytes, and a sensor that reloads by name must not
        silently get other weights.
        """
        source = Path(source)
        with self.locked():
            staging_root = self.root / STAGING_DIR
            staging_root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix="install-", dir=staging_root))
            try:
                result = self._install_staged(source, staging)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            if activate:
                self._activate_locked(result.bundle.key)
        entry = self._entry(result.bundle.path, result.bundle.key, active=activate, embedded=False)
        return InstallResult(entry, result.already_installed)

    def _install_staged(self, source: Path, staging: Path) -> InstallResult:
        # opened (and an archive extracted) inside the staging folder, so nothing is left behind on refusal;
        # the message names what the operator gave, not the staging copy
        original = load_bundle(source, verify=True, cache_dir=staging / "extracted")
        signature = self.signatures.check(original.root, source)
        key = bundle_key(original.name, original.version)
        target = self.bundles_dir / key
        if target.exists():
            return self._reinstall(original, target, key, signature, staging)
        check_fixtures(original)  # on the source, so a refusal names what the operator gave
        copy = staging / key
        _copy_listed(original, copy)
        # what becomes visible is the copy: its bytes must be the ones just checked (the source may change)
        staged = load_bundle(copy, verify=True)
        if staged.manifest["files"] != original.manifest["files"]:
            raise BundleError(f"bundle {source}: changed while it was being installed")
        self.signatures.check(copy, source)
        self.bundles_dir.mkdir(parents=True, exist_ok=True)
        # recorded before the bundle is visible: a record without its folder is harmless, the reverse is not
        self._record_manifest(key, sha256_file(copy / MANIFEST_NAME))
        try:
            copy.rename(target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise InstallConflict(f"store {self.root}: {key} appeared while installing; retry") from exc
            raise StoreError(f"store {self.root}: cannot install {key} ({exc})") from exc
        _fsync_folder(self.bundles_dir)
        log.info("installed %s from %s into %s", key, source, target)
        return InstallResult(self._entry(target, key, False, False), already_installed=False)

    def _reinstall(
        self, original: Bundle, target: Path, key: str, signature: SignatureCheck, staging: Path
    ) -> InstallResult:
        try:
            installed = read_manifest(target)
        except BundleError as exc:
            raise InstallConflict(f"store {self.root}: {key} is installed but unreadable ({exc})") from exc
        if installed["files"] != original.manifest["files"]:
            raise InstallConflict(
                f"store {self.root}: {key} is already installed with different file hashes; a new bundle needs "
                "a new version"
            )
        if key not in self._read_manifest_index():  # an install interrupted after its rename
            self._record_manifest(key, sha256_file(target / MANIFEST_NAME))
        if signature.trusted_key is not None or not (target / SIGNATURE_NAME).exists():
            self._add_signature(original, target, key, staging)
        self.signatures.check(target, original.source)
        log.info("%s is already installed with the same hashes", key)
        return InstallResult(self._entry(target, key, False, False), already_installed=True)

    def _add_signature(self, original: Bundle, target: Path, key: str, staging: Path) -> None:
        """Installing an installed bundle again, signed, brings its signature into the store (the way to sign
        bundles installed before they were signed); the caller replaces an earlier signature only with one by a
        trusted key. Only where the installed manifest is byte for byte the source's, the bytes it covers. Written
        in `staging` and renamed into place: a crash leaves no stray file in the installed bundle."""
        signature = original.root / SIGNATURE_NAME
        if not signature.is_file() or signature.is_symlink():
            return
        if (target / MANIFEST_NAME).read_bytes() != (original.root / MANIFEST_NAME).read_bytes():
            log.warning(
                "%s: installed manifest differs from %s's; its signature is not copied", key, original.source
            )
            return
        if (target / SIGNATURE_NAME).is_file() and (
            (target / SIGNATURE_NAME).read_bytes() == signature.read_bytes()
        ):
            return
        handle, temporary = tempfile.mkstemp(prefix=f"{SIGNATURE_NAME}.", dir=staging)
        try:
            os.fchmod(handle, 0o644)
            with os.fdopen(handle, "wb") as out, signature.open("rb") as reader:
                shutil.copyfileobj(reader, out)
            os.replace(temporary, target / SIGNATURE_NAME)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        log.info("%s: signature from %s added to the installed bundle", key, original.source)

    def activate(self, reference: str) -> InstalledBundle:
        """Make an installed bundle (or "embedded") the active one, after verifying it; the previous active
        bundle goes to the history. A refused bundle leaves the active one in place."""
        with self.locked():
            return self._activate_locked(reference)

    def _activate_locked(self, reference: str) -> InstalledBundle:
        key = self._activation_key(reference)
        folder = default_bundle_path() if key is None else self.bundles_dir / key
        self._verify_for_activation(folder)
        current = self._read_pointer()
        if current.get("bundle") == key:
            log.info("%s is already active", key or EMBEDDED)
            return self._entry(folder, key or EMBEDDED, True, key is None)
        history = self._read_history()
        if not history or history[-1].get("bundle") != current.get("bundle"):
            history.append({"bundle": current.get("bundle"), "activated": current.get("activated")})
        self._write_history(history[-HISTORY_LIMIT:])
        self._write_pointer(key)
        log.info("activated %s (previous: %s)", key or EMBEDDED, current.get("bundle") or EMBEDDED)
        return self._entry(folder, key or EMBEDDED, True, key is None)

    def _activation_key(self, reference: str) -> str | None:
        """The key to write into the pointer (None: the embedded default); only installed bundles qualify."""
        if reference == EMBEDDED:
            return None
        folder = self._installed_folder(reference)
        if folder is None:
            raise BundleNotFound(
                f"store {self.root}: no installed bundle {reference!r}{self._known()}; install it first"
            )
        return folder.name

    def rollback(self) -> InstalledBundle:
        """Re-activate the bundle that was active before the current one (verified first)."""
        with self.locked():
            current = self._read_pointer().get("bundle")
            history = self._read_history()
            while history and history[-1].get("bundle") == current:
                history.pop()  # left by an activation interrupted between its two writes
            if not history:
                raise StoreError(f"store {self.root}: no earlier activation to roll back to")
            target = history[-1].get("bundle")
            key = str(target) if target else None
            folder = default_bundle_path() if key is None else self.bundles_dir / key
            self._verify_for_activation(folder)
            # pointer first: a crash before the history write leaves an entry equal to the pointer (dropped above)
            self._write_pointer(key)
            self._write_history(history[:-1])
            log.info("rolled back from %s to %s", current or EMBEDDED, key or EMBEDDED)
            return self._entry(folder, key or EMBEDDED, True, key is None)

    def _verify_for_activation(self, folder: Path) -> None:
        self._check_recorded_manifest(folder)
        bundle = load_bundle(folder, verify=True)
        self.check_signature(bundle)
        check_fixtures(bundle)

    def _check_recorded_manifest(self, folder: Path) -> None:
        """An installed bundle's manifest must be the one installed (its own hashes cover every other file)."""
        if folder.parent.resolve() != self.bundles_dir.resolve() or not (folder / MANIFEST_NAME).is_file():
            return  # not an installed bundle (or no manifest: load_bundle names that)
        recorded = self._read_manifest_index().get(folder.name)
        if recorded is None:
            log.warning(
                "store %s: no manifest hash recorded for %s; checking its own hashes only",
                self.root,
                folder.name,
            )
            return
        actual = sha256_file(folder / MANIFEST_NAME)
        if actual != recorded:
            raise BundleError(
                f"bundle {folder}: {MANIFEST_NAME}: sha256 {actual} differs from the one recorded at install "
                f"({recorded}); the installed bundle was modified"
            )

    def _read_manifest_index(self) -> dict[str, str]:
        try:
            data = json.loads(self.manifest_index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.error("store %s: %s is unreadable (%s)", self.root, MANIFEST_INDEX_NAME, exc)
            return {}
        if not isinstance(data, dict):
            log.error("store %s: %s is malformed", self.root, MANIFEST_INDEX_NAME)
            return {}
        return {str(key): str(value) for key, value in data.items()}

    def _record_manifest(self, key: str, digest: str) -> None:
        index = self._read_manifest_index()
        index[key] = digest
        write_json_atomically(self.manifest_index_path, index)

    # --- pointer and history files ----------------------------------------------------------------------

    def _read_pointer(self) -> Pointer:
        """The pointer's content; {} when there is none (embedded default). An unreadable pointer is logged
        and read as none: the store stays usable and the next activation rewrites it."""
        try:
            data = json.loads(self.pointer_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.error(
                "store %s: %s is unreadable (%s); treating the embedded default as active",
                self.root,
                POINTER_NAME,
                exc,
            )
            return {}
        if not isinstance(data, dict) or not (data.get("bundle") is None or isinstance(data["bundle"], str)):
            log.error(
                "store %s: %s is malformed; treating the embedded default as active", self.root, POINTER_NAME
            )
            return {}
        return data

    def _write_pointer(self, key: str | None) -> None:
        write_json_atomically(self.pointer_path, {"bundle": key, "activated": _now()})

    def _read_history(self) -> History:
        try:
            data = json.loads(self.history_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.error(
                "store %s: %s is unreadable (%s); rollback history starts afresh",
                self.root,
                HISTORY_NAME,
                exc,
            )
            return []
        previous = data.get("previous") if isinstance(data, dict) else None
        if not isinstance(previous, list):
            log.error("store %s: %s is malformed; rollback history starts afresh", self.root, HISTORY_NAME)
            return []
        return [entry for entry in previous if isinstance(entry, dict)]

    def _write_history(self, history: History) -> None:
        write_json_atomically(self.history_path, {"previous": history})


def manifest_summary(bundle: Bundle, active: bool = False) -> dict[str, Any]:
    """What `packetclip models show` prints: identity, classes, missions, metrics, data card counts, sizes."""
    manifest = bundle.manifest
    sizes = {relative: _size(bundle.root / relative) for relative in sorted(manifest["files"])}
    counts = manifest["data_card"].get("counts", {}) if isinstance(manifest["data_card"], dict) else {}
    return {
        "name": bundle.name,
        "version": bundle.version,
        "created": bundle.created,
        "path": str(bundle.root),
        "active": active,
        "featurizer_version": str(manifest["featurizer_version"]),
        "classes": {"coarse": list(bundle.coarse_classes), "fine": list(bundle.fine_classes)},
        "missions": list(bundle.missions),
        "models": {
            role: {key: spec.get(key) for key in ("file", "parameters", "flops_per_packet")}
            for role, spec in manifest["models"].items()
        },
        "metrics": manifest["metrics"],
        "data_card": {
            "name": manifest["data_card"].get("name"),
            "total": counts.get("total", {}),
            "coarse": counts.get("coarse", {}),
        },
        "sizes": {"files": sizes, "total_bytes": sum(size for size in sizes.values() if size is not None)},
    }


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


class ActiveModelWatcher:
    """Tells a running process that the store's activation changed since it last looked.

    `changed()` is one `stat` of the pointer file (mtime in ns, inode, size): cheap enough to call before every
    batch. The pointer is always replaced by rename, so an activation changes the inode even within the file
    system's timestamp granularity. The first call after construction compares with the state at construction
    (the bundle the caller loaded then).
    """

    def __init__(self, store: ModelStore):
        self.store = store
        self._seen = self._signature()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            status = os.stat(self.store.pointer_path)
        except OSError:
            return None
        return status.st_mtime_ns, status.st_ino, status.st_size

    def changed(self) -> bool:
        """True once per change of the activation pointer."""
        signature = self._signature()
        if signature == self._seen:
            return False
        self._seen = signature
        return True

    def active_bundle_path(self) -> Path:
        return self.store.active_bundle_path()
