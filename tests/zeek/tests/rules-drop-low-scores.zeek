# @TEST-DOC: The example policy that drops low scores keeps every row at or above its minimum and every error row, and drops the rest.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: timeout 120 zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE $SCRIPTS/fake-sidecar.zeek $RULES/drop-low-scores.zeek %INPUT
# @TEST-EXEC: test "$(zeek-cut uid <packetclip.log | wc -l)" -eq 5
# @TEST-EXEC: test "$(zeek-cut id.resp_p <packetclip.log | grep -c '^53$')" -eq 0
# @TEST-EXEC: test "$(zeek-cut label <packetclip.log | grep -c '^error$')" -eq 1
