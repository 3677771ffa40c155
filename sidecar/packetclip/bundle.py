"""Model bundles as the runtime reads them: `packetclip-bundle/1` directories and `.tar.gz` archives of them.

Owns opening a bundle (safe extraction of archives into a cache), verifying it against its `manifest.json`
(required keys, format, sha256 of every file, no missing, unlisted or escaping file, the featurizer version and
class vocabulary this runtime speaks), the `Bundle` record with what the runtime needs from the manifest, reading
the concept list and the description bank, and checking the ONNX models against their parity fixtures.

It does not write bundles (the factory's `packetclip_training.export.bundle` does) and does not run verdicts. It
imports numpy, json, hashlib and tarfile only; onnxruntime is imported inside the functions that run a model, so
that reading and verifying a bundle works where onnxruntime is missing.

Layout (every path relative to the bundle's root):

    manifest.json            format, name, version, classes, models, sha256 of every other file, ...
    <role>.onnx              one ONNX model per role (the runtime uses "encoder" and "reasoner")
    fixtures/<role>.npz      every input and every expected output of <role>.onnx, by ONNX name
    concepts.json            [{"mission", "concept", "kind"}, ...] in the order of the reasoner's concepts output
    descriptions.npz         "embeddings" float16 (T, D) unit rows; "fine" int16 (T,) index into the fine classes
    descriptions.json        {"texts": [T strings], "classes": [the fine class names "fine" indexes]}
    missions/<name>.yaml     the mission files the reasoner was trained with
    text_head.npz            optional: g_T, to place new text (user-written missions) in the aligned space
    mission_space.npz        optional: the space user-written missions are scored in when it is not the aligned
                             one (`MissionSpace`)
    manifest.sig             optional: an Ed25519 signature of manifest.json (`packetclip.signing`); the one file
                             the manifest does not list, since it cannot hold its own signature's hash

A file on disk that the manifest does not list (other than the signature) is refused, not ignored: whatever sits
in a bundle folder may be loaded by some later version, so everything in it must be covered by the hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.context import RESPONDER_CONNECTIONS, RESPONDER_WINDOW
from packetclip.featurizer import FEATURIZER_VERSION

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "packetclip-bundle/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"  # beside the manifest, never listed in it; read by packetclip.signing
CONCEPTS_NAME = "concepts.json"
DESCRIPTIONS_NPZ = "descriptions.npz"
DESCRIPTIONS_JSON = "descriptions.json"
MISSIONS_DIR = "missions"
FIXTURES_DIR = "fixtures"
TEXT_HEAD_NAME = (
    "text_head.npz"  # optional: g_T, to place new text (user-defined missions) in the aligned space
)
MISSION_SPACE_NAME = "mission_space.npz"  # optional: see `MissionSpace`
PARITY_TOLERANCE = 1e-4

REQUIRED_KEYS: tuple[str, ...] = (
    "format",
    "name",
    "version",
    "created",
    "featurizer_version",
    "featurizer",
    "context",
    "classes",
    "missions",
    "models",
    "files",
    "data_card",
    "metrics",
    "training",
)
MODEL_KEYS: tuple[str, ...] = ("file", "fixture", "inputs", "outputs", "parameters", "flops_per_packet")
CLASS_KEYS: tuple[str, ...] = ("coarse", "fine", "fine_to_coarse")
CONCEPT_KINDS: tuple[str, ...] = ("key", "associated")

# Names of a bundle and of its roles end up in folder and file names: keep them to a portable alphabet.
BUNDLE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ROLE_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Archive limits: the default bundle is ≤ 15 MB; these leave room for bigger ones and stop a crafted archive
# from filling the disk or the inode table.
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MAX_ARCHIVE_MEMBERS = 10_000
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # far above any manifest (tens of KB); read no more when comparing one
_HASH_CHUNK = 1024 * 1024  # bytes hashed per read: large files are streamed, never held whole


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the bundle and the file at fault."""


