"""Settings of `packetclip suricata run` that the `[suricata]` table of the config file may hold.

Owns `RunSettings` (each knob, why it exists and its default) and reading the `[suricata]` table of the TOML file
`packetclip.config` finds (`PACKETCLIP_CONFIG`, else the user's or the system's config file). Precedence is the
runtime's: command-line flag > config file > default. The engine's settings (store, threads, batch size,
allowlist, ...) stay the runtime's (`packetclip.config`); the loop's own knobs are `SidecarSettings`
(`packetclip.suricata.sidecar`). It does not run anything.

    [suricata]
    log_format = "json"        # or "text"

An unknown key or a value of the wrong type is an error naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packetclip.config import ConfigError, read_command_table
from packetclip.logs import LOG_FORMATS

TABLE = "suricata"


@dataclass(frozen=True)
class RunSettings:
    """What `packetclip suricata run` takes from the config file besides the engine's settings."""

    log_format: str = "text"  # "json": one JSON object per log line, for journald/log shippers

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"suricata setting log_format must be {_choices(LOG_FORMATS)}, got {self.log_format!r}"
            )

    def updated(self, **values: Any) -> RunSettings:
        """A copy with the values that are not None (command-line flags not given are None)."""
        return replace(self, **{key: value for key, value in values.items() if value is not None})


def _choices(words: tuple[str, ...]) -> str:
    return " or ".join(repr(word) for word in words)


def read_suricata_table(path: Path | None) -> dict[str, Any]:
    """The checked `[suricata]` table of the config file (empty when there is no file or no table)."""
    return read_command_table(path, TABLE, {"log_format": (str,)}, {"log_format": LOG_FORMATS})


def run_settings(config_file: Path | None, **flags: Any) -> RunSettings:
    """Defaults < the config file's `[suricata]` table < flags (None = flag not given)."""
    return RunSettings(**read_suricata_table(config_file)).updated(**flags)
