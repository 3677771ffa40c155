"""`packetclip-train describe wordfreq|prompts|sample` write real figures and text."""

from __future__ import annotations

import json

from packetclip_training.cli import main


def test_wordfreq_draws_one_png_per_mission(tmp_path, capsys):
    assert main(["describe", "wordfreq", "--out", str(tmp_path), "--per-class", "40", "--top", "10"]) == 0
    for mission in ("benign", "bruteforce", "dos", "recon"):
        png = (tmp_path / f"wordfreq-{mission}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    summary = json.loads((tmp_path / "wordfreq.json").read_text())
    assert summary["missions"]["dos"]["descriptions"] == 40 * 5
    top_dos = {word for word, _ in summary["missions"]["dos"]["top_words"]}
    top_recon = {word for word, _ in summary["missions"]["recon"]["top_words"]}
    assert "flood" in top_dos and "flood" not in top_recon  # the figures tell missions apart
    assert not any(word.isdigit() for word in top_dos)


def test_prompts_and_sample(capsys):
    assert main(["describe", "prompts", "--fine", "ping_sweep"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 5 and all(line.startswith("ping_sweep\t") for line in lines)
    assert main(["describe", "sample", "--fine", "slowloris", "-n", "3", "--seed", "4"]) == 0
    first = capsys.readouterr().out
    assert len(first.strip().splitlines()) == 3
    assert main(["describe", "sample", "--fine", "slowloris", "-n", "3", "--seed", "4"]) == 0
    assert capsys.readouterr().out == first


def test_wordfreq_over_a_dataset_split_counts_bad_rows(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = {
        "duration": 0.0,
        "orig_pkts": 1,
        "resp_pkts": 0,
        "orig_bytes": 0,
        "resp_bytes": 0,
        "conn_state": "S0",
        "history": "S",
        "service": "http",
        "proto": "tcp",
        "resp_p": 80,
    }
    rows = [{**good, "fine": "syn_flood"}] * 6 + [{**good, "fine": "port_scan", "resp_p": 25}] * 3
    rows.append({**good, "orig_pkts": 0, "fine": "port_scan"})  # no packets at all: cannot be described
    dataset = tmp_path / "ds"
    dataset.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), dataset / "train.parquet")
    out = tmp_path / "fig"
    assert (
        main(["describe", "wordfreq", "--out", str(out), "--dataset", str(dataset), "--per-class", "5"]) == 0
    )
    summary = json.loads((out / "wordfreq.json").read_text())
    assert summary["missions"]["dos"]["descriptions"] == 5  # capped per class
    assert summary["missions"]["recon"]["descriptions"] + summary["skipped_rows"] == 4
    assert sorted(p.name for p in out.glob("*.png")) == ["wordfreq-dos.png", "wordfreq-recon.png"]
    assert (
        main(["describe", "wordfreq", "--out", str(out), "--dataset", str(dataset), "--split", "test"]) == 1
    )