@dataclass(frozen=True)
class Bundle:
    """An opened bundle: where its files are, and its manifest. Properties read the manifest (`concepts`
    reads concepts.json)."""

    root: Path  # the folder holding manifest.json (for an archive: its extraction in the cache)
    manifest: dict[str, Any]
    source: Path  # what the caller opened (folder or archive): the name used in messages

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def created(self) -> str:
        return str(self.manifest["created"])

    @property
    def coarse_classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"]["coarse"])

    @property
    def fine_classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"]["fine"])

    @property
    def fine_to_coarse(self) -> dict[str, str]:
        return dict(self.manifest["classes"]["fine_to_coarse"])

    @property
    def missions(self) -> tuple[str, ...]:
        return tuple(self.manifest["missions"])

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.manifest["models"])

    @property
    def model_paths(self) -> dict[str, Path]:
        """Role → path of its ONNX file."""
        return {role: self.root / spec["file"] for role, spec in self.manifest["models"].items()}

    @property
    def fixture_paths(self) -> dict[str, Path]:
        """Role → path of its parity fixture."""
        return {role: self.root / spec["fixture"] for role, spec in self.manifest["models"].items()}

    @property
    def mission_paths(self) -> dict[str, Path]:
        """Mission name → path of its YAML copy inside the bundle."""
        return {name: self.root / MISSIONS_DIR / f"{name}.yaml" for name in self.missions}

    @property
    def concepts(self) -> list[dict[str, str]]:
        return load_concepts(self)

    @property
    def featurizer(self) -> dict[str, Any]:
        return dict(self.manifest["featurizer"])

    @property
    def context_slots(self) -> int:
        return int(self.manifest["context"]["slots"])

    @property
    def context_features(self) -> tuple[str, ...]:
        return tuple(self.manifest["context"]["features"])

    @property
    def attack_threshold(self) -> float | None:
        """The decision rule's threshold: a connection is an attack only when 1 - P(benign) reaches it (then the
        most likely attack class is its label); None: the most likely coarse class is the label."""
        decision = self.manifest.get("decision") or {}
        value = decision.get("attack_threshold")
        return None if value is None else float(value)

    @property
    def responder_features(self) -> tuple[str, ...]:
        """The responder features its reasoner reads, in order; () for a bundle from before them."""
        return tuple(self.manifest["context"].get("responder_features", ()))

    @property
    def responder_window(self) -> tuple[float, int]:
        """(seconds, connections kept per responder) of the responder window its reasoner was trained with."""
        context = self.manifest["context"]
        return (
            float(context.get("responder_window", RESPONDER_WINDOW)),
            int(context.get("responder_connections", RESPONDER_CONNECTIONS)),
        )

    def model_io(self, role: str) -> dict[str, dict[str, Any]]:
        """{"inputs": {name: {"dtype", "shape"}}, "outputs": {...}} of one model, as the manifest lists them."""
        spec = self._model(role)
        return {"inputs": spec["inputs"], "outputs": spec["outputs"]}

    def _model(self, role: str) -> dict[str, Any]:
        try:
            return dict(self.manifest["models"][role])
        except KeyError:
            raise BundleError(
                f"bundle {self.source}: no model {role!r} (roles: {', '.join(self.roles)})"
            ) from None


def default_bundle_path() -> Path:
    """Where the bundle embedded in the package lives (it may not exist; `load_bundle` then says so)."""
    return Path(str(resources.files("packetclip") / "models" / "default"))


def default_cache_dir() -> Path:
    """Where archives are extracted: $PACKETCLIP_CACHE, else $XDG_CACHE_HOME/packetclip, else ~/.cache/packetclip."""
    if os.environ.get("PACKETCLIP_CACHE"):
        return Path(os.environ["PACKETCLIP_CACHE"]) / "bundles"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "packetclip" / "bundles"


def load_bundle(path: str | os.PathLike[str], verify: bool = True, cache_dir: Path | None = None) -> Bundle:
    """Open a bundle folder or `.tar.gz`; raises `BundleError` naming the bundle and the file at fault.

    The manifest's structure, the featurizer version and the class vocabulary are always checked (they are cheap
    and a mismatch means wrong verdicts). `verify` also hashes every file and refuses missing and unlisted ones.
    """
    source = Path(path)
    if source.is_dir():
        return _open_folder(source, source, verify)
    if source.is_file() and _is_archive(source):
        return _open_archive(source, verify, cache_dir or default_cache_dir())
    if source.exists():
        raise BundleError(f"bundle {source}: not a bundle folder or a .tar.gz archive")
    raise BundleError(f"no bundle at {source}")


