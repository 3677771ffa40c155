"""The model store: bundles are verified before they appear, a tampered bundle (one changed byte in any file) is
refused by install, verify and activate while the active bundle keeps serving, activation and rollback are atomic
(a crash at any step leaves a consistent store), and a watcher notices an activation with one stat.

Bundles are exported here from tiny checkpoints, the way the factory exports real ones (tests/export does the
same); `export_test_bundles` is shared with the other runtime tests of the store and of user missions.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packetclip import store as store_module
from packetclip.bundle import BundleError, load_bundle, sha256_file
from packetclip.store import (
    EMBEDDED,
    ActiveModelWatcher,
    BundleNotFound,
    InstallConflict,
    ModelStore,
    StoreError,
)
from tests.support import export_tiny_bundles, hashed_text_vectors

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "dataset-default"
BUNDLE_NAME = "packetclip-test"
VERSIONS = ("2026.11.27-1", "2026.11.27-2")
KEYS = tuple(f"{BUNDLE_NAME}-{v}" for v in VERSIONS)

# every kind of file a bundle holds (manifest included: the store records its hash at install)
TAMPER_TARGETS = (
    "encoder.onnx",
    "reasoner.onnx",
    "fixtures/encoder.npz",
    "fixtures/reasoner.npz",
    "concepts.json",
    "descriptions.json",
    "descriptions.npz",
    "missions/dos.yaml",
    "text_head.npz",
    "manifest.json",
)


def export_test_bundles(
    work: Path,
    versions: tuple[str, ...] = VERSIONS,
    encode_texts: Callable[[list[str]], np.ndarray] | None = None,
) -> list[Path]:
    """One bundle per version from the same tiny checkpoints (a few seconds each)."""
    return export_tiny_bundles(work, versions, encode_texts or hashed_text_vectors, name=BUNDLE_NAME)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return export_test_bundles(tmp_path_factory.mktemp("bundles"))


EMBEDDED_VERSION = "2026.11.27-0"


def embedded_stand_in(bundle: Path, folder: Path) -> Path:
    """A copy of `bundle` under another version, standing in for the bundle embedded in the package (which a
    checkout may not hold yet): the manifest is the one file its hashes do not cover."""
    copy = shutil.copytree(bundle, folder)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["version"] = EMBEDDED_VERSION
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, bundles: list[Path]) -> Path:
    return embedded_stand_in(bundles[0], tmp_path_factory.mktemp("embedded") / "default")


@pytest.fixture(autouse=True)
def use_embedded_stand_in(monkeypatch: pytest.MonkeyPatch, embedded: Path) -> None:
    monkeypatch.setattr(store_module, "default_bundle_path", lambda: embedded)


def flip_byte(path: Path) -> None:
    """Change one byte in the middle of a file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def make_archive(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def serving(store: ModelStore) -> str:
    """The version the active bundle would serve, loaded and verified as a sidecar loads it."""
    return load_bundle(store.active_bundle_path(), verify=True).version


@pytest.fixture
def store(tmp_path: Path, bundles: list[Path]) -> ModelStore:
    """A store with version 1 installed and active, version 2 installed but not active."""
    model_store = ModelStore(tmp_path / "store")
    model_store.install(bundles[0], activate=True)
    model_store.install(bundles[1])
    return model_store


def test_install_from_folder_and_tarball_copies_a_verified_bundle(
    tmp_path: Path, bundles: list[Path], embedded: Path
) -> None:
    """A folder and a .tar.gz install into bundles/<name>-<version>/ byte for byte; nothing is activated, the
    embedded default stays active, and no staging debris remains."""
    model_store = ModelStore(tmp_path / "store")
    first = model_store.install(bundles[0])
    second = model_store.install(make_archive(bundles[1], tmp_path / "v2.tar.gz"))
    assert (first.bundle.key, second.bundle.key) == KEYS
    assert not first.already_installed and not second.already_installed
    for source, key in zip(bundles, KEYS, strict=True):
        installed = model_store.root / "bundles" / key
        assert sorted(p.relative_to(installed) for p in installed.rglob("*")) == sorted(
            p.relative_to(source) for p in source.rglob("*")
        )
        assert sha256_file(installed / "encoder.onnx") == sha256_file(source / "encoder.onnx")
    listed = {entry.key: entry for entry in model_store.list()}
    assert set(listed) == {*KEYS, EMBEDDED}
    assert listed[EMBEDDED].active and not listed[KEYS[0]].active
    assert model_store.active_bundle_path() == embedded
    assert list((model_store.root / ".staging").iterdir()) == []


def test_installing_again_is_a_no_op_and_other_contents_under_the_same_version_are_refused(
    tmp_path: Path, store: ModelStore, bundles: list[Path]
) -> None:
    again = store.install(bundles[0])
    assert again.already_installed
    # a valid bundle (hashes consistent) whose contents differ, under the installed name and version
    altered = shutil.copytree(bundles[0], tmp_path / "altered")
    mission = altered / "missions" / "dos.yaml"
    mission.write_text(mission.read_text() + "# edited\n")
    manifest = json.loads((altered / "manifest.json").read_text())
    manifest["files"]["missions/dos.yaml"] = sha256_file(mission)
    (altered / "manifest.json").write_text(json.dumps(manifest))
    load_bundle(altered, verify=True)  # it is a valid bundle in itself
    with pytest.raises(InstallConflict, match="different file hashes"):
        store.install(altered)
    assert sha256_file(store.root / "bundles" / KEYS[0] / "missions" / "dos.yaml") != sha256_file(mission)


@pytest.mark.parametrize("relative", TAMPER_TARGETS)
def test_a_tampered_source_is_refused_by_install_and_never_appears(
    tmp_path: Path, bundles: list[Path], relative: str
) -> None:
    model_store = ModelStore(tmp_path / "store")
    model_store.install(bundles[0], activate=True)
    tampered = shutil.copytree(bundles[1], tmp_path / "tampered")
    if relative == "manifest.json":
        # a manifest's own bytes have no reference at install; what a changed byte there must not do is
        # smuggle a changed file in: alter one listed hash
        manifest = json.loads((tampered / relative).read_text())
        digest = manifest["files"]["encoder.onnx"]
        manifest["files"]["encoder.onnx"] = ("0" if digest[0] != "0" else "1") + digest[1:]
        (tampered / relative).write_text(json.dumps(manifest))
    else:
        flip_byte(tampered / relative)
    for source in (tampered, make_archive(tampered, tmp_path / "tampered.tar.gz")):
        with pytest.raises(BundleError, match=str(source).replace(".", r"\.")):
            model_store.install(source, activate=True)
        assert [e.key for e in model_store.list()] == [KEYS[0], EMBEDDED]
        assert model_store.active_key() == KEYS[0] and serving(model_store) == VERSIONS[0]
    assert list((model_store.root / ".staging").iterdir()) == []


@pytest.mark.parametrize("relative", TAMPER_TARGETS)
def test_a_bundle_tampered_after_install_is_refused_by_verify_and_activate(
    store: ModelStore, relative: str
) -> None:
    """One changed byte in any file of an installed bundle: verify and activate refuse it, naming the file; the
    active bundle stays and keeps serving."""
    store.verify(KEYS[1])  # intact first: the refusal below is the byte's doing
    before = store.active_bundle_path()
    flip_byte(store.root / "bundles" / KEYS[1] / relative)
    with pytest.raises(BundleError, match=relative.replace(".", r"\.")):
        store.verify(KEYS[1])
    with pytest.raises(BundleError, match=relative.replace(".", r"\.")):
        store.activate(KEYS[1])
    assert store.active_key() == KEYS[0]
    assert store.active_bundle_path() == before
    assert serving(store) == VERSIONS[0]


def test_activate_and_rollback_walk_the_history(store: ModelStore, embedded: Path) -> None:
    assert store.active_key() == KEYS[0]
    entry = store.activate(VERSIONS[1])  # by version; by key and by name are tested below
    assert entry.key == KEYS[1] and entry.active and serving(store) == VERSIONS[1]
    assert json.loads(store.pointer_path.read_text())["bundle"] == KEYS[1]
    assert store.rollback().key == KEYS[0] and serving(store) == VERSIONS[0]
    assert store.rollback().key == EMBEDDED
    assert store.active_bundle_path() == embedded and serving(store) == EMBEDDED_VERSION
    with pytest.raises(StoreError, match="no earlier activation"):
        store.rollback()
    assert store.active_key() is None


def test_references_by_key_name_and_version(store: ModelStore) -> None:
    assert store.resolve(KEYS[1]) == store.root / "bundles" / KEYS[1]
    assert store.resolve(VERSIONS[0]) == store.root / "bundles" / KEYS[0]
    assert store.resolve(None) == store.root / "bundles" / KEYS[0]  # the active one
    with pytest.raises(StoreError, match="ambiguous"):
        store.activate(BUNDLE_NAME)  # two versions of that name are installed
    with pytest.raises(BundleNotFound, match="install it first"):
        store.activate("no-such-bundle-1")


def test_a_crash_between_history_and_pointer_leaves_a_consistent_store(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """activate writes history, then the pointer. Failing the pointer's replace: the active bundle is unchanged,
    no temporary file is left, and rollback skips the history entry the interrupted activation left."""
    real_replace = os.replace

    def failing_replace(source: str, destination: str) -> None:
        if Path(destination) == store.pointer_path:
            raise OSError("simulated crash")
        real_replace(source, destination)

    monkeypatch.setattr(store_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        store.activate(KEYS[1])
    monkeypatch.setattr(store_module.os, "replace", real_replace)
    assert store.active_key() == KEYS[0] and serving(store) == VERSIONS[0]
    assert not [p.name for p in store.root.iterdir() if p.name.endswith(".tmp")]
    history = json.loads(store.history_path.read_text())["previous"]
    assert history[-1]["bundle"] == KEYS[0]  # the interrupted activation's entry
    assert store.rollback().key == EMBEDDED  # not a "rollback" onto the bundle already active
    store.activate(KEYS[1])
    assert store.rollback().key == EMBEDDED  # KEYS[0] was left by rolling back, so embedded came before


def test_a_crash_between_pointer_and_history_in_rollback_leaves_a_consistent_store(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.activate(KEYS[1])
    real_write = store._write_history

    def crash(history: list[dict[str, object]]) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(store, "_write_history", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.rollback()
    monkeypatch.setattr(store, "_write_history", real_write)
    assert store.active_key() == KEYS[0]  # the pointer was the commit point
    assert store.rollback().key == EMBEDDED  # the stale entry (KEYS[0]) is recognised and skipped


def test_a_crash_while_copying_leaves_nothing_visible(
    tmp_path: Path, bundles: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model_store = ModelStore(tmp_path / "store")
    real_copy = shutil.copyfileobj
    copied: list[object] = []

    def copy_then_crash(source: Any, destination: Any, *args: Any) -> None:
        if len(copied) == 3:
            raise OSError("simulated crash")
        copied.append(source)
        real_copy(source, destination, *args)

    monkeypatch.setattr(store_module.shutil, "copyfileobj", copy_then_crash)
    with pytest.raises(OSError, match="simulated crash"):
        model_store.install(bundles[0])
    monkeypatch.setattr(store_module.shutil, "copyfileobj", real_copy)
    assert [e.key for e in model_store.list()] == [EMBEDDED]
    assert list((model_store.root / ".staging").iterdir()) == []
    assert model_store.install(bundles[0]).bundle.key == KEYS[0]  # and a retry works


def test_the_watcher_sees_each_activation_once(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    watcher = ActiveModelWatcher(store)
    assert not watcher.changed()
    store.activate(KEYS[1])
    assert watcher.changed() and not watcher.changed()
    assert watcher.active_bundle_path() == store.root / "bundles" / KEYS[1]
    store.activate(KEYS[1])  # already active: nothing written, nothing to reload
    assert not watcher.changed()
    store.rollback()
    store.activate(KEYS[1])  # two activations faster than any timestamp granularity: still a change
    assert watcher.changed()

    # cheap enough to call before every batch: one stat of the pointer, nothing opened or read
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("changed() opened a file"))
    assert not watcher.changed()
    assert stats == [str(store.pointer_path)]


def test_a_watcher_on_an_empty_store_sees_the_first_activation(tmp_path: Path, bundles: list[Path]) -> None:
    model_store = ModelStore(tmp_path / "store")
    watcher = ActiveModelWatcher(model_store)
    assert not watcher.changed()
    model_store.install(bundles[0], activate=True)
    assert watcher.changed()


def test_changes_wait_for_the_store_lock(store: ModelStore) -> None:
    """An activation does not write while another process (here: another lock holder) changes the store."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.locked():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    activator = threading.Thread(target=store.activate, args=(KEYS[1],))
    activator.start()
    time.sleep(0.3)
    assert store.active_key() == KEYS[0]  # still waiting for the lock
    release.set()
    holder.join(10)
    activator.join(10)
    assert store.active_key() == KEYS[1]


def test_a_pointer_to_a_missing_bundle_falls_back_to_the_embedded_default(
    store: ModelStore, embedded: Path
) -> None:
    shutil.rmtree(store.root / "bundles" / KEYS[0])
    assert store.active_bundle_path() == embedded


def test_show_summarises_the_manifest(store: ModelStore, bundles: list[Path]) -> None:
    summary = store.show(KEYS[0])
    manifest = json.loads((bundles[0] / "manifest.json").read_text())
    assert summary["active"] and summary["version"] == VERSIONS[0]
    assert summary["metrics"] == {"coarse_mauc": 0.5}
    assert summary["data_card"]["total"] == manifest["data_card"]["counts"]["total"]
    assert summary["missions"] == ["benign", "bruteforce", "dos", "recon"]
    assert summary["sizes"]["files"]["encoder.onnx"] == (bundles[0] / "encoder.onnx").stat().st_size
    assert summary["sizes"]["total_bytes"] == sum(
        (bundles[0] / relative).stat().st_size for relative in manifest["files"]
    )
    assert not store.show(KEYS[1])["active"]


def test_a_command_table_is_left_to_its_command(tmp_path: Path) -> None:
    """`[serve]` belongs to `packetclip serve`'s own reader; the shared settings ignore it, not reject it."""
    from packetclip.config import load_config

    config = tmp_path / "config.toml"
    config.write_text("threads = 2\n[serve]\nbatch_size = 64\n")
    assert load_config(config=config).threads == 2


def test_an_active_bundle_rehashed_in_place_is_refused_by_every_loading_command(store: ModelStore) -> None:
    """A file changed and the manifest's hash list rewritten to match: the bundle's own hashes agree, but the
    manifest is not the one recorded at install, so the store refuses it wherever the active bundle is loaded
    (classify, serve, suricata run and bench resolve it through `active_bundle_path`), as `verify` does."""
    from click.testing import CliRunner

    from packetclip.commands.classify import classify

    folder = store.root / "bundles" / KEYS[0]
    mission = folder / "missions" / "dos.yaml"
    mission.write_text(mission.read_text() + "# changed\n")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["missions/dos.yaml"] = sha256_file(mission)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    load_bundle(folder, verify=True)  # its own hashes agree
    with pytest.raises(BundleError, match="recorded at install"):
        store.active_bundle_path()
    with pytest.raises(BundleError, match="recorded at install"):
        store.verify()
    sample = Path(__file__).resolve().parents[2] / "samples" / "lab-quick" / "capture.pcap"
    result = CliRunner(env={"PACKETCLIP_STORE": str(store.root), "PACKETCLIP_CONFIG": None}).invoke(
        classify, [str(sample), "-o", os.devnull]
    )
    assert result.exit_code == 1 and "recorded at install" in result.output


def test_a_pointer_that_leaves_the_store_is_not_followed(store: ModelStore, embedded: Path) -> None:
    outside = store.root.parent / "elsewhere"
    shutil.copytree(store.root / "bundles" / KEYS[1], outside)
    store.pointer_path.write_text(json.dumps({"bundle": KEYS[1]}))
    assert store.active_bundle_path() == store.root / "bundles" / KEYS[1]  # the pointer as written is read
    for key in ("../../elsewhere", "/tmp", "..", "."):
        store.pointer_path.write_text(json.dumps({"bundle": key}))
        assert store.active_bundle_path() == embedded, key


def test_install_copies_regular_files_with_plain_modes_and_refuses_links(
    tmp_path: Path, bundles: list[Path]
) -> None:
    """Installed copies are 0644 files in 0755 folders whatever the source's modes (a world-writable source must
    not give a world-writable installed model); a symbolic link in the source is refused, never installed."""
    loose = tmp_path / "loose"
    shutil.copytree(bundles[0], loose)
    for path in [loose, *loose.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    model_store = ModelStore(tmp_path / "store")
    installed = model_store.install(loose).bundle.path
    for path in [installed, *installed.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
        assert not path.is_symlink()
    linked = tmp_path / "linked"
    shutil.copytree(bundles[1], linked)
    real = tmp_path / "manifest-elsewhere.json"
    (linked / "manifest.json").rename(real)
    (linked / "manifest.json").symlink_to(real)
    with pytest.raises(BundleError, match="symbolic link"):
        model_store.install(linked)
    assert not (model_store.root / "bundles" / KEYS[1]).exists()
