# @TEST-DOC: Reading the capture with no sidecar, the package publishes one request per connection: its endpoints, the capture's link type, at most max_packets frames cut to snaplen with their directions, on the unsharded topic.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE %INPUT >output
# @TEST-EXEC: sort output >requests
# @TEST-EXEC: btest-diff requests

redef PacketCLIP::wait_for_sidecar = F;

hook PacketCLIP::request_policy(topic: string, req: PacketCLIP::Request)
	{
	local dirs = "";
	local bytes = 0;
	local times_ok = |req$ts| == |req$frames| && |req$is_orig| == |req$frames|;
	for ( i in req$frames )
		{
		dirs += req$is_orig[i] ? "T" : "F";
		bytes += |decode_base64(req$frames[i])|;
		if ( req$ts[i] < 1700000000.0 || ( i > 0 && req$ts[i] < req$ts[i - 1] ) )
			times_ok = F;
		}

	print fmt("%s %s:%s -> %s:%s link=%d n=%d dirs=%s bytes=%d times=%s topic=%s",
	    req$node, req$orig_h, req$orig_p, req$resp_h, req$resp_p,
	    req$link_type, |req$frames|, dirs, bytes, times_ok, topic);
	}