def _open_folder(root: Path, source: Path, verify: bool) -> Bundle:
    manifest = read_manifest(root, source)
    _check_compatible(manifest, source)
    if verify:
        verify_files(root, manifest, source)
    return Bundle(root=root, manifest=manifest, source=source)


def read_manifest(root: Path, source: Path | None = None) -> dict[str, Any]:
    """The parsed and structurally checked `manifest.json` of a bundle folder."""
    source = source or root
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"bundle {source}: {MANIFEST_NAME}: missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {source}: {MANIFEST_NAME}: not valid JSON ({exc})") from exc
    problems = manifest_problems(manifest)
    if problems:
        raise BundleError(f"bundle {source}: {MANIFEST_NAME}: " + "; ".join(problems))
    return dict(manifest)


def manifest_problems(manifest: object) -> list[str]:
    """Every structural problem of a manifest (empty when it is well-formed)."""
    if not isinstance(manifest, dict):
        return [f"expected a JSON object, got {type(manifest).__name__}"]
    problems = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in manifest]
    if problems:
        return problems
    if manifest["format"] != BUNDLE_FORMAT:
        problems.append(f"format {manifest['format']!r} is not {BUNDLE_FORMAT!r}")
    for key in ("name", "version"):
        if not isinstance(manifest[key], str) or not BUNDLE_NAME_RE.match(manifest[key]):
            problems.append(f"{key} {manifest[key]!r} must be letters, digits, '.', '_' and '-'")
    for key in ("featurizer", "context", "classes", "models", "files", "data_card", "metrics", "training"):
        if not isinstance(manifest[key], dict):
            problems.append(f"{key} must be an object")
    if problems:
        return problems
    problems += [f"classes: missing key {k!r}" for k in CLASS_KEYS if k not in manifest["classes"]]
    if not isinstance(manifest["context"].get("slots"), int) or "features" not in manifest["context"]:
        problems.append("context must hold an integer 'slots' and a 'features' list")
    decision = manifest.get("decision", {})
    threshold = decision.get("attack_threshold") if isinstance(decision, dict) else "not an object"
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1
    ):
        problems.append(f"decision: attack_threshold must be a number in (0, 1], got {threshold!r}")
    responder = manifest["context"].get("responder_features", [])
    if not isinstance(responder, list) or not all(isinstance(name, str) for name in responder):
        problems.append("context: responder_features must be a list of names")
    for key in ("responder_window", "responder_connections"):
        value = manifest["context"].get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append(f"context: {key} must be a positive number")
    if not isinstance(manifest["missions"], list) or not all(
        isinstance(m, str) for m in manifest["missions"]
    ):
        problems.append("missions must be a list of names")
    problems += _file_table_problems(manifest["files"])
    for role, spec in manifest["models"].items():
        problems += _model_problems(role, spec, manifest["files"])
    return problems


def _file_table_problems(files: dict[str, Any]) -> list[str]:
    problems = []
    for relative, digest in files.items():
        if _unsafe_relative(relative) or relative in (MANIFEST_NAME, SIGNATURE_NAME):
            problems.append(f"files: {relative!r} is not a plain relative path inside the bundle")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            problems.append(f"files: {relative!r} has no sha256 hex digest")
    return problems


def _model_problems(role: str, spec: object, files: dict[str, Any]) -> list[str]:
    if not ROLE_RE.match(role):
        return [f"models: role {role!r} must be lower-case letters, digits and _"]
    if not isinstance(spec, dict):
        return [f"models.{role}: expected an object"]
    problems = [f"models.{role}: missing key {key!r}" for key in MODEL_KEYS if key not in spec]
    if problems:
        return problems
    for key in ("file", "fixture"):
        if spec[key] not in files:
            problems.append(f"models.{role}.{key} {spec[key]!r} is not listed in files")
    for key in ("inputs", "outputs"):
        tensors = spec[key]
        if not isinstance(tensors, dict) or not tensors:
            problems.append(f"models.{role}.{key} must name at least one tensor")
            continue
        for tensor, info in tensors.items():
            if not isinstance(info, dict) or not {"dtype", "shape"} <= set(info):
                problems.append(f"models.{role}.{key}.{tensor} needs 'dtype' and 'shape'")
    return problems


