"""Runtime settings of `packetclip`: where the model store is, how many threads and how big a batch.

Owns resolving each setting from its sources and checking the TOML config file. It does not act on the settings
(the model store, the engine and the commands do) and does not write a config file.

Precedence, highest first (the first source that sets a value wins, per setting):

    ====================  ==========================  ===========================  ==============================
    setting               command-line flag           environment variable         config file key / default
    ====================  ==========================  ===========================  ==============================
    store                 --store DIR                 PACKETCLIP_STORE             store = "DIR"
                                                                                   / $XDG_DATA_HOME/packetclip/models
                                                                                   (~/.local/share/packetclip/models)
    threads               --threads N                 PACKETCLIP_THREADS           threads = N        / 1
    batch_size            --batch-size N              PACKETCLIP_BATCH_SIZE        batch_size = N     / 256
    text_encoder          --text-encoder DIR          PACKETCLIP_TEXT_ENCODER      text_encoder = "DIR"
                                                                                   / <store>/text-encoder
    missions              --missions DIR              PACKETCLIP_MISSIONS          missions = "DIR"
                                                                                   / none (no user missions)
    allowlist             --allowlist FILE            PACKETCLIP_ALLOWLIST         allowlist = "FILE"
                                                                                   / none (nothing allowed)
    public_keys           --public-key FILE (repeat)  PACKETCLIP_PUBLIC_KEYS       public_keys = ["FILE", ...]
                          (`models install` only)     (os.pathsep-separated)       / none (no key trusted)
    require_signature     --require-signature         PACKETCLIP_REQUIRE_SIGNATURE require_signature = true
                          (`models install` only)     (1/true/yes or 0/false/no)   / false
    keep_inputs           --keep-inputs FILE          PACKETCLIP_KEEP_INPUTS       keep_inputs = "FILE"
                                                                                   / none (nothing kept)
    keep_inputs_rows                                  PACKETCLIP_KEEP_INPUTS_ROWS  keep_inputs_rows = N
                                                                                   / 100000
    keep_inputs_days                                  PACKETCLIP_KEEP_INPUTS_DAYS  keep_inputs_days = N / 7
    ====================  ==========================  ===========================  ==============================

The config file itself is chosen the same way: `--config FILE` > `PACKETCLIP_CONFIG` > the first of
`$XDG_CONFIG_HOME/packetclip/config.toml` (`~/.config/...`) and `/etc/packetclip/config.toml` that exists. One
file is read, never a merge of several: what an operator sees in the file that won is all there is. A file named
by flag or environment variable must exist; the two standard places may be absent.

The file is flat TOML:

    store = "/var/lib/packetclip/models"   # relative paths are relative to the config file's folder
    threads = 1
    batch_size = 256
    public_keys = ["keys/release.pub.pem"]  # trusted bundle signers (`packetclip.signing`)
    require_signature = true               # installed bundles must be signed by one of them

An unknown key or a value of the wrong type is an error naming the file and the key (a typo must not silently
leave a sensor on defaults).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFIG_ENV = "PACKETCLIP_CONFIG"
SYSTEM_CONFIG = Path("/etc/packetclip/config.toml")

# setting -> its environment variable
ENVIRONMENT: dict[str, str] = {
    "store": "PACKETCLIP_STORE",
    "threads": "PACKETCLIP_THREADS",
    "batch_size": "PACKETCLIP_BATCH_SIZE",
    "text_encoder": "PACKETCLIP_TEXT_ENCODER",
    "missions": "PACKETCLIP_MISSIONS",
    "allowlist": "PACKETCLIP_ALLOWLIST",
    "public_keys": "PACKETCLIP_PUBLIC_KEYS",
    "require_signature": "PACKETCLIP_REQUIRE_SIGNATURE",
    "keep_inputs": "PACKETCLIP_KEEP_INPUTS",
    "keep_inputs_rows": "PACKETCLIP_KEEP_INPUTS_ROWS",
    "keep_inputs_days": "PACKETCLIP_KEEP_INPUTS_DAYS",
}
PATH_SETTINGS = ("store", "text_encoder", "missions", "allowlist", "keep_inputs")
PATH_LIST_SETTINGS = ("public_keys",)  # several paths: a TOML list, os.pathsep-separated in the environment
SWITCH_SETTINGS = ("require_signature",)  # true or false
TRUE_WORDS = ("1", "true", "yes", "on")  # what a switch's environment variable may say, in any case
FALSE_WORDS = ("0", "false", "no", "off")
# tables owned and validated by one command's own settings reader (`packetclip serve` reads `[serve]`,
# `packetclip suricata run` reads `[suricata]`)
COMMAND_TABLES = ("serve", "suricata")
COUNT_SETTINGS = ("threads", "batch_size", "keep_inputs_rows", "keep_inputs_days")
DEFAULT_THREADS = 1  # a sensor shares its cores with Zeek or Suricata: one inference thread unless told
DEFAULT_BATCH_SIZE = (
    256  # connections per inference call: amortises onnxruntime's per-call cost, bounds latency
)
# kept inputs for feedback (`packetclip.feedback`): ~0.5 GB of rows with the default bundle; a week of triage
DEFAULT_KEEP_INPUTS_ROWS = 100_000
DEFAULT_KEEP_INPUTS_DAYS = 7


class ConfigError(ValueError):
    """A setting that cannot be used; the message names its source (file and key, variable or flag)."""


@dataclass(frozen=True)
class RuntimeConfig:
    """The resolved settings, and where each came from ("flag", "environment", the config file, "default")."""

    store: Path
    threads: int = DEFAULT_THREADS
    batch_size: int = DEFAULT_BATCH_SIZE
    text_encoder: Path | None = None  # None only before resolution; `load_config` fills <store>/text-encoder
    missions: Path | None = None  # a folder of user-written mission YAML; None: no user missions
    allowlist: Path | None = None  # the allowlist file (`packetclip.allowlist`); None: nothing is allowed
    public_keys: tuple[Path, ...] = ()  # Ed25519 public keys whose bundle signatures are trusted
    require_signature: bool = False  # installed bundles must carry a signature by one of `public_keys`
    # the feedback store the sensor keeps every verdict's model input in (`packetclip.feedback`); None: none kept
    keep_inputs: Path | None = None
    keep_inputs_rows: int = DEFAULT_KEEP_INPUTS_ROWS  # kept inputs at most; the oldest leave first
    keep_inputs_days: int = DEFAULT_KEEP_INPUTS_DAYS  # kept inputs older than this many days are dropped
    config_file: Path | None = None  # the file that was read, if any
    sources: dict[str, str] = field(default_factory=dict)


def default_store() -> Path:
    """$XDG_DATA_HOME/packetclip/models, or ~/.local/share/packetclip/models."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "packetclip" / "models"


