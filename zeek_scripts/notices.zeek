##! Notices from the sidecar's verdicts: a verdict whose score reaches its
##! class's threshold raises :zeek:see:`PacketCLIP::DoS`,
##! :zeek:see:`PacketCLIP::Recon` or :zeek:see:`PacketCLIP::BruteForce`, and a
##! user-written mission's score above its threshold raises
##! :zeek:see:`PacketCLIP::UserMission`, each identified by originator and
##! class (or mission) and suppressed for
##! :zeek:see:`PacketCLIP::notice_suppress_for`.
##!
##! Verdicts an allowlist allows raise none: the sidecar's (its
##! :zeek:see:`PacketCLIP::allowed` event) or the ``allow_*`` options here.
##! Their rows in ``packetclip.log`` still stand, marked allowed.
##!
##! What it does not do: write ``packetclip.log`` (``log.zeek``, which raises
##! a verdict's notice right after its row).

@load base/frameworks/notice
@load ./transport

module PacketCLIP;

export {
	redef enum Notice::Type += {
		## The sidecar classified a connection as denial of service
		## (floods, slow-rate exhaustion) with at least the class's
		## score threshold.
		DoS,
		## The sidecar classified a connection as reconnaissance
		## (port and OS scans, sweeps, vulnerability scans).
		Recon,
		## The sidecar classified a connection as brute force against
		## a login service.
		BruteForce,
		## A user-written mission (``packetclip serve --missions``)
		## scored a connection at least its threshold in
		## :zeek:see:`PacketCLIP::mission_thresholds`.
		UserMission,
	};

	## Lowest score per coarse class that raises a notice. Classes not in
	## the table (``benign``, ``error``) never raise one.
	option notice_thresholds: table[string] of double = {
		["dos"] = 0.8,
		["recon"] = 0.8,
		["bruteforce"] = 0.8,
	};

	## How long a notice for one originator and class is suppressed after
	## it was raised.
	option notice_suppress_for = 1hr;

	## Lowest score per user-written mission that raises a
	## :zeek:see:`PacketCLIP::UserMission` notice. Missions not in the
	## table never raise one.
	option mission_thresholds: table[string] of double = table();

	## Originators whose verdicts are allowed: their rows in
	## ``packetclip.log`` keep label and score, have ``allowed`` set and
	## the option's name at the end of the explanation, and they raise no
	## notice. Each ``allow_*`` option allows on its own; combined
	## conditions (this originator to that port), classes, services,
	## reasons and expiry belong in the sidecar's allowlist file
	## (``packetclip serve --allowlist``). Like every option, it can be
	## changed while Zeek runs through the Config framework
	## (:zeek:see:`Config::config_files`).
	option allow_orig_nets: set[subnet] = {};

	## Responders whose verdicts are allowed (see
	## :zeek:see:`PacketCLIP::allow_orig_nets`).
	option allow_resp_nets: set[subnet] = {};

	## Networks whose verdicts are allowed when either endpoint is in one
	## (see :zeek:see:`PacketCLIP::allow_orig_nets`).
	option allow_nets: set[subnet] = {};

	## Responder ports whose verdicts are allowed, e.g. ``123/udp`` (see
	## :zeek:see:`PacketCLIP::allow_orig_nets`).
	option allow_resp_ports: set[port] = {};
}

## The notice type of each coarse class that can raise one.
global notice_types: table[string] of Notice::Type = {
	["dos"] = DoS,
	["recon"] = Recon,
	["bruteforce"] = BruteForce,
};

## The name of the ``allow_*`` option that allows a connection with the
## endpoints *id*, or an empty string when none does.
function allowing_option(id: conn_id): string
	{
	if ( id$orig_h in allow_orig_nets )
		return "PacketCLIP::allow_orig_nets";

	if ( id$resp_h in allow_resp_nets )
		return "PacketCLIP::allow_resp_nets";

	if ( id$orig_h in allow_nets || id$resp_h in allow_nets )
		return "PacketCLIP::allow_nets";

	if ( id$resp_p in allow_resp_ports )
		return "PacketCLIP::allow_resp_ports";

	return "";
	}

## Raises the notice of a verdict that no allowlist allows, when its class has
## one and its score reaches the class's threshold.
function raise_notice(uid: string, where: Pending, label: string,
    attack: string, score: double, explanation: string)
	{
	if ( label !in notice_types || label !in notice_thresholds )
		return;

	if ( score < notice_thresholds[label] )
		return;

	NOTICE([$note=notice_types[label], $msg=fmt(
	    "PacketCLIP %s (%s) from %s, score %.2f", label, attack,
	    where$id$orig_h, score), $sub=explanation, $uid=uid, $id=where$id,
	    $src=where$id$orig_h, $identifier=cat(where$id$orig_h, "/", label),
	    $suppress_for=notice_suppress_for]);
	}

event mission_scores(uid: string, missions: vector of string, scores: vector of
    double)
	{
	if ( uid !in pending || |missions| != |scores| )
		return;

	local where = pending[uid];

	# An allowed verdict raises no notice, its missions' included.
	if ( where$allowed || allowing_option(where$id) != "" )
		return;

	for ( i in missions )
		{
		if ( missions[i] !in mission_thresholds
		    || scores[i] < mission_thresholds[missions[i]] )
			next;

		NOTICE([$note=UserMission, $msg=fmt(
		    "PacketCLIP mission %s from %s, score %.2f", missions[i],
		    where$id$orig_h, scores[i]), $uid=uid, $id=where$id,
		    $src=where$id$orig_h, $identifier=cat(where$id$orig_h, "/",
		    missions[i]), $suppress_for=notice_suppress_for]);
		}
	}