def _unsafe_relative(relative: object) -> bool:
    """True for anything but a plain relative POSIX path that stays inside the folder."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\x00" in relative:
        return True
    parts = PurePosixPath(relative).parts
    return relative.startswith("/") or any(part in ("..", ".", "") for part in parts) or len(parts) == 0


def _check_compatible(manifest: dict[str, Any], source: Path) -> None:
    """The featurizer and the class vocabulary must be this runtime's: anything else gives wrong verdicts."""
    if str(manifest["featurizer_version"]) != FEATURIZER_VERSION:
        raise BundleError(
            f"bundle {source}: {MANIFEST_NAME}: featurizer version {manifest['featurizer_version']!r} differs "
            f"from this runtime's {FEATURIZER_VERSION!r}; use a bundle exported for featurizer "
            f"{FEATURIZER_VERSION!r} or the packetclip release that matches the bundle"
        )
    window = manifest["featurizer"].get("window")
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int | float) or not 0.0 < window < float("inf")
    ):
        raise BundleError(
            f"bundle {source}: {MANIFEST_NAME}: featurizer.window {window!r} is not a positive number of seconds"
        )
    classes = manifest["classes"]
    expected = {
        "coarse": list(COARSE_CLASSES),
        "fine": list(FINE_CLASSES),
        "fine_to_coarse": dict(FINE_TO_COARSE),
    }
    for key, value in expected.items():
        if classes[key] != value:
            raise BundleError(
                f"bundle {source}: {MANIFEST_NAME}: classes.{key} {classes[key]!r} differ from this runtime's "
                f"{value!r}"
            )


def verify_files(root: Path, manifest: Mapping[str, Any], source: Path | None = None) -> None:
    """Every listed file exists inside `root` with its sha256, and no other file is there (but the manifest and
    its signature, which `packetclip.signing` checks)."""
    source = source or root
    resolved_root = root.resolve()
    listed: dict[str, str] = manifest["files"]
    total = 0
    for relative in sorted(listed):
        path = root / relative
        if path.is_symlink() or not path.resolve().is_relative_to(resolved_root):
            raise BundleError(f"bundle {source}: {relative}: points outside the bundle (or is a link)")
        if not path.is_file():
            raise BundleError(f"bundle {source}: {relative}: listed in the manifest but missing")
        total += path.stat().st_size
    if total > MAX_ARCHIVE_BYTES:  # before reading any of it: a folder is held to an archive's limit
        raise BundleError(
            f"bundle {source}: its files hold {total:,} bytes, more than a bundle may ({MAX_ARCHIVE_BYTES:,})"
        )
    for relative, digest in sorted(listed.items()):
        path = root / relative
        actual = sha256_file(path)
        if actual != digest:
            raise BundleError(
                f"bundle {source}: {relative}: sha256 {actual} differs from the manifest's {digest}"
            )
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            continue
        if relative not in (MANIFEST_NAME, SIGNATURE_NAME) and relative not in listed:
            raise BundleError(
                f"bundle {source}: {relative}: not listed in the manifest (unlisted files are refused)"
            )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- archives -----------------------------------------------------------------------------------------------


def _is_archive(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz"))


def _open_archive(archive: Path, verify: bool, cache_dir: Path) -> Bundle:
    """Extract into `<cache>/<sha256 of the archive>/` once; a cached copy that fails verification is redone."""
    key = sha256_file(archive)
    target = cache_dir / key
    if target.is_dir():
        try:
            folder = _single_top_folder(target, archive)
            # the cache is a folder anyone with write access could have filled: with verify, its manifest must be
            # the archive's own (whose hashes then cover every file), not merely consistent with itself
            if verify and (folder / MANIFEST_NAME).read_bytes() != _archive_manifest(archive):
                raise BundleError(f"bundle {archive}: the cached {MANIFEST_NAME} is not the archive's")
            return _open_folder(folder, archive, verify)
        except (BundleError, OSError) as exc:
            log.warning("cached extraction of %s is unusable (%s); extracting again", archive, exc)
            shutil.rmtree(target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=cache_dir))
    try:
        extract_archive(archive, staging)
        try:
            staging.rename(target)
        except OSError:  # another process extracted the same archive meanwhile: use theirs
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _open_folder(_single_top_folder(target, archive), archive, verify)


