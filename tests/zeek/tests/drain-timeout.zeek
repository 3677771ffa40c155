# @TEST-DOC: A sidecar that never answers one request: once no verdict has come for drain_timeout after the capture ended, the request is written to packetclip.log as a lost error row and Zeek exits by itself.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: timeout 60 zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE %INPUT PacketCLIP::drain_timeout=1sec >output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: zeek-cut id.resp_p label attack explanation <packetclip.log | grep -v '^4000' | sort >answered
# @TEST-EXEC: test "$(wc -l <answered)" -eq 5
# @TEST-EXEC: zeek-cut id.resp_p label attack explanation model <packetclip.log | grep '^4000' >lost
# @TEST-EXEC: btest-diff lost

# The package's counts and state are internal to module PacketCLIP (not
# exported): the test reads them from inside the module.
module PacketCLIP;

# A sidecar played in Zeek that answers every request but the one to
# 4000/udp (the capture's last connection, sent at its end).
event zeek_init()
	{
	event PacketCLIP::hello("btest-sidecar", "btest-model");
	}

hook PacketCLIP::request_policy(topic: string, req: PacketCLIP::Request)
	{
	if ( req$resp_p != 4000/udp )
		event PacketCLIP::verdict(req$uid, "benign", "benign", 0.99, "btest",
		    "btest-model");
	}

event zeek_done()
	{
	local published = counted("requests_published");
	local logged = counted("verdicts_logged");
	local lost = counted("requests_lost");

	print fmt("published=%d logged=%d lost=%d pending=%d", published, logged, lost,
	    |pending|);
	}
