# @TEST-DOC: With collection turned off, or a sample rate of zero, no connection is collected or sent.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE %INPUT PacketCLIP::enable=F >off
# @TEST-EXEC: zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE %INPUT PacketCLIP::sample_rate=0.0 >unsampled
# @TEST-EXEC: btest-diff off
# @TEST-EXEC: btest-diff unsampled

# The package's counts and state are internal to module PacketCLIP (not
# exported): the test reads them from inside the module.
module PacketCLIP;

redef PacketCLIP::wait_for_sidecar = F;

event zeek_done()
	{
	local published = counted("requests_published");

	print fmt("published=%d", published);
	}
