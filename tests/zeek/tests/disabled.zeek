# @TEST-DOC: With collection turned off, or a sample rate of zero, no connection is collected or sent.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE %INPUT PacketCLIP::enable=F >off
# @TEST-EXEC: zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE %INPUT PacketCLIP::sample_rate=0.0 >unsampled
# @TEST-EXEC: btest-diff off
# @TEST-EXEC: btest-diff unsampled

redef PacketCLIP::wait_for_sidecar = F;

event zeek_done()
	{
	print fmt("published=%d", PacketCLIP::requests_published);
	}
