"""CICFlowMeter CSV reading and the flow-to-connection join, on fixtures describing the flows of sshguess.pcap.

The fixture rows use the real ACI-IoT-2023 / CICFlowMeter-v4 column names (and a CIC-IDS2017-style file with
leading spaces and spelled-out names); their 5-tuples and start times are those of the real capture, written in a
UTC-3 local clock.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from packetclip_training.dataset.labelling import Drop
from packetclip_training.dataset.sources import (
    FlowLabeller,
    SourceError,
    load_flow_table,
    load_label_map,
    parse_timestamps,
)
from tests.dataset.dataset_testdata import FIXTURES, SSHGUESS_STARTS, ssh_key

ACI_CSV = FIXTURES / "sshguess_aci_flows.csv"
CIC2017_CSV = FIXTURES / "sshguess_cicids2017_flows.csv"


def test_timestamp_styles_parse_to_epoch_with_resolution():
    values = pd.Series(
        [
            "30/03/2015 14:44:49",
            "30/03/2015 02:44:49 PM",
            "30/03/2015 14:44",
            "2015-03-30T14:44:49.5",
            "30/3/2015 2:44",
            "1427726689",
            "1427726689500",
            "garbage",
            "",
        ]
    )
    seconds, resolution = parse_timestamps(values)
    base = 1427726689.0
    assert seconds[:4].tolist() == [base, base, base - 49, base + 0.5]
    assert resolution[:4].tolist() == [1.0, 1.0, 60.0, 1e-6]
    assert (
        seconds[4] == base - 49 - 12 * 3600
    )  # a 12-hour clock without AM/PM cannot be told apart: read as 24h
    assert seconds[5] == base and seconds[6] == base + 0.5
    assert np.isnan(seconds[7]) and np.isnan(seconds[8])


def test_monthfirst_dates():
    seconds, _ = parse_timestamps(pd.Series(["03/30/2015 14:44:49"]), dayfirst=False)
    assert seconds[0] == 1427726689.0


@pytest.fixture
def aci_join() -> FlowLabeller:
    table = load_flow_table(ACI_CSV, load_label_map("aci-iot-2023"), utc_offset_hours=-3)
    return FlowLabeller(table, tolerance_s=2.0)


def test_csv_rows_read_and_bad_rows_counted(aci_join):
    table = aci_join.flows
    assert table.rows == 16
    assert table.dropped == {
        "label_mapped_to_drop:ARP Spoofing": 1,
        "bad_timestamp": 1,
        "unmapped_label:Mirai": 1,
    }
    assert len(table.labels) == 13


def test_join_matches_both_directions_all_timestamp_styles_and_nearest_split_row(aci_join):
    for port in (55470, 55471, 55472, 55473, 55474, 55479):
        label = aci_join.label(ssh_key(port))
        assert not isinstance(label, Drop), port
        assert label.fine == "dictionary_attack" and label.coarse == "bruteforce"
    # the connection seen from the other side is the same flow
    assert aci_join.label(ssh_key(55471, reverse=True)).fine == "dictionary_attack"


def test_join_counts_unmatched_connections_and_flows(aci_join):
    assert aci_join.label(ssh_key(55480)) == Drop("no_matching_flow")  # no CSV row
    assert aci_join.label(ssh_key(55478)) == Drop("no_matching_flow")  # CSV row 40 s off
    for port in SSHGUESS_STARTS:
        aci_join.label(ssh_key(port))
    # unmatched: the later row of the split flow 55470, 55478's row, and two flows of other hosts
    assert aci_join.unmatched_flows() == 4


def test_wrong_utc_offset_matches_nothing():
    table = load_flow_table(ACI_CSV, load_label_map("aci-iot-2023"), utc_offset_hours=0)
    join = FlowLabeller(table)
    assert all(join.label(ssh_key(port)) == Drop("no_matching_flow") for port in SSHGUESS_STARTS)


def test_cicids2017_header_spaces_aliases_and_user_mapping():
    table = load_flow_table(CIC2017_CSV, load_label_map(str(FIXTURES / "cicids2017_labels.yaml")), -3)
    join = FlowLabeller(table, tolerance_s=1.0)
    # minute stamps: each connection lies inside its row's minute
    assert [join.label(ssh_key(p)).fine for p in (55470, 55471, 55472, 55473)] == ["dictionary_attack"] * 4
    assert join.label(ssh_key(55474)) == Drop("no_matching_flow")
    assert join.unmatched_flows() == 0


def test_non_flow_csv_refused(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b,Label\n1,2,Benign\n")
    with pytest.raises(SourceError, match="missing column"):
        load_flow_table(bad, load_label_map("aci-iot-2023"))