def _archive_manifest(archive: Path) -> bytes:
    """The bytes of the archive's `<top folder>/manifest.json` (read from the stream, nothing written)."""
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar:
            parts = [part for part in PurePosixPath(member.name).parts if part != "."]
            if len(parts) == 2 and parts[1] == MANIFEST_NAME and member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    return handle.read(MAX_MANIFEST_BYTES + 1)
    raise BundleError(f"bundle {archive}: no {MANIFEST_NAME} in its top folder")


def _single_top_folder(extracted: Path, archive: Path) -> Path:
    entries = list(extracted.iterdir())
    if len(entries) != 1 or not entries[0].is_dir():
        raise BundleError(
            f"bundle {archive}: expected one top folder in the archive, found {len(entries)} entries"
        )
    return entries[0]


def extract_archive(archive: Path, destination: Path) -> Path:
    """Extract a bundle archive into `destination` without trusting it; returns the bundle's top folder.

    Only regular files and folders under one top folder are accepted: absolute names, `..`, links, devices,
    duplicate names, more than `MAX_ARCHIVE_MEMBERS` members or `MAX_ARCHIVE_BYTES` bytes are refused. Members
    are checked and written in one pass over the stream (a gzip stream seeks backwards only by re-reading it);
    each member is checked before anything of it is written, so a refusal leaves only what `destination`
    already held plus earlier, safe members: callers extract into a staging folder they remove on error.
    """
    members = _MemberCheck(archive)
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                relative = members.check(member)
                _extract_member(tar, member, destination / Path(*relative.parts), archive)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"bundle {archive}: unreadable archive ({exc})") from exc
    if members.top is None:
        raise BundleError(f"bundle {archive}: the archive is empty")
    return destination / members.top


@dataclass
class _MemberCheck:
    """What an archive's members may be, and the running totals that bound it."""

    archive: Path
    top: str | None = None  # the single top folder, set by the first member
    count: int = 0
    total_bytes: int = 0
    seen: set[PurePosixPath] = field(default_factory=set)

    def check(self, member: tarfile.TarInfo) -> PurePosixPath:
        """The member's safe relative path, or `BundleError` naming the archive and the member."""
        name, where = member.name, f"bundle {self.archive}: {member.name}"
        self.count += 1
        self.total_bytes += max(member.size, 0)
        if self.count > MAX_ARCHIVE_MEMBERS:
            raise BundleError(f"bundle {self.archive}: more than {MAX_ARCHIVE_MEMBERS} members")
        if self.total_bytes > MAX_ARCHIVE_BYTES:
            raise BundleError(f"bundle {self.archive}: more than {MAX_ARCHIVE_BYTES} bytes unpacked")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise BundleError(f"{where}: absolute path in the archive")
        parts = [part for part in PurePosixPath(name).parts if part != "."]
        if ".." in parts or "\\" in name or not parts:
            raise BundleError(f"{where}: path leaves the bundle folder")
        if not (member.isfile() or member.isdir()):
            raise BundleError(f"{where}: links, devices and other special members are refused")
        self.top = self.top or parts[0]
        if parts[0] != self.top:
            raise BundleError(f"{where}: outside the archive's single top folder {self.top!r}")
        if member.isfile() and len(parts) == 1:
            raise BundleError(f"{where}: a file outside the archive's top folder")
        relative = PurePosixPath(*parts)
        if relative in self.seen:
            raise BundleError(f"{where}: appears twice in the archive")
        self.seen.add(relative)
        return relative


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, archive: Path) -> None:
    if member.isdir():
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tar.extractfile(member)
    if handle is None:
        raise BundleError(f"bundle {archive}: {member.name}: unreadable member")
    with handle, path.open("xb") as out:
        shutil.copyfileobj(handle, out, _HASH_CHUNK)


# --- contents -----------------------------------------------------------------------------------------------


