"""Runtime settings and `packetclip models`: the precedence flag > environment > config file > default, clear
errors for a bad config file, and each command's output and exit code (0 done, 1 store/settings, 3 refused,
4 unknown bundle, 5 conflict, 6 text encoder not exportable)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from packetclip import config as config_module
from packetclip import store as store_module
from packetclip.commands import models as models_module
from packetclip.commands.models import models
from packetclip.config import ConfigError, load_config
from packetclip.store import ModelStore
from tests.runtime.test_store import KEYS, VERSIONS, embedded_stand_in, export_test_bundles, flip_byte


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No setting leaks in from the machine: XDG folders, variables and /etc point into tmp_path."""
    for variable in [*config_module.ENVIRONMENT.values(), config_module.CONFIG_ENV]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", tmp_path / "etc" / "packetclip" / "config.toml")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- settings -----------------------------------------------------------------------------------------------


def test_defaults_follow_xdg(tmp_path: Path) -> None:
    config = load_config()
    assert config.store == tmp_path / "data" / "packetclip" / "models"
    assert config.text_encoder == config.store / "text-encoder"
    assert (config.threads, config.batch_size, config.missions, config.config_file) == (1, 256, None, None)
    assert set(config.sources.values()) == {"default"}


def test_each_layer_overrides_the_one_below(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = write(config_module.SYSTEM_CONFIG, 'store = "/srv/system"\nthreads = 3\n')
    assert load_config().store == Path("/srv/system") and load_config().config_file == system
    user = write(tmp_path / "config" / "packetclip" / "config.toml", 'store = "/srv/user"\nbatch_size = 64\n')
    config = load_config()
    # one file is read, never a merge: the user file wins whole, the system file's threads are not used
    assert (config.store, config.batch_size, config.threads, config.config_file) == (
        Path("/srv/user"),
        64,
        1,
        user,
    )
    assert config.sources["store"] == str(user)
    monkeypatch.setenv("PACKETCLIP_STORE", "/srv/environment")
    monkeypatch.setenv("PACKETCLIP_BATCH_SIZE", "32")
    config = load_config()
    assert (config.store, config.batch_size) == (Path("/srv/environment"), 32)
    assert config.sources["store"] == "environment"
    config = load_config(store="/srv/flag", batch_size=8)
    assert (config.store, config.batch_size) == (Path("/srv/flag"), 8)
    assert config.sources["store"] == "flag" and config.text_encoder == Path("/srv/flag/text-encoder")


def test_the_config_file_is_chosen_by_flag_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "config" / "packetclip" / "config.toml", 'store = "/srv/user"\n')
    named = write(tmp_path / "named.toml", 'store = "/srv/named"\n')
    flagged = write(tmp_path / "flagged.toml", 'store = "/srv/flagged"\n')
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(named))
    assert load_config().store == Path("/srv/named")
    assert load_config(config=flagged).store == Path("/srv/flagged")
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match=r"absent\.toml.*PACKETCLIP_CONFIG"):
        load_config()


def test_relative_paths_in_a_config_file_are_relative_to_it(tmp_path: Path) -> None:
    file = write(tmp_path / "site" / "config.toml", 'store = "models"\nmissions = "missions"\n')
    config = load_config(config=file)
    assert config.store == tmp_path / "site" / "models" and config.missions == tmp_path / "site" / "missions"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('stor = "/srv"\n', r"unknown key 'stor'"),
        ('threads = "2"\n', r"key 'threads': expected a positive integer, got str"),
        ("threads = true\n", r"key 'threads': expected a positive integer, got bool"),
        ("batch_size = 0\n", r"key 'batch_size': expected a positive integer, got 0"),
        ("store = 5\n", r"key 'store': expected a path string, got int"),
        ("store = \n", r"not valid TOML"),
    ],
)
def test_a_bad_config_file_is_an_error_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    file = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=str(file).replace(".", r"\.") + ".*" + message):
        load_config(config=file)


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKETCLIP_THREADS", "two")
    with pytest.raises(ConfigError, match="PACKETCLIP_THREADS"):
        load_config()


# --- the command line ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return export_test_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(autouse=True)
def use_embedded_stand_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if "bundles" not in request.fixturenames:
        return
    embedded = embedded_stand_in(request.getfixturevalue("bundles")[0], tmp_path / "embedded")
    monkeypatch.setattr(store_module, "default_bundle_path", lambda: embedded)


def run(store: Path, *args: str) -> Result:
    return CliRunner().invoke(models, ["--store", str(store), *args], catch_exceptions=False)


