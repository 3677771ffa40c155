# @TEST-DOC: Packet times that go backwards: each frame carries its packet's own time and each packetclip.log row the connection's first packet's time, where network_time() would have stayed at the latest time seen.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: timeout 120 zeek -b -r $TRACES/packetclip-backwards.pcap $PACKAGE $SCRIPTS/print-requests.zeek %INPUT >output
# @TEST-EXEC: sort output >requests
# @TEST-EXEC: btest-diff requests
# @TEST-EXEC: zeek-cut ts id.orig_p label <packetclip.log | sort >rows
# @TEST-EXEC: btest-diff rows

# A sidecar played in Zeek: hello at start-up, a benign verdict for every
# request.
event zeek_init()
	{
	event PacketCLIP::hello("btest-sidecar", "btest-model");
	}

hook PacketCLIP::request_policy(topic: string, req: PacketCLIP::Request)
	{
	event PacketCLIP::verdict(req$uid, "benign", "benign", 0.99, "btest",
	    "btest-model");
	}
