# @TEST-DOC: Allowed verdicts, by the sidecar's allowlist (PacketCLIP::allowed before the verdict) or by an allow_* option: their rows keep label and attack and are marked allowed, the option's name ends the explanation of a row it allows, and neither they nor their user-written missions raise a notice; the other rows and notices stay as they were.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: timeout 120 zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE $SCRIPTS/fake-sidecar.zeek %INPUT >output
# @TEST-EXEC: zeek-cut id.orig_h id.resp_p label attack allowed explanation <packetclip.log | sort >rows
# @TEST-EXEC: btest-diff rows
# @TEST-EXEC: zeek-cut note src id.resp_p <notice.log | sort >notices
# @TEST-EXEC: btest-diff notices
# @TEST-EXEC: btest-diff output

# The package's counts and state are internal to module PacketCLIP (not
# exported): the test reads them from inside the module.
module PacketCLIP;

redef PacketCLIP::mission_thresholds = {["web_probe"] = 0.9};

# Without it, 10.0.0.9's port scan raises PacketCLIP::Recon and its mission
# PacketCLIP::UserMission (the verdicts test).
redef PacketCLIP::allow_orig_nets = {10.0.0.9/32};

# The sidecar's allowlist allows the SSH connection: the allowed event comes
# before the verdict that fake-sidecar.zeek raises in its own hook.
hook PacketCLIP::request_policy(topic: string, req: PacketCLIP::Request)
    &priority=10
	{
	if ( req$resp_p == 22/tcp )
		event PacketCLIP::allowed(req$uid, "the jump host's logins");
	}

event zeek_done()
	{
	local published = counted("requests_published");
	local logged = counted("verdicts_logged");
	local allowed_rows = counted("verdicts_allowed");
	local unmatched = counted("verdicts_unmatched");

	print fmt("published=%d logged=%d allowed=%d unmatched=%d pending=%d",
	    published, logged, allowed_rows, unmatched, |pending|);
	}
