##! ``packetclip.log``: one row per connection the sidecar answered, in the
##! layout ``packetclip classify --format zeek`` writes too. Each
##! :zeek:see:`PacketCLIP::verdict` for a pending request becomes a row; a
##! verdict an allowlist allows (the sidecar's
##! :zeek:see:`PacketCLIP::allowed`, or an ``allow_*`` option) is marked
##! allowed and raises no notice, any other one goes on to
##! ``notices.zeek``. A verdict for no pending request writes nothing and is
##! counted.
##!
##! What it does not do: decide which verdicts raise notices
##! (``notices.zeek``) or keep requests pending (``transport.zeek``).

@load base/frameworks/logging
@load ./transport
@load ./notices

module PacketCLIP;

export {
	redef enum Log::ID += { LOG };

	## One row of ``packetclip.log``: the sidecar's verdict on one
	## connection.
	type Info: record {
		## Time of the connection's first packet.
		ts: time &log;
		## Zeek's unique connection identifier.
		uid: string &log;
		## The connection's endpoints.
		id: conn_id &log;
		## Transport protocol of the connection.
		proto: transport_proto &log;
		## Community ID (v1) of the connection's flow.
		community_id: string &log;
		## Coarse class: ``benign``, ``dos``, ``recon``, ``bruteforce``,
		## or ``error`` when the sidecar could not classify it.
		label: string &log;
		## Fine class, e.g. ``syn_flood`` or ``port_scan``.
		attack: string &log;
		## Probability of ``label``.
		score: double &log;
		## One or two sentences built from facts of the packets (for
		## ``error``, the reason).
		explanation: string &log;
		## Version of the model bundle that classified it.
		model: string &log;
		## Scores of the user-written missions the sidecar scores, as
		## ``name=score``; unset when it scores none.
		missions: vector of string &log &optional;
		## The verdict is allowed: the sidecar's allowlist (see
		## :zeek:see:`PacketCLIP::allowed`) or an ``allow_*`` option
		## matched. Label and score stand, the explanation ends with the
		## reason, and no notice was raised.
		allowed: bool &log &default=F;
	};

	## Called before each ``packetclip.log`` row is written; break to drop
	## the row.
	global log_policy: Log::PolicyHook;

	## Raised for each row written to ``packetclip.log``.
	global log_packetclip: event(rec: Info);
}

global verdicts_logged = register_counter("verdicts_logged",
    "Verdicts written to packetclip.log.");
global verdicts_allowed = register_counter("verdicts_allowed",
    "Verdicts written to packetclip.log as allowed.");
global verdicts_unmatched = register_counter("verdicts_unmatched",
    "Verdicts for no pending request (expired, answered twice, or never asked).");
global verdicts_duplicate = register_counter("verdicts_duplicate",
    "Second verdicts for a request that was published again.");
global requests_lost = register_counter("requests_lost",
    "Requests given up without a verdict, logged as lost error rows.");

## One row of packetclip.log, in the layout packetclip classify writes too.
function write_row(uid: string, where: Pending, label: string, attack: string,
    score: double, explanation: string, model: string, is_allowed: bool)
	{
	local info = Info($ts=where$ts, $uid=uid, $id=where$id,
	    $proto=get_port_transport_proto(where$id$resp_p),
	    $community_id=community_id_v1(where$id), $label=label,
	    $attack=attack, $score=score, $explanation=explanation,
	    $model=model, $allowed=is_allowed);

	if ( where?$missions )
		info$missions = where$missions;

	Log::write(LOG, info);
	}

## Gives up waiting for the verdict of request *uid*: writes its row with
## label ``error`` and *reason* as the explanation, so that the loss is
## visible per connection.
function give_up(uid: string, reason: string)
	{
	if ( uid !in pending )
		return;

	local where = pending[uid];
	delete pending[uid];
	delete held_requests[uid];

	write_row(uid, where, "error", "error", 0.0, reason, "", F);
	Telemetry::counter_inc(requests_lost);
	}

event verdict(uid: string, label: string, attack: string, score: double,
    explanation: string, model: string) &priority=5
	{
	if ( uid !in pending )
		{
		if ( uid in resent_uids )
			Telemetry::counter_inc(verdicts_duplicate);
		else
			Telemetry::counter_inc(verdicts_unmatched);

		return;
		}

	local where = pending[uid];
	delete pending[uid];
	delete held_requests[uid];

	# Allowed by the sidecar's allowlist (its reason already ends the
	# explanation), or by an allow_* option now. Either way the verdict
	# stands; only the notice is kept back. An error says nothing about the
	# traffic, so nothing allows it.
	local is_allowed = where$allowed;
	local text = explanation;
	local by = "";
	if ( ! is_allowed && label != "error" )
		by = allowing_option(where$id);

	if ( by != "" )
		{
		is_allowed = T;
		text = fmt("%s Allowed: %s.", explanation, by);
		}

	write_row(uid, where, label, attack, score, text, model, is_allowed);
	Telemetry::counter_inc(verdicts_logged);

	if ( is_allowed )
		Telemetry::counter_inc(verdicts_allowed);
	else
		raise_notice(uid, where, label, attack, score, text);
	}

event mission_scores(uid: string, missions: vector of string, scores: vector of
    double)
	{
	if ( uid !in pending || |missions| != |scores| )
		return;

	local entries: vector of string = vector();
	for ( i in missions )
		entries[|entries|] = fmt("%s=%.6f", missions[i], scores[i]);

	pending[uid]$missions = entries;
	}

event zeek_init() &priority=5
	{
	Log::create_stream(LOG, [$columns=Info, $ev=log_packetclip, $path="packetclip",
	    $policy=log_policy]);
	}

event zeek_done()
	{
	local published = counted("requests_published");
	local logged = counted("verdicts_logged");
	local expired = counted("requests_expired");
	local unmatched = counted("verdicts_unmatched");
	local without_link_type = counted("requests_without_link_type");

	if ( expired > 0 || unmatched > 0 || without_link_type > 0 )
		Reporter::warning(fmt("packetclip: %d requests published, %d verdicts logged, %d requests expired without a verdict, %d verdicts unmatched, %d connections not sent for want of a link type",
		    published, logged, expired, unmatched, without_link_type));
	}
