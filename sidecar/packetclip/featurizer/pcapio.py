"""Reading capture files: classic pcap (both byte orders, micro- and nanosecond, Kuznetzov's variant), pcapng
(several interfaces with their own link types, if_tsresol and if_tsoffset) and either of them gzip-compressed.

Owns `read_frames` and `PcapError`. It yields raw frames with their link type and does not look inside them
(that is `frames.py`). A file whose header cannot be read raises `PcapError` naming the file; damage later in
a file (a truncated last record, a corrupt length, a broken gzip stream) ends that file cleanly and is counted
in `ParseStats.file_errors`, because everything read before the damage is still good evidence.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO, cast

from packetclip.featurizer.stats import ParseStats

log = logging.getLogger(__name__)

Frame = tuple[float, int, bytes]  # (timestamp in epoch seconds, link type, frame bytes as captured)

_CHUNK = 1 << 20  # read size; large enough that refills are rare, small enough to keep memory flat
# gzip loses the whole read that hits a damaged or cut stream, so compressed files are read in smaller pieces
_GZIP_CHUNK = 1 << 13
# Larger than any real frame (the biggest snaplen tools write is 256 KiB): a bigger length means a corrupt record.
_MAX_RECORD = 1 << 24
# A compressed capture that inflates past this many times its compressed size is a decompression bomb, not
# traffic. The gzip'd traces of Zeek's test suite inflate 7-50x, the most 203x (a crafted MIME header test);
# deflate's limit is about 1,030x, which a stream of identical records nears, at ~70 s of CPU per inflated GB.
# The file is stopped there, counted (`gzip_ratio_exceeded`), with what was read before it kept.
MAX_GZIP_RATIO = 256
# ... judged only from this many inflated bytes on: small files and the first read say nothing about the ratio
_GZIP_RATIO_FROM = 1 << 26

_PCAP_MAGICS = {
    # magic as read little-endian -> (byte order, seconds per tick, extra record-header bytes)
    0xA1B2C3D4: ("<", 1e-6, 0),
    0xD4C3B2A1: (">", 1e-6, 0),
    0xA1B23C4D: ("<", 1e-9, 0),
    0x4D3CB2A1: (">", 1e-9, 0),
    0xA1B2CD34: (
        "<",
        1e-6,
        8,
    ),  # Kuznetzov's modified pcap: ifindex, protocol, pkt_type, pad after each header
    0x34CDB2A1: (">", 1e-6, 8),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D


class PcapError(Exception):
    """A capture file that cannot be read at all (missing, not a capture, header damaged)."""


class _Source:
    """A file read in chunks; keeps a buffer and refills it when a record straddles the chunk end."""

    def __init__(
        self, stream: BinaryIO, path: str, stats: ParseStats | None, raw: BinaryIO | None = None
    ) -> None:
        self.stream = stream
        self.path = path
        self.stats = stats
        self.eof = False
        self.raw = raw  # the compressed file under a gzip stream (its position: compressed bytes read)
        self.inflated = 0  # bytes the gzip stream gave so far
        # the stream itself was stopped (broken, or a bomb): that is noted, not the record it cut
        self.ended_early = False
        self.chunk = _GZIP_CHUNK if raw is not None else _CHUNK

    def read(self, size: int) -> bytes:
        if self.eof:
            return b""
        try:
            data = self.stream.read(size)
        except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt gzip stream
            log.warning("%s: compressed stream broken (%s); stopping this file", self.path, exc)
            self.note("gzip_stream_broken")
            self.ended_early = True
            data = b""
        if self.raw is not None and data:
            self.inflated += len(data)
            if self.inflated >= _GZIP_RATIO_FROM and self.inflated > MAX_GZIP_RATIO * max(1, self.raw.tell()):
                log.warning(
                    "%s: inflates more than %dx its compressed size (%d bytes from %d); a decompression bomb, "
                    "not a capture: stopping this file",
                    self.path,
                    MAX_GZIP_RATIO,
                    self.inflated,
                    self.raw.tell(),
                )
                self.note("gzip_ratio_exceeded")
                self.ended_early = True
                data = b""
        if not data:
            self.eof = True
        return data

    def refill(self, buf: bytes, pos: int, need: int) -> tuple[bytes, int]:
        """Return a buffer holding at least `need` bytes from `pos` on (fewer only at end of file)."""
        rest = buf[pos:]
        while len(rest) < need and not self.eof:
            # one chunk at a time, not the whole need: a corrupt length just under _MAX_RECORD in a small file
            # would otherwise make the read allocate that many bytes up front
            rest += self.read(self.chunk)
        return rest, 0

    def note(self, reason: str) -> None:
        if self.stats is not None:
            self.stats.count_file_error(reason)


def _open(path: str | os.PathLike[str]) -> tuple[BinaryIO, BinaryIO | None]:
    """The stream to read records from, and under it the compressed file when the capture is gzip'd."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 -- closed by read_frames
    except OSError as exc:
        raise PcapError(f"{os.fspath(path)}: cannot open: {exc.strerror or exc}") from exc
    compressed = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    if not compressed:
        return raw, None
    # GzipFile does not close a file object it was given: read_frames closes both
    return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")), raw


