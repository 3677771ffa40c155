# @TEST-DOC: The offline path end to end with a sidecar played in Zeek: the capture waits for hello, every request gets its verdict row in packetclip.log (error verdicts included) in the layout packetclip classify writes, notices are raised per class above threshold and suppressed per originator, user-written missions' scores fill the missions column and raise their notice above its threshold, and Zeek exits by itself once nothing is pending.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: timeout 120 zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE $SCRIPTS/fake-sidecar.zeek %INPUT >output
# @TEST-EXEC: zeek-cut id.orig_h id.orig_p id.resp_h id.resp_p label attack model missions <packetclip.log | sort >verdicts
# @TEST-EXEC: btest-diff verdicts
# @TEST-EXEC: zeek-cut note src <notice.log | sort >notices
# @TEST-EXEC: btest-diff notices
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: grep -E '^#(fields|types)' packetclip.log >header
# @TEST-EXEC: btest-diff header

# The package's counts and state are internal to module PacketCLIP (not
# exported): the test reads them from inside the module.
module PacketCLIP;

redef PacketCLIP::mission_thresholds = {["web_probe"] = 0.9};

event zeek_done()
	{
	local published = counted("requests_published");
	local logged = counted("verdicts_logged");
	local unmatched = counted("verdicts_unmatched");

	print fmt("published=%d logged=%d unmatched=%d pending=%d draining=%s",
	    published, logged, unmatched, |pending|, draining);
	}
