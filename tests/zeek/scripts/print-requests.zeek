##! Prints every request the package publishes, one line each, in the format
##! tests/zeekscripts/zeek_view.py computes from a capture: endpoints, link
##! type, number of frames, directions, per frame whether it is a whole
##! datagram (N), a first (F) or a later (L) IP fragment, and each frame's
##! time.

module PrintRequests;

## Where the IP header starts in a frame, per link type of the test captures.
function ip_offset(link_type: count): count
	{
	return link_type == 113 ? 16 : 14;
	}

function fragment_kind(frame: string, ip_off: count): string
	{
	local field = bytestring_to_count(sub_bytes(frame, ip_off + 7, 2));
	if ( field % 8192 > 0 )
		return "L";

	if ( ( field / 8192 ) % 2 == 1 )
		return "F";

	return "N";
	}

hook PacketCLIP::request_policy(topic: string, req: PacketCLIP::Request)
	{
	local dirs = "";
	local kinds = "";
	local times = "";
	for ( i in req$frames )
		{
		dirs += req$is_orig[i] ? "T" : "F";
		kinds += fragment_kind(decode_base64(req$frames[i]), ip_offset(
		    req$link_type));
		times += fmt("%s%.6f", i == 0 ? "" : ",", req$ts[i]);
		}

	print fmt("%s:%s -> %s:%s link=%d n=%d dirs=%s frags=%s ts=%s", req$orig_h,
	    req$orig_p, req$resp_h, req$resp_p, req$link_type, |req$frames|,
	    dirs, kinds, times);
	}
