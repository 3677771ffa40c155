"""Hot reload: what a live sidecar does when the model store's activation changes under it.

Owns the one policy both live sidecars (`packetclip.zeek.service`, `packetclip.suricata.sidecar`) follow between
batches: ask the watcher whether the activation changed, and if it did, reload the engine from the store's
active bundle. A reload that fails, for whatever reason, never stops the sidecar: the engine keeps the bundle it
had (`Engine.reload` swaps only a fully loaded one), the failure is logged with the version still serving, and
the caller is told so that it counts it under its own metric. Failures an operator causes and can fix (a bundle
that does not verify, a store or file that cannot be read: `EXPECTED_FAILURES`) are logged in one line; anything
else is a defect and is logged with its traceback.

It does not notice activations (`packetclip.store.ActiveModelWatcher`), check or load bundles (`packetclip.bundle`,
`Engine.reload`) or keep a sidecar's counters and adapt its settings to the new model (each sidecar does, from
the returned `Reload`).
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from packetclip.bundle import BundleError
from packetclip.store import StoreError

if TYPE_CHECKING:
    from packetclip.engine import Engine
    from packetclip.store import ActiveModelWatcher

log = logging.getLogger(__name__)

# what goes wrong with an activation itself, rather than with this program: logged without a traceback
EXPECTED_FAILURES = (BundleError, StoreError, OSError)


class Reload(enum.Enum):
    UNCHANGED = "unchanged"  # no watcher, or the activation is the one already served
    RELOADED = "reloaded"  # the engine now serves the active bundle
    FAILED = "failed"  # the activation changed, but the engine still serves the bundle it had


def reload_if_activated(engine: Engine, watcher: ActiveModelWatcher | None) -> Reload:
    """Reload `engine` from the store's active bundle when `watcher` says the activation changed (call it between
    batches, from the thread that runs the engine). Never raises for a failed reload: see the module docstring."""
    if watcher is None or not watcher.changed():
        return Reload.UNCHANGED
    path = None
    try:
        path = watcher.active_bundle_path()
        engine.reload(path)
    except Exception as exc:  # a sensor's sidecar must outlive a bad activation; the old model keeps serving
        log.error(
            "model activation%s not applied, still serving %s: %s",
            "" if path is None else f" of {path}",
            engine.model_version,
            exc,
            exc_info=not isinstance(exc, EXPECTED_FAILURES),
        )
        return Reload.FAILED
    log.info("now serving model %s from %s", engine.model_version, path)
    return Reload.RELOADED
