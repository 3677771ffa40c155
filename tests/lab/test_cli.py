"""The lab's command line without root: the catalogue listing is complete and machine-readable."""

import json

from packetclip.classes import FINE_CLASSES
from packetclip_training.cli import main


def test_variants_lists_every_catalogue_entry_as_json(capsys):
    from packetclip_training.lab.attacks import CATALOGUE

    assert main(["lab", "variants", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["variant"] for r in rows] == [v.name for v in CATALOGUE]
    assert {r["fine"] for r in rows} == set(FINE_CLASSES) - {"benign"}
    assert any(r["heldout"] for r in rows) and not all(r["heldout"] for r in rows)
