"""A copy of a bundle with another featurizer window (not a test module).

The window is part of a bundle's manifest (`featurizer.window`); the manifest is not in its own sha256 list
(`files` lists every other file), so a copy with the window changed still verifies. Tests use it so that what
they prove does not depend on which bundle is shipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from packetclip.bundle import MANIFEST_NAME, load_bundle


def windowed_copy(bundle: Path, destination: Path, window: float | None) -> Path:
    """`bundle` copied to `destination` with `featurizer.window` set (None: removed); verified on the way out."""
    if not destination.exists():
        shutil.copytree(bundle, destination)
    manifest_path = destination / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if window is None:
        manifest["featurizer"].pop("window", None)
    else:
        manifest["featurizer"]["window"] = window
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    load_bundle(destination)  # the copy must pass the same checks as any bundle
    return destination