def load_concepts(bundle: Bundle) -> list[dict[str, str]]:
    """`concepts.json`: one {"mission", "concept", "kind"} per reasoner concept output, in output order."""
    data = _read_json(bundle, CONCEPTS_NAME)
    if not isinstance(data, list):
        raise BundleError(f"bundle {bundle.source}: {CONCEPTS_NAME}: expected a list")
    concepts: list[dict[str, str]] = []
    for index, entry in enumerate(data):
        if (
            not isinstance(entry, dict)
            or not all(isinstance(entry.get(k), str) for k in ("mission", "concept", "kind"))
            or entry["kind"] not in CONCEPT_KINDS
            or entry["mission"] not in bundle.missions
        ):
            raise BundleError(
                f"bundle {bundle.source}: {CONCEPTS_NAME}: entry {index} {entry!r} needs a mission of the bundle, "
                f"a concept and a kind in {CONCEPT_KINDS}"
            )
        concepts.append({"mission": entry["mission"], "concept": entry["concept"], "kind": entry["kind"]})
    return concepts


def load_descriptions(bundle: Bundle) -> tuple[list[str], list[str], np.ndarray]:
    """The description bank: (texts, fine class name of each text, float32 (T, D) unit embeddings)."""
    data = _read_json(bundle, DESCRIPTIONS_JSON)
    if not isinstance(data, dict) or not isinstance(data.get("texts"), list) or "classes" not in data:
        raise BundleError(f"bundle {bundle.source}: {DESCRIPTIONS_JSON}: needs 'texts' and 'classes'")
    texts = [str(text) for text in data["texts"]]
    classes = list(data["classes"])
    if classes != list(bundle.fine_classes):
        raise BundleError(
            f"bundle {bundle.source}: {DESCRIPTIONS_JSON}: classes {classes!r} differ from the manifest's fine classes"
        )
    embeddings, fine = _read_description_arrays(bundle)
    if embeddings.ndim != 2 or fine.shape != (len(texts),) or len(embeddings) != len(texts):
        raise BundleError(
            f"bundle {bundle.source}: {DESCRIPTIONS_NPZ}: embeddings {embeddings.shape} and fine {fine.shape} "
            f"do not match {len(texts)} texts"
        )
    if len(fine) and (fine.min() < 0 or fine.max() >= len(classes)):
        raise BundleError(f"bundle {bundle.source}: {DESCRIPTIONS_NPZ}: fine class index out of range")
    return texts, [classes[i] for i in fine.tolist()], embeddings.astype(np.float32)


def load_text_head(bundle: Bundle) -> tuple[np.ndarray, np.ndarray, float] | None:
    """g_T of the bundle as (weight float32 (D, text_dim), bias (D,), logit scale), or None when it has none."""
    path = bundle.root / TEXT_HEAD_NAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            weight, bias, scale = (
                npz["weight"],
                npz["bias"],
                float(np.asarray(npz["logit_scale"]).reshape(-1)[0]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"bundle {bundle.source}: {TEXT_HEAD_NAME}: unreadable ({exc})") from exc
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise BundleError(
            f"bundle {bundle.source}: {TEXT_HEAD_NAME}: weight {weight.shape}, bias {bias.shape}"
        )
    return weight.astype(np.float32), bias.astype(np.float32), scale


@dataclass(frozen=True)
class MissionSpace:
    """A second language-aligned space, used only to score user-written missions: heads trained with one positive
    per pair (CLIP's target), which keep apart connections of one class that the verdict's space, trained to pull
    a class together, no longer separates (an NTP flood among UDP floods). `packet_weight`/`packet_bias` map the
    encoder's connection embedding (E) into it, `text_weight`/`text_bias` map the text encoder's vectors, and
    `prototypes` holds one unit row per fine class (the normalised mean of the class's description bank texts
    there)."""

    packet_weight: np.ndarray  # float32 (D, E)
    packet_bias: np.ndarray  # float32 (D,)
    text_weight: np.ndarray  # float32 (D, text_dim)
    text_bias: np.ndarray  # float32 (D,)
    logit_scale: float
    prototypes: np.ndarray  # float32 (K, D), the bundle's fine classes in order


def load_mission_space(bundle: Bundle) -> MissionSpace | None:
    """The bundle's mission space (`MISSION_SPACE_NAME`), or None when it scores user missions in the aligned
    space."""
    path = bundle.root / MISSION_SPACE_NAME
    if not path.is_file():
        return None
    names = ("packet_weight", "packet_bias", "text_weight", "text_bias", "prototypes")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name], np.float32) for name in names}
            scale = float(np.asarray(npz["logit_scale"]).reshape(-1)[0])
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise BundleError(f"bundle {bundle.source}: {MISSION_SPACE_NAME}: unreadable ({exc})") from exc
    dim = arrays["prototypes"].shape[-1] if arrays["prototypes"].ndim == 2 else -1
    shapes_agree = (
        arrays["prototypes"].shape == (len(bundle.fine_classes), dim)
        and all(
            arrays[name].ndim == 2 and arrays[name].shape[0] == dim
            for name in ("packet_weight", "text_weight")
        )
        and arrays["packet_bias"].shape == arrays["text_bias"].shape == (dim,)
    )
    if not shapes_agree:
        shapes = ", ".join(f"{name} {arrays[name].shape}" for name in names)
        raise BundleError(
            f"bundle {bundle.source}: {MISSION_SPACE_NAME}: shapes do not agree ({shapes}; "
            f"{len(bundle.fine_classes)} fine classes)"
        )
    return MissionSpace(
        arrays["packet_weight"],
        arrays["packet_bias"],
        arrays["text_weight"],
        arrays["text_bias"],
        scale,
        arrays["prototypes"],
    )


