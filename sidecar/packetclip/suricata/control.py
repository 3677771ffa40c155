"""A client for Suricata's unix command socket (`unix-command` in suricata.yaml, or `--unix-socket=PATH`).

Owns the protocol: an AF_UNIX stream; the client sends ``{"version": "0.2"}`` and gets ``{"return": "OK"}``,
then sends one JSON command per line (``{"command": NAME, "arguments": {...}}``) and reads one JSON answer per
command (``{"return": "OK"|"NOK", "message": ...}``). Answers are read until they parse as one JSON value, not
up to a newline: Suricata does not end every answer with one.

A lost connection (Suricata stopped or restarted) is reopened on the next command; `generation` counts the
connections made so that callers can tell a restart happened (a restarted Suricata forgot what was added to its
in-memory datasets). It does not decide what to send (`packetclip.suricata.datasets`).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "0.2"
MAX_ANSWER = 64 << 20  # bytes; a `dataset-dump` or `iface-list` answer is far smaller


class ControlError(Exception):
    """The socket could not be reached, or it answered something that is not the protocol."""


class CommandRefused(Exception):
    """Suricata answered NOK; `message` says why (a dataset miss is one)."""

    def __init__(self, command: str, message: Any) -> None:
        super().__init__(f"{command}: {message}")
        self.command = command
        self.message = message


class SuricataControl:
    def __init__(self, path: str | Path, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout  # seconds for connecting and for each answer
        self.generation = 0  # connections opened so far
        self._socket: socket.socket | None = None

    def command(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Send one command; returns its `message` on OK, raises CommandRefused on NOK, ControlError otherwise.
        One reconnect is tried when the connection turns out to be gone."""
        request: dict[str, Any] = {"command": name}
        if arguments:
            request["arguments"] = arguments
        for attempt in (1, 2):
            connection = self._connect()
            try:
                answer = self._exchange(connection, request)
            except (OSError, ControlError) as exc:
                self.close()
                if attempt == 2:
                    raise ControlError(f"{self.path}: {name}: {exc}") from exc
                continue
            if answer.get("return") == "OK":
                return answer.get("message")
            raise CommandRefused(name, answer.get("message"))
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connect(self) -> socket.socket:
        if self._socket is not None:
            return self._socket
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self.timeout)
        try:
            connection.connect(str(self.path))
            answer = self._exchange(connection, {"version": PROTOCOL_VERSION})
        except (OSError, ControlError) as exc:
            connection.close()
            raise ControlError(f"{self.path}: cannot connect: {exc}") from exc
        if answer.get("return") != "OK":
            connection.close()
            raise ControlError(f"{self.path}: version {PROTOCOL_VERSION} refused: {answer.get('message')}")
        self._socket = connection
        self.generation += 1
        log.info("connected to Suricata's command socket %s", self.path)
        return connection

    def _exchange(self, connection: socket.socket, request: dict[str, Any]) -> dict[str, Any]:
        connection.sendall(json.dumps(request).encode() + b"\n")
        received = b""
        deadline = time.monotonic() + self.timeout
        decoder = json.JSONDecoder()
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                raise ControlError("connection closed before an answer")
            received += chunk
            text = received.decode("utf-8", "replace").strip()
            try:
                answer, _ = decoder.raw_decode(text)
            except ValueError:
                if len(received) > MAX_ANSWER or time.monotonic() > deadline:
                    raise ControlError("no complete answer") from None
                continue
            if not isinstance(answer, dict):
                raise ControlError(f"answer is not an object: {text[:200]!r}")
            return answer