def read_frames(path: str | os.PathLike[str], stats: ParseStats | None = None) -> Iterator[Frame]:
    """Yield (ts, link_type, frame) for every record of a pcap/pcapng file, gzip'd or not."""
    name = os.fspath(path)
    stream, raw = _open(path)
    try:
        source = _Source(stream, name, stats, raw)
        head = b""
        while len(head) < 24 and not source.eof:
            head += source.read(24 - len(head))
        if len(head) < 4:
            raise PcapError(f"{name}: too short to be a capture ({len(head)} bytes)")
        (magic,) = struct.unpack_from("<I", head)
        if magic == _PCAPNG_SHB:
            yield from _pcapng_records(source, head)
        elif magic in _PCAP_MAGICS:
            if len(head) < 24:
                raise PcapError(f"{name}: pcap header truncated ({len(head)} of 24 bytes)")
            yield from _pcap_records(source, head, magic)
        else:
            raise PcapError(f"{name}: not a pcap or pcapng file (magic 0x{magic:08x})")
    finally:
        stream.close()
        if raw is not None:
            raw.close()


def _pcap_records(source: _Source, head: bytes, magic: int) -> Iterator[Frame]:
    order, tick, extra = _PCAP_MAGICS[magic]
    link_type = struct.unpack_from(order + "I", head, 20)[0] & 0xFFFF  # upper bits carry FCS info
    record = struct.Struct(order + "IIII")
    unpack_record = record.unpack_from
    header_len = 16 + extra
    buf, pos, index = head[24:], 0, 0
    while True:
        if len(buf) - pos < header_len:
            buf, pos = source.refill(buf, pos, header_len)
            if len(buf) < header_len:
                if buf:
                    _stop(source, "truncated_record_header", index)
                return
        sec, frac, caplen, _origlen = unpack_record(buf, pos)
        if caplen > _MAX_RECORD:
            _stop(source, "corrupt_record_length", index)
            return
        start = pos + header_len
        end = start + caplen
        if end > len(buf):
            buf, pos = source.refill(buf, pos, header_len + caplen)
            start, end = header_len, header_len + caplen
            if end > len(buf):
                _stop(source, "truncated_record", index)
                return
        yield sec + frac * tick, link_type, buf[start:end]
        pos = end
        index += 1


class _Interface:
    __slots__ = ("link_type", "snaplen", "tick", "ts_offset")

    def __init__(self, link_type: int, snaplen: int, tick: float, ts_offset: int) -> None:
        self.link_type = link_type
        self.snaplen = snaplen  # 0 means unlimited
        self.tick = tick  # seconds per timestamp unit, from if_tsresol
        self.ts_offset = ts_offset  # seconds to add, from if_tsoffset