def _read_description_arrays(bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    path = bundle.root / DESCRIPTIONS_NPZ
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["embeddings"], npz["fine"]
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"bundle {bundle.source}: {DESCRIPTIONS_NPZ}: unreadable ({exc})") from exc


def _read_json(bundle: Bundle, relative: str) -> Any:
    try:
        return json.loads((bundle.root / relative).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {bundle.source}: {relative}: unreadable ({exc})") from exc


# --- parity fixtures ----------------------------------------------------------------------------------------


def onnx_session(model_path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session limited to `threads` threads (one by default: a sensor shares its cores)."""
    try:
        import onnxruntime as ort  # imported here: reading and verifying a bundle must work without it
    except ImportError as exc:
        raise ImportError("running bundle models needs onnxruntime (pip install onnxruntime)") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def max_abs_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| in float64; NaN where only one side is NaN counts as an infinite difference."""
    a = np.asarray(got, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        difference = np.where(both_nan, 0.0, np.abs(a - b))
    difference = np.where(np.isnan(difference), np.inf, difference)
    return float(difference.max())


def check_fixtures(bundle: Bundle, tolerance: float = PARITY_TOLERANCE) -> dict[str, float]:
    """Run every model on its fixture's inputs (onnxruntime, one thread); role → max |output - fixture|.

    Raises `BundleError` naming the model, the output and the difference when it exceeds `tolerance`.
    """
    results: dict[str, float] = {}
    for role in bundle.roles:
        spec = bundle._model(role)
        inputs, expected = _fixture_arrays(bundle, role, spec)
        session = onnx_session(bundle.root / spec["file"])
        names = list(spec["outputs"])
        got = session.run(names, inputs)
        worst = 0.0
        for name, value in zip(names, got, strict=True):
            difference = max_abs_difference(value, expected[name])
            if difference > tolerance:
                raise BundleError(
                    f"bundle {bundle.source}: {spec['file']}: output {name!r} differs from {spec['fixture']} by "
                    f"{difference:.3g} > {tolerance:g}"
                )
            worst = max(worst, difference)
        results[role] = worst
        log.info("bundle %s: %s matches its fixture (max |difference| %.2e)", bundle.source, role, worst)
    return results


def _fixture_arrays(
    bundle: Bundle, role: str, spec: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    fixture = spec["fixture"]
    try:
        with np.load(bundle.root / fixture, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {bundle.source}: {fixture}: unreadable ({exc})") from exc
    missing = [name for name in [*spec["inputs"], *spec["outputs"]] if name not in arrays]
    if missing:
        raise BundleError(f"bundle {bundle.source}: {fixture}: missing arrays {missing} for model {role!r}")
    inputs = {}
    for name, info in spec["inputs"].items():
        if arrays[name].dtype != np.dtype(info["dtype"]):
            raise BundleError(
                f"bundle {bundle.source}: {fixture}: input {name!r} is {arrays[name].dtype}, "
                f"the model takes {info['dtype']}"
            )
        inputs[name] = arrays[name]
    return inputs, {name: arrays[name] for name in spec["outputs"]}
