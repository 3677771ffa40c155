# @TEST-DOC: The example notice policy adds the e-mail action to brute-force notices and to no other.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: timeout 120 zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE $SCRIPTS/fake-sidecar.zeek $RULES/email-bruteforce.zeek %INPUT
# @TEST-EXEC: zeek-cut note actions <notice.log >actions
# @TEST-EXEC: grep '^PacketCLIP::BruteForce' actions | grep -q 'Notice::ACTION_EMAIL'
# @TEST-EXEC: grep '^PacketCLIP::Recon' actions | grep -vq 'Notice::ACTION_EMAIL'
