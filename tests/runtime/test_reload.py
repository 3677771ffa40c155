"""Hot reload between batches (`packetclip.reload`): an activation the engine cannot load leaves the old model
serving and is reported as failed (one log line when the operator can fix it, a traceback for a defect); a good
one is served from then on; no change, no reload."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from packetclip.engine import Engine
from packetclip.reload import Reload, reload_if_activated
from tests.runtime.test_engine import runtime_bundle


class Activation:
    """The watcher's two questions, answered as a test sets them."""

    def __init__(self, path: Path):
        self.path, self.pending = path, False

    def activate(self, path: Path) -> None:
        self.path, self.pending = path, True

    def changed(self) -> bool:
        pending, self.pending = self.pending, False
        return pending

    def active_bundle_path(self) -> Path:
        return self.path


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def test_a_failed_activation_keeps_the_old_model_and_a_good_one_is_served(
    bundle_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(bundle_path)
    served = engine.model_version
    watcher = Activation(bundle_path)
    try:
        assert reload_if_activated(engine, None) is Reload.UNCHANGED
        assert reload_if_activated(engine, watcher) is Reload.UNCHANGED

        broken = tmp_path / "broken"
        shutil.copytree(bundle_path, broken)
        (broken / "reasoner.onnx").write_bytes(b"not a model")  # its manifest hash no longer matches
        watcher.activate(broken)
        with caplog.at_level(logging.ERROR, logger="packetclip.reload"):
            assert reload_if_activated(engine, watcher) is Reload.FAILED
        assert engine.model_version == served
        [record] = [r for r in caplog.records if r.name == "packetclip.reload"]
        # the operator's to fix: one line, no traceback
        assert f"still serving {served}" in record.getMessage() and not record.exc_info

        watcher.activate(tmp_path / "missing")
        assert reload_if_activated(engine, watcher) is Reload.FAILED

        copy = tmp_path / "copy"
        shutil.copytree(bundle_path, copy)
        watcher.activate(copy)
        assert reload_if_activated(engine, watcher) is Reload.RELOADED
        assert engine.model_version == served  # the same bundle, now from the new path
    finally:
        engine.close()


def test_a_defect_in_reloading_is_logged_with_its_traceback_and_never_raised(
    bundle_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(bundle_path)
    watcher = Activation(bundle_path)

    def broken_reload(path: Path) -> None:
        raise RuntimeError("a defect")

    monkeypatch.setattr(engine, "reload", broken_reload)
    try:
        watcher.activate(bundle_path)
        with caplog.at_level(logging.ERROR, logger="packetclip.reload"):
            assert reload_if_activated(engine, watcher) is Reload.FAILED
        [record] = [r for r in caplog.records if r.name == "packetclip.reload"]
        assert "a defect" in record.getMessage() and record.exc_info
    finally:
        engine.close()