def user_config_file() -> Path:
    """$XDG_CONFIG_HOME/packetclip/config.toml, or ~/.config/packetclip/config.toml."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "packetclip" / "config.toml"


def find_config_file(flag: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read (see the module docstring), or None when there is none."""
    if flag is not None:
        return _must_exist(Path(flag), "--config")
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return _must_exist(Path(explicit), CONFIG_ENV)
    for candidate in (user_config_file(), SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def _must_exist(path: Path, named_by: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{path}: config file named by {named_by} does not exist")
    return path


def read_config_file(path: Path) -> dict[str, Any]:
    """The checked settings of one TOML file (paths resolved against its folder)."""
    data = _read_toml(path)
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key in COMMAND_TABLES and isinstance(value, dict):
            continue
        if key not in ENVIRONMENT:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(ENVIRONMENT))})")
        where = f"{path}: key {key!r}"
        if key in PATH_SETTINGS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: expected a path string, got {type(value).__name__} {value!r}")
            settings[key] = path.parent / Path(value).expanduser()
        elif key in PATH_LIST_SETTINGS:
            if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
                raise ConfigError(
                    f"{where}: expected a list of path strings, got {type(value).__name__} {value!r}"
                )
            settings[key] = tuple(path.parent / Path(item).expanduser() for item in value)
        elif key in SWITCH_SETTINGS:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
            settings[key] = value
        else:
            settings[key] = _count(value, where)
    return settings


