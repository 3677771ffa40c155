"""packetclip's tests, one package: test modules and their helpers import each other by full name
(`from tests.runtime.test_engine import runtime_bundle`, `from tests.zeek_peer.peer import ZeekPeer`), never by
adding folders to the import path. pytest's default import mode puts the repository root (the first folder above
without an `__init__.py`) on the path; a benchmark run as `python -m benchmarks.NAME` from the root finds `tests`
the same way.
"""
