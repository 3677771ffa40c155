"""The real captures committed with the tests: the manifest describes exactly the files there, under licences that
allow copying them, with the labels the tests use; the folder the tests read is chosen as `real_captures` says;
and, on the extended corpus, every committed capture is the same file there (so one set of expectations holds)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.real_captures import (
    COMMITTED_REAL_DATA,
    EXTENDED,
    REAL_DATA,
    REAL_DATA_ENV,
    manifest_files,
    manifest_rows,
    resolve_real_data,
)

# licence -> its texts in LICENSES/: only sources whose terms allow redistribution are committed
LICENCE_TEXTS = {
    "BSD-3-Clause": ["BSD-3-Clause-zeek.txt"],
    "MIT": ["MIT-suricata-verify.txt"],
    "LGPL-3.0": ["LGPL-3.0.txt", "GPL-3.0.txt"],
}
# documentation beside the captures, not captures
NOT_CAPTURES = {"MANIFEST.tsv", "README.md", "NOTICE"}


def _committed_captures() -> set[str]:
    names = (
        path.relative_to(COMMITTED_REAL_DATA) for path in COMMITTED_REAL_DATA.rglob("*") if path.is_file()
    )
    return {
        name.as_posix() for name in names if name.name not in NOT_CAPTURES and name.parts[0] != "LICENSES"
    }


def test_the_committed_manifest_describes_exactly_its_files() -> None:
    rows = manifest_rows(COMMITTED_REAL_DATA)
    assert {row["file"] for row in rows} == _committed_captures()
    assert len(rows) == len(_committed_captures())  # no row twice
    for row in rows:
        data = (COMMITTED_REAL_DATA / row["file"]).read_bytes()
        assert len(data) == int(row["bytes"]), row["file"]
        assert hashlib.sha256(data).hexdigest().startswith(row["sha256_16"]), row["file"]
        assert row["file"].split("/", 1)[1] == row["source_path"], row["file"]
    total = sum(int(row["bytes"]) for row in rows)
    assert total < 5_000_000, f"{total} bytes: the committed set is meant to stay at a few MB"


def test_every_committed_licence_allows_copying_and_comes_with_its_text() -> None:
    readme = (COMMITTED_REAL_DATA / "README.md").read_text(encoding="utf-8")
    notice = (COMMITTED_REAL_DATA / "NOTICE").read_text(encoding="utf-8")
    for row in manifest_rows(COMMITTED_REAL_DATA):
        assert row["license"] in LICENCE_TEXTS, row["file"]
        for text in LICENCE_TEXTS[row["license"]]:
            assert (COMMITTED_REAL_DATA / "LICENSES" / text).is_file(), text
            assert text in notice, text
        assert f"`{row['file']}`" in readme, row["file"]
    sources = {row["source_repo"] for row in manifest_rows(COMMITTED_REAL_DATA)}
    assert "StopDDoS/packet-captures" not in sources  # free to use for DDoS protection, not to redistribute


def test_the_committed_set_holds_the_classes_the_tests_read() -> None:
    labels = {(row["label"], row["attack"]) for row in manifest_rows(COMMITTED_REAL_DATA)}
    assert labels >= {
        ("benign", "benign"),
        ("recon", "port_scan"),
        ("recon", "vulnerability_scan"),
        ("dos", "syn_flood"),
        ("bruteforce", "dictionary_attack"),
    }
    sources = {row["source_repo"] for row in manifest_rows(COMMITTED_REAL_DATA) if row["label"] == "benign"}
    assert sources == {"zeek/zeek", "ntop/nDPI"}  # the evaluation's two benign families


def test_the_folder_is_the_named_one_else_the_shared_corpus_else_the_committed_set(tmp_path: Path) -> None:
    shared, committed, named = tmp_path / "shared", tmp_path / "committed", tmp_path / "named"
    for folder in (shared, committed, named):
        folder.mkdir()
    (shared / "MANIFEST.tsv").write_text("file\n")
    assert resolve_real_data({REAL_DATA_ENV: str(named)}, shared, committed) == named
    assert resolve_real_data({}, shared, committed) == shared
    assert resolve_real_data({REAL_DATA_ENV: ""}, shared, committed) == shared
    (shared / "MANIFEST.tsv").unlink()  # a shared folder without its manifest is no corpus
    assert resolve_real_data({}, shared, committed) == committed
    assert resolve_real_data({}, tmp_path / "absent", committed) == committed


# only an extended corpus can be compared with: on a clean clone there is none, and this test is not collected
if EXTENDED:

    def test_every_committed_capture_is_the_same_in_the_extended_corpus() -> None:
        extended = {row["file"]: row for row in manifest_rows(REAL_DATA)}
        for row in manifest_rows(COMMITTED_REAL_DATA):
            assert extended.get(row["file"]) == row, row["file"]
            committed = (COMMITTED_REAL_DATA / row["file"]).read_bytes()
            assert (REAL_DATA / row["file"]).read_bytes() == committed, row["file"]
        in_extended = [name for name in manifest_files(REAL_DATA) if name in _committed_captures()]
        assert in_extended == manifest_files(COMMITTED_REAL_DATA), (
            "the committed rows keep the extended order"
        )
