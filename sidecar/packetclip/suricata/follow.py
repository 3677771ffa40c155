"""Following Suricata's eve stream as it is written: a growing file (with rotation) or a unix-socket eve output.

Owns turning a live byte stream into whole lines and surviving what happens to a sensor's output: the file being
rotated (renamed and recreated) or truncated, Suricata stopping and starting again (the file stops growing, then
grows again or is recreated; the socket connection closes, then Suricata reconnects). A trailing partial line is
held until its newline arrives; one left behind by a rotation or a closed connection is counted as
`partial_lines` and dropped. It does not parse records (`packetclip.suricata.eve`).

Both readers offer `poll(timeout) -> list[bytes]` (complete lines, newline stripped; an empty list after
`timeout` seconds without data) and `close()`.

Suricata's `filetype: unix_stream` eve output is a *client*: it connects to a socket someone else listens on, and
reconnects when the connection is lost. `EveSocketListener` is that listener.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20  # bytes per read: large enough to drain a busy eve file in a few calls
MAX_LINE = 16 << 20  # a "line" longer than this is not eve (a jumbo frame's record is ~100 KB); it is dropped


@dataclass
class StreamCounts:
    """What happened to the stream; the sidecar's statistics report it."""

    bytes: int = 0
    lines: int = 0
    reopened: int = 0  # file: rotations/recreations/truncations followed; socket: connections accepted
    disconnects: int = 0  # socket: connections that closed (Suricata stopped or restarted)
    partial_lines: int = 0  # incomplete lines dropped at a rotation, truncation or closed connection
    oversized_lines: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class EveSource(Protocol):
    counts: StreamCounts

    def poll(self, timeout: float) -> list[bytes]: ...

    def close(self) -> None: ...


class _LineBuffer:
    """Bytes in, whole lines out; the partial tail waits for the rest."""

    def __init__(self, counts: StreamCounts) -> None:
        self.counts = counts
        self.pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.counts.bytes += len(data)
        data = self.pending + data
        lines = data.split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) > MAX_LINE:
            self.counts.oversized_lines += 1
            log.warning(
                "eve: dropped a line longer than %d bytes",
                MAX_LINE,
                extra={"limit": MAX_LINE, "count": self.counts.oversized_lines},
            )
            self.pending = b""
        self.counts.lines += len(lines)
        return lines

    def drop_partial(self) -> None:
        if self.pending:
            self.counts.partial_lines += 1
            log.warning(
                "eve: dropped an incomplete line of %d bytes",
                len(self.pending),
                extra={"bytes": len(self.pending), "count": self.counts.partial_lines},
            )
        self.pending = b""


class EveFileFollower:
    """`tail -F` for an eve file: reads what was appended, follows rotation and truncation.

    `from_start` reads the file's current contents first (a finished run, a test); otherwise only what is
    appended after the follower first opens it (a sensor that has been running for days).
    """

    def __init__(self, path: str | Path, from_start: bool = True, poll_interval: float = 0.05) -> None:
        self.path = Path(path)
        self.from_start = from_start  # where the first file opened is read from; later ones always from 0
        self.poll_interval = poll_interval  # seconds between checks of an idle file
        self.counts = StreamCounts()
        self._lines = _LineBuffer(self.counts)
        self._file: int | None = None
        self._inode: tuple[int, int] | None = None
        self._position = 0
        self._opened_once = False

    def poll(self, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self._read_available()
            if lines or time.monotonic() >= deadline:
                return lines
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _read_available(self) -> list[bytes]:
        if self._file is None and not self._open():
            return []
        lines = self._drain()
        if self._replaced():
            # the old file may have received its last lines between our read and the rename: drain it first
            lines += self._drain()
            self._lines.drop_partial()
            self.close()
            if self._open():
                self.counts.reopened += 1
                lines += self._drain()
        return lines

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        status = os.fstat(fd)
        self._file, self._inode = fd, (status.st_dev, status.st_ino)
        self._position = status.st_size if not self.from_start and not self._opened_once else 0
        self._opened_once = True
        return True

    def _drain(self) -> list[bytes]:
        assert self._file is not None
        if os.fstat(self._file).st_size < self._position:
            # truncated in place (copytruncate): start over at its beginning
            self._lines.drop_partial()
            self._position = 0
            self.counts.reopened += 1
        lines: list[bytes] = []
        while True:
            data = os.pread(self._file, READ_CHUNK, self._position)
            if not data:
                return lines
            self._position += len(data)
            lines += self._lines.feed(data)

    def _replaced(self) -> bool:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed away and not yet recreated: keep the old one until a new one appears
        return (status.st_dev, status.st_ino) != self._inode


class EveSocketListener:
    """Listens where Suricata's `unix_stream` eve output connects; accepts a new connection after a restart."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.counts = StreamCounts()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of an earlier run would make bind fail
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(4)
        self._server.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._server, selectors.EVENT_READ, None)
        self._buffers: dict[socket.socket, _LineBuffer] = {}

    def poll(self, timeout: float) -> list[bytes]:
        lines: list[bytes] = []
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._server:
                self._accept()
                continue
            connection = key.fileobj
            assert isinstance(connection, socket.socket)
            lines += self._receive(connection)
        return lines

    def close(self) -> None:
        for connection in list(self._buffers):
            self._drop(connection)
        self._selector.close()
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        try:
            connection, _ = self._server.accept()
        except BlockingIOError:
            return
        connection.setblocking(False)
        self._buffers[connection] = _LineBuffer(self.counts)
        self._selector.register(connection, selectors.EVENT_READ, None)
        self.counts.reopened += 1
        log.info("eve: Suricata connected to %s", self.path)

    def _receive(self, connection: socket.socket) -> list[bytes]:
        try:
            data = connection.recv(READ_CHUNK)
        except BlockingIOError:
            return []
        except OSError as exc:
            log.warning("eve: connection error: %s", exc)
            data = b""
        if not data:
            self._drop(connection)
            self.counts.disconnects += 1
            log.warning(
                "eve: Suricata closed its connection to %s",
                self.path,
                extra={"path": str(self.path), "count": self.counts.disconnects},
            )
            return []
        return self._buffers[connection].feed(data)

    def _drop(self, connection: socket.socket) -> None:
        self._buffers.pop(connection).drop_partial()
        self._selector.unregister(connection)
        connection.close()