def _pcapng_records(source: _Source, head: bytes) -> Iterator[Frame]:
    buf, pos, index = head, 0, 0
    order = "<"
    interfaces: list[_Interface] = []
    while True:
        if len(buf) - pos < 12:
            buf, pos = source.refill(buf, pos, 12)
            if len(buf) < 12:
                if buf:
                    _stop(source, "truncated_block_header", index)
                return
        block_type = struct.unpack_from(order + "I", buf, pos)[0]
        if block_type == _PCAPNG_SHB:
            bom = struct.unpack_from("<I", buf, pos + 8)[0]
            if bom == _PCAPNG_BYTE_ORDER_MAGIC:
                order = "<"
            elif bom == 0x4D3C2B1A:
                order = ">"
            elif index == 0:
                raise PcapError(f"{source.path}: pcapng section header has no byte-order magic")
            else:
                _stop(source, "corrupt_section_header", index)
                return
            interfaces = []  # interface ids are per section
        block_len = struct.unpack_from(order + "I", buf, pos + 4)[0]
        if block_len < 12 or block_len % 4 or block_len > _MAX_RECORD:
            if index == 0:
                raise PcapError(f"{source.path}: pcapng section header has a bad length ({block_len})")
            _stop(source, "corrupt_block_length", index)
            return
        if len(buf) - pos < block_len:
            buf, pos = source.refill(buf, pos, block_len)
            if len(buf) < block_len:
                _stop(source, "truncated_block", index)
                return
        frame = _pcapng_block(source, buf, pos, block_len, block_type, order, interfaces, index)
        if frame is not None:
            yield frame
        pos += block_len
        index += 1


def _pcapng_block(
    source: _Source,
    buf: bytes,
    pos: int,
    block_len: int,
    block_type: int,
    order: str,
    interfaces: list[_Interface],
    index: int,
) -> Frame | None:
    """Decode one block; returns a frame for packet blocks and None for everything else."""
    if block_type == 1:  # interface description
        if block_len < 20:
            source.note("corrupt_interface_block")
            return None
        link_type, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
        tick, ts_offset = _interface_options(buf, pos + 16, pos + block_len - 4, order)
        interfaces.append(_Interface(link_type, snaplen, tick, ts_offset))
        return None
    if block_type in (6, 2):  # enhanced packet block; obsolete packet block
        if block_len < 32:
            source.note("corrupt_packet_block")
            return None
        if block_type == 6:
            if_id, ts_high, ts_low, caplen = struct.unpack_from(order + "IIII", buf, pos + 8)
        else:
            if_id, _drops, ts_high, ts_low, caplen = struct.unpack_from(order + "HHIII", buf, pos + 8)
        if caplen > block_len - 32:
            source.note("corrupt_packet_block")
            return None
        data_at = pos + 28
        data = buf[data_at : data_at + caplen]
    elif block_type == 3:  # simple packet block: no timestamp, interface 0
        if block_len < 16:
            source.note("corrupt_packet_block")
            return None
        if_id, ts_high, ts_low = 0, 0, 0
        (origlen,) = struct.unpack_from(order + "I", buf, pos + 8)
        caplen = min(origlen, block_len - 16)
        if interfaces and interfaces[0].snaplen:
            caplen = min(caplen, interfaces[0].snaplen)
        data = buf[pos + 12 : pos + 12 + caplen]
    else:
        return None  # statistics, name resolution, custom blocks: nothing to featurize
    if if_id >= len(interfaces):
        log.warning("%s: block %d names interface %d which was never described", source.path, index, if_id)
        source.note("unknown_interface")
        return None
    iface = interfaces[if_id]
    return ((ts_high << 32) | ts_low) * iface.tick + iface.ts_offset, iface.link_type, data


def _interface_options(buf: bytes, start: int, end: int, order: str) -> tuple[float, int]:
    """Read if_tsresol (9) and if_tsoffset (14) from an interface block's options; defaults: µs and 0."""
    tick, ts_offset = 1e-6, 0
    pos = start
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", buf, pos)
        value_at = pos + 4
        if code == 0 or value_at + length > end:
            break
        if code == 9 and length >= 1:
            resolution = buf[value_at]
            exponent = resolution & 0x7F
            tick = 2.0**-exponent if resolution & 0x80 else 10.0**-exponent
        elif code == 14 and length >= 8:
            (ts_offset,) = struct.unpack_from(order + "q", buf, value_at)
        pos = value_at + ((length + 3) & ~3)
    return tick, ts_offset


def _stop(source: _Source, reason: str, index: int) -> None:
    if source.ended_early and reason.startswith("truncated"):
        return  # the record was cut by the stream's own stop, already logged and counted once
    log.warning("%s: %s at record %d; stopping this file", source.path, reason.replace("_", " "), index)
    source.note(reason)