def read_command_table(
    path: Path | None,
    table: str,
    types: Mapping[str, tuple[type, ...]],
    choices: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The checked `[table]` of a config file that one command owns (`COMMAND_TABLES`): every key known to
    `types` (key -> the types its value may have, the first one what it becomes: an int where a float is
    expected is one), a value of `choices` where those are given; empty when there is no file or no table.
    Every error names the file and the key."""
    if path is None:
        return {}
    data = _read_toml(path)
    found = data.get(table, {})
    if not isinstance(found, dict):
        raise ConfigError(f"{path}: [{table}] must be a table")
    settings: dict[str, Any] = {}
    for key, value in found.items():
        if key not in types:
            raise ConfigError(f"{path}: [{table}] unknown key {key!r} (known: {', '.join(sorted(types))})")
        where, expected = f"{path}: [{table}] key {key!r}", types[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ConfigError(
                f"{where}: expected {expected[0].__name__}, got {type(value).__name__} {value!r}"
            )
        words = (choices or {}).get(key)
        if words is not None and value not in words:
            raise ConfigError(f"{where}: expected {' or '.join(repr(word) for word in words)}, got {value!r}")
        settings[key] = float(value) if expected[0] is float and isinstance(value, int) else value
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file; an unreadable or invalid file is a `ConfigError` naming it."""
    loads = _toml_loader(path)
    try:
        data: dict[str, Any] = loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from exc
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    return data


def _toml_loader(path: Path) -> Any:
    import tomllib  # standard library from Python 3.11, the oldest the project supports

    return tomllib.loads


def _count(value: object, where: str) -> int:
    """A positive integer (bool is an int in Python, not in a config file)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ConfigError(f"{where}: expected a positive integer, got {value}")
    return value


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, variable in ENVIRONMENT.items():
        raw = environ.get(variable)
        if not raw:
            continue
        if key in PATH_SETTINGS:
            settings[key] = Path(raw).expanduser()
            continue
        if key in PATH_LIST_SETTINGS:
            settings[key] = tuple(Path(item).expanduser() for item in raw.split(os.pathsep) if item)
            continue
        if key in SWITCH_SETTINGS:
            if raw.strip().lower() not in (*TRUE_WORDS, *FALSE_WORDS):
                raise ConfigError(
                    f"environment variable {variable}: expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, "
                    f"got {raw!r}"
                )
            settings[key] = raw.strip().lower() in TRUE_WORDS
            continue
        try:
            number = int(raw)
        except ValueError:
            raise ConfigError(
                f"environment variable {variable}: expected a positive integer, got {raw!r}"
            ) from None
        settings[key] = _count(number, f"environment variable {variable}")
    return settings


def load_config(
    *,
    config: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    text_encoder: str | os.PathLike[str] | None = None,
    missions: str | os.PathLike[str] | None = None,
    allowlist: str | os.PathLike[str] | None = None,
    public_keys: Sequence[str | os.PathLike[str]] | None = None,
    require_signature: bool | None = None,
    keep_inputs: str | os.PathLike[str] | None = None,
) -> RuntimeConfig:
    """Resolve every setting: the keyword arguments are the command-line flags (None = not given)."""
    flags: dict[str, Any] = {
        key: value
        for key, value in (
            ("store", Path(store).expanduser() if store is not None else None),
            ("threads", _count(threads, "--threads") if threads is not None else None),
            ("batch_size", _count(batch_size, "--batch-size") if batch_size is not None else None),
            ("text_encoder", Path(text_encoder).expanduser() if text_encoder is not None else None),
            ("missions", Path(missions).expanduser() if missions is not None else None),
            ("allowlist", Path(allowlist).expanduser() if allowlist is not None else None),
            ("public_keys", tuple(Path(key).expanduser() for key in public_keys) if public_keys else None),
            ("require_signature", require_signature),
            ("keep_inputs", Path(keep_inputs).expanduser() if keep_inputs is not None else None),
        )
        if value is not None
    }
    environment = _from_environment(os.environ)
    config_file = find_config_file(config)
    from_file = read_config_file(config_file) if config_file is not None else {}
    defaults: dict[str, Any] = {
        "store": default_store(),
        "threads": DEFAULT_THREADS,
        "batch_size": DEFAULT_BATCH_SIZE,
        "public_keys": (),
        "require_signature": False,
        "keep_inputs_rows": DEFAULT_KEEP_INPUTS_ROWS,
        "keep_inputs_days": DEFAULT_KEEP_INPUTS_DAYS,
    }
    layers = (
        ("flag", flags),
        ("environment", environment),
        (str(config_file), from_file),
        ("default", defaults),
    )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in ENVIRONMENT:
        for source, layer in layers:
            if key in layer:
                values[key], sources[key] = layer[key], source
                break
    if "text_encoder" not in values:  # follows the store wherever the store was set
        values["text_encoder"], sources["text_encoder"] = values["store"] / "text-encoder", sources["store"]
    log.debug("runtime settings %s from %s", values, sources)
    return RuntimeConfig(config_file=config_file, sources=sources, **values)
