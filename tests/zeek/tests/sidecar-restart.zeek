# @TEST-DOC: A sidecar that goes away before answering and comes back after the capture ended: its new hello makes Zeek publish every request still without a verdict again, each connection gets exactly one row, and Zeek exits.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: timeout 60 zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE %INPUT >output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: test "$(zeek-cut uid <packetclip.log | sort -u | wc -l)" -eq 6
# @TEST-EXEC: test "$(zeek-cut label <packetclip.log | grep -c '^benign$')" -eq 6

# The package's counts and state are internal to module PacketCLIP (not
# exported): the test reads them from inside the module.
module PacketCLIP;

# A sidecar played in Zeek: hello at start-up, then nothing (it died with
# every request unanswered); after the capture it restarts and says hello
# again, and answers what Zeek publishes again.
global restarted = F;

event zeek_init()
	{
	event PacketCLIP::hello("btest-sidecar", "btest-model");
	}

# After the drain has begun (offline.zeek's handler runs at -10).
event Pcap::file_done(path: string) &priority=-20
	{
	restarted = T;
	event PacketCLIP::hello("btest-sidecar-2", "btest-model");
	}

# After the package's handler has published the pending requests again.
event PacketCLIP::hello(sidecar: string, model: string) &priority=-5
	{
	if ( ! restarted )
		return;

	for ( uid in held_requests )
		event PacketCLIP::verdict(uid, "benign", "benign", 0.99, "btest",
		    "btest-model");
	}

event zeek_done()
	{
	local published = counted("requests_published");
	local resent = counted("requests_resent");
	local logged = counted("verdicts_logged");
	local duplicate = counted("verdicts_duplicate");
	local lost = counted("requests_lost");

	print fmt("published=%d resent=%d logged=%d duplicate=%d lost=%d pending=%d",
	    published, resent, logged, duplicate, lost, |pending|);
	}
