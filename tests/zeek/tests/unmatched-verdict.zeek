# @TEST-DOC: A verdict for a uid with no pending request (never asked, or answered twice) is counted, writes no row and raises no notice.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE %INPUT >output
# @TEST-EXEC: btest-diff output
# @TEST-EXEC: test ! -e packetclip.log
# @TEST-EXEC: test ! -e notice.log

# The package's counts and state are internal to module PacketCLIP (not
# exported): the test reads them from inside the module.
module PacketCLIP;

redef PacketCLIP::wait_for_sidecar = F;

event zeek_init()
	{
	event PacketCLIP::verdict("CnotAsked", "dos", "syn_flood", 0.99, "never asked",
	    "btest-model");
	}

event zeek_done()
	{
	local logged = counted("verdicts_logged");
	local unmatched = counted("verdicts_unmatched");

	print fmt("logged=%d unmatched=%d", logged, unmatched);
	}