def test_list_install_activate_show_and_rollback(tmp_path: Path, bundles: list[Path]) -> None:
    store = tmp_path / "store"
    listed = run(store, "list")
    assert listed.exit_code == 0
    assert listed.output.splitlines()[0] == f"store {store}"
    assert listed.output.splitlines()[2].startswith("* embedded ")

    installed = run(store, "install", str(bundles[0]), "--activate")
    assert installed.exit_code == 0, installed.output
    assert installed.output.splitlines() == [
        f"installed: {KEYS[0]} -> {store / 'bundles' / KEYS[0]}",
        f"active: {KEYS[0]}",
    ]
    again = run(store, "install", str(bundles[0]))
    assert again.exit_code == 0 and again.output.startswith(f"already installed (same hashes): {KEYS[0]}")
    assert run(store, "install", str(bundles[1])).exit_code == 0

    document = json.loads(run(store, "list", "--json").output)
    assert document["active"] == KEYS[0]
    assert [(b["key"], b["active"]) for b in document["bundles"]] == [
        (KEYS[0], True),
        (KEYS[1], False),
        ("embedded", False),
    ]

    activated = run(store, "activate", KEYS[1])
    assert (
        activated.exit_code == 0
        and activated.output == f"active: {KEYS[1]} ({store / 'bundles' / KEYS[1]})\n"
    )
    shown = run(store, "show")
    assert shown.exit_code == 0
    lines = shown.output.splitlines()
    assert lines[0] == f"bundle    packetclip-test {VERSIONS[1]}  (active)"
    assert "missions  benign, bruteforce, dos, recon" in lines
    assert "metrics   coarse_mauc 0.500" in lines
    assert json.loads(run(store, "show", KEYS[0], "--json").output)["version"] == VERSIONS[0]

    verified = run(store, "verify")
    assert verified.exit_code == 0 and verified.output.startswith(f"ok: packetclip-test {VERSIONS[1]}")

    assert run(store, "rollback").output == f"active: {KEYS[0]} ({store / 'bundles' / KEYS[0]})\n"
    assert run(store, "rollback").output.startswith("active: embedded")
    nothing = run(store, "rollback")
    assert nothing.exit_code == 1 and "no earlier activation" in nothing.output


def test_refusals_have_their_exit_codes(tmp_path: Path, bundles: list[Path]) -> None:
    store = tmp_path / "store"
    assert run(store, "install", str(bundles[0]), "--activate").exit_code == 0
    tampered = shutil.copytree(bundles[1], tmp_path / "tampered")
    flip_byte(tampered / "reasoner.onnx")
    refused = run(store, "install", str(tampered))
    assert refused.exit_code == 3
    assert "refused:" in refused.output and "reasoner.onnx" in refused.output

    assert run(store, "install", str(bundles[1])).exit_code == 0
    flip_byte(store / "bundles" / KEYS[1] / "descriptions.npz")
    for command in (("verify", KEYS[1]), ("activate", KEYS[1])):
        result = run(store, *command)
        assert result.exit_code == 3 and "descriptions.npz" in result.output, command
    assert ModelStore(store).active_key() == KEYS[0]  # the active bundle stays

    unknown = run(store, "activate", "nope-1")
    assert unknown.exit_code == 4 and "no installed bundle 'nope-1'" in unknown.output
    assert run(store, "show", "nope-1").exit_code == 4

    other = shutil.copytree(bundles[0], tmp_path / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "missions" / "dos.yaml").write_text("name: dos\n")  # other bytes under the same version ...
    manifest["files"]["missions/dos.yaml"] = store_module.sha256_file(other / "missions" / "dos.yaml")
    (other / "manifest.json").write_text(json.dumps(manifest))  # ... consistently hashed
    conflict = run(store, "install", str(other))
    assert conflict.exit_code == 5 and "different file hashes" in conflict.output


def test_a_bad_config_file_stops_the_command_with_exit_code_1(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", "thread = 1\n")
    result = CliRunner().invoke(models, ["--config", str(bad), "list"])
    assert result.exit_code == 1
    assert f"{bad}: unknown key 'thread'" in result.output


def test_the_store_flag_beats_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKETCLIP_STORE", str(tmp_path / "from-environment"))
    assert CliRunner().invoke(models, ["list"]).output.startswith(f"store {tmp_path / 'from-environment'}\n")
    assert run(tmp_path / "from-flag", "list").output.startswith(f"store {tmp_path / 'from-flag'}\n")


def fake_factory(folder: Path, body: str) -> list[str]:
    """A stand-in for `packetclip-train` (a shell script), recording its arguments."""
    script = write(folder / "packetclip-train", f'#!/bin/sh\necho "$@" > "{folder}/arguments"\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return [str(script)]


def test_text_encoder_export_runs_the_factory_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes_an_export = 'out="$4"; mkdir -p "$out"; for f in text_encoder.onnx tokenizer.json text_encoder.json; do echo x > "$out/$f"; done'
    monkeypatch.setattr(
        models_module, "factory_command", lambda: fake_factory(tmp_path / "bin", writes_an_export)
    )
    store = tmp_path / "store"
    result = run(store, "text-encoder")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bin" / "arguments").read_text().split() == [
        "text",
        "export",
        "--out",
        str(store / "text-encoder"),
    ]
    assert result.output.endswith(f"text encoder exported to {store / 'text-encoder'}\n")
    (tmp_path / "bin" / "arguments").unlink()
    again = run(store, "text-encoder")
    assert again.exit_code == 0 and "already exported" in again.output
    assert not (tmp_path / "bin" / "arguments").exists()  # not run a second time


def test_text_encoder_export_failures_exit_6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models_module, "factory_command", lambda: None)
    missing = run(tmp_path / "store", "text-encoder", "--out", str(tmp_path / "out"))
    assert missing.exit_code == 6 and "pip install 'packetclip[train]'" in missing.output
    monkeypatch.setattr(models_module, "factory_command", lambda: fake_factory(tmp_path / "bin", "exit 7"))
    failed = run(tmp_path / "store", "text-encoder", "--out", str(tmp_path / "out"))
    assert failed.exit_code == 6 and "failed with exit code 7" in failed.output
    monkeypatch.setattr(models_module, "factory_command", lambda: fake_factory(tmp_path / "bin", "exit 0"))
    silent = run(tmp_path / "store", "text-encoder", "--out", str(tmp_path / "out"))
    assert silent.exit_code == 6 and "holds no text encoder" in silent.output
