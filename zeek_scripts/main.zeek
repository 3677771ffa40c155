##! PacketCLIP verdicts for Zeek connections.
##!
##! This script collects the first frames of every connection, publishes them
##! to the packetclip sidecar as :zeek:see:`PacketCLIP::request` events, and
##! turns the sidecar's :zeek:see:`PacketCLIP::verdict` events into rows of
##! ``packetclip.log`` and into notices, except for verdicts an allowlist
##! allows (the sidecar's ``--allowlist`` file, or the ``allow_*`` options
##! here): those are logged, marked allowed, and raise no notice. The wire
##! format (event names, argument names, types and order, topics) is the
##! contract in the packetclip design document; the sidecar relies on it
##! exactly.
##!
##! What it does not do: listen for the sidecar's WebSocket connection (see
##! ``websocket.zeek``) or hold and drain a capture read with ``zeek -r``
##! (see ``offline.zeek``).

@load base/misc/version
@load base/frameworks/cluster
@load base/frameworks/logging
@load base/frameworks/notice

module PacketCLIP;

export {
	redef enum Log::ID += { LOG };

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

	## Turns frame collection on or off while Zeek runs. Connections
	## already being collected are still sent.
	option enable = T;

	## Number of frames collected per connection; the connection is sent
	## as soon as it has this many.
	option max_packets = 30;

	## Bytes of each frame sent, link-layer header included. The model
	## reads 128 bytes from the IP header on; 64 more leave room for an
	## Ethernet header with VLAN tags or a Linux cooked-capture header.
	option snaplen = 192;

	## Fraction of new connections collected, decided at a connection's
	## first packet (1.0: every connection).
	option sample_rate = 1.0;

	## A connection is sent this long after its first packet even when it
	## has fewer than :zeek:see:`PacketCLIP::max_packets` frames and is
	## still open, so that a scan's half-open attempts are classified
	## without waiting for Zeek's inactivity timeouts. Frames after it are
	## never collected. The default is the featurizer window the default
	## model is trained with: a shorter wait hands the model fewer packets
	## than it learnt from. ``packetclip serve --max-wait`` must be at
	## least this value.
	option max_wait = 5sec;

	## Topic prefix of the requests. With one shard, requests go to this
	## topic itself.
	const request_topic = "packetclip/request/" &redef;

	## Number of request shards. With more than one, a request goes to
	## ``<request_topic><k>/`` where ``k`` (0 to num_shards - 1) is chosen
	## by originator address, so one sidecar sees all of an originator's
	## connections. A sidecar subscribed to ``request_topic`` itself
	## still receives every shard.
	const num_shards = 1 &redef;

	## Topic prefix of the verdicts; this node subscribes to
	## ``<verdict_topic_prefix><node>/``.
	const verdict_topic_prefix = "packetclip/verdict/" &redef;

	## Topic on which the sidecar announces itself with
	## :zeek:see:`PacketCLIP::hello`.
	const control_topic = "packetclip/control/" &redef;

	## Name this node gives in its requests and the last part of its
	## verdict topic. Empty: :zeek:see:`Cluster::node` in a cluster,
	## ``zeek`` for a standalone Zeek.
	const node_name = "" &redef;

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

	## How long a live sensor keeps a sent request while waiting for its
	## verdict; verdicts arriving later are counted as unmatched. Reading
	## a capture with the sidecar attached, requests never expire: the
	## drain counts on every one being answered.
	const pending_expiry = 5min &redef;

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

	## A request before it is published: the arguments of
	## :zeek:see:`PacketCLIP::request`, in the same order.
	type Request: record {
		node: string;
		uid: string;
		orig_h: addr;
		orig_p: port;
		resp_h: addr;
		resp_p: port;
		link_type: count;
		ts: vector of double;
		is_orig: vector of bool;
		frames: vector of string;
	};

	## What is kept of a sent request until its verdict arrives.
	type Pending: record {
		## The connection's endpoints, for the log row and notices.
		id: conn_id;
		## Time of its first packet.
		ts: time;
		## Scores of user-written missions, as ``name=score``, when
		## :zeek:see:`PacketCLIP::mission_scores` came before the
		## verdict.
		missions: vector of string &optional;
		## Set when :zeek:see:`PacketCLIP::allowed` came before the
		## verdict.
		allowed: bool &default=F;
	};

	## Frames collected so far for one connection. The connection
	## record and the collection table share it, so a flush from a timer
	## is seen by the connection's next packet.
	type Collection: record {
		## The connection's endpoints.
		id: conn_id;
		## Time of its first packet (the connection's ``start_time``, the
		## packet's own timestamp).
		first_ts: time;
		## Set once the connection was sent or skipped: its further
		## packets are ignored.
		done: bool &default=F;
		## Per frame: the packet's own timestamp, as seconds since the
		## epoch.
		ts: vector of double &default=vector();
		## Per frame: sent by the originator.
		is_orig: vector of bool &default=vector();
		## Per frame: base64 of the first snaplen bytes.
		frames: vector of string &default=vector();
	};

	## Zeek -> sidecar: the first frames of one connection.
	##
	## node: the publishing node; verdicts return on
	##   ``packetclip/verdict/<node>/``.
	## uid: the connection's uid.
	## orig_h, orig_p, resp_h, resp_p: the connection's endpoints.
	## link_type: the capture's data-link type number (1 = Ethernet).
	## ts: per frame, seconds since the epoch.
	## is_orig: per frame, sent by the originator.
	## frames: per frame, base64 of its first snaplen bytes, link-layer
	##   header included.
	global request: event(node: string, uid: string, orig_h: addr, orig_p: port,
	    resp_h: addr, resp_p: port, link_type: count, ts: vector of double,
	    is_orig: vector of bool, frames: vector of string);

	## Sidecar -> Zeek: the verdict on one connection. The package logs it
	## and raises notices; handle it too for actions of your own.
	##
	## uid: the connection's uid, as in the request.
	## label: coarse class, or ``error``.
	## attack: fine class.
	## score: probability of label.
	## explanation: why, in one or two sentences (the reason for errors).
	## model: version of the model bundle.
	global verdict: event(uid: string, label: string, attack: string,
	    score: double, explanation: string, model: string);

	## Sidecar -> Zeek, on the same topic, right before the verdict of a
	## connection, when the sidecar scores user-written missions.
	##
	## uid: the connection's uid, as in the request.
	## missions: names of the user-written missions.
	## scores: each mission's score (a probability), in the same order.
	global mission_scores: event(uid: string, missions: vector of string,
	    scores: vector of double);

	## Sidecar -> Zeek, on the same topic, right before the verdict of a
	## connection its allowlist allows (and before
	## :zeek:see:`PacketCLIP::mission_scores`). The verdict's row is marked
	## allowed, and neither it nor the mission scores raise a notice.
	##
	## uid: the connection's uid, as in the request.
	## reason: why the allowlist allows it (the verdict's explanation ends
	##   with it too).
	global allowed: event(uid: string, reason: string);

	## Sidecar -> Zeek, once it has subscribed: it is ready for requests.
	##
	## sidecar: the sidecar's name.
	## model: version of its active model bundle.
	global hello: event(sidecar: string, model: string);

	## Called for each request before it is published. Break from it to
	## drop the request (for example, for traffic you never want sent).
	##
	## topic: where the request is about to be published.
	## req: the request's arguments.
	global request_policy: hook(topic: string, req: Request);

	## Called before each ``packetclip.log`` row is written; break to drop
	## the row.
	global log_policy: Log::PolicyHook;

	## Raised for each row written to ``packetclip.log``.
	global log_packetclip: event(rec: Info);

	## Name of this node as sent in requests.
	global this_node: function(): string;

	## The name of the ``allow_*`` option that allows a connection with
	## the endpoints *id*, or an empty string when none does.
	global allowing_option: function(id: conn_id): string;

	## The topic a request about a connection from *orig_h* goes to.
	global request_topic_for: function(orig_h: addr): string;

	## Sends every connection collected but not yet sent.
	global flush_all: function();

	## Called by the table expiry for a request whose verdict never came.
	global pending_expired: function(t: table[string] of Pending, uid: string)
	    : interval;

	## Sent requests waiting for their verdicts, by uid.
	global pending: table[string] of Pending &create_expire=pending_expiry
	    &expire_func=pending_expired;

	## Keeps every pending request, whatever its age, while it is set:
	## reading a capture with the sidecar attached, network time runs far
	## ahead of the sidecar's answers, and the drain at the end counts
	## on every request being answered.
	global hold_pending = F;

	## Requests published.
	global requests_published = 0;
	## Verdicts written to the log.
	global verdicts_logged = 0;
	## Verdicts written to the log as allowed.
	global verdicts_allowed = 0;
	## Verdicts for no pending request (expired, answered twice, or
	## never asked).
	global verdicts_unmatched = 0;
	## Requests given up without a verdict.
	global requests_expired = 0;
	## Requests dropped by a :zeek:see:`PacketCLIP::request_policy` hook.
	global requests_vetoed = 0;
	## Connections not sent because no packet source reported a data-link
	## type (the sidecar cannot read frames without one).
	global requests_without_link_type = 0;
	## Requests published again by :zeek:see:`PacketCLIP::resend_pending`.
	global requests_resent = 0;
	## Second verdicts for a request that was published again (the
	## sidecar had received it after all); not counted as unmatched.
	global verdicts_duplicate = 0;

	## Sent requests kept whole while :zeek:see:`PacketCLIP::hold_pending`
	## is set, by uid, so that they can be published again.
	global held_requests: table[string] of Request;

	## Gives up waiting for the verdict of request *uid*: writes its row to
	## ``packetclip.log`` with label ``error`` and *reason* as the
	## explanation, so that the loss is visible per connection.
	global give_up: function(uid: string, reason: string);

	## Requests given up by :zeek:see:`PacketCLIP::give_up`.
	global requests_lost = 0;

	## Publishes every request still waiting for its verdict again (those
	## kept in :zeek:see:`PacketCLIP::held_requests`): a sidecar that
	## (re)connects has never seen the requests published while no sidecar
	## was subscribed, nor those its previous run had not answered.
	global resend_pending: function(): count;

	## The capture's data-link type number (1 Ethernet, 113 Linux SLL,
	## ...), read from :zeek:see:`packet_source` while it is open; -1 until
	## a packet source has reported one.
	global capture_link_type = -1;
}

redef record connection += {
	## The package's frames of this connection; ``done`` is the early exit
	## of every later packet.
	packetclip: Collection &optional;
};

## Connections collecting frames, by uid; kept beside the connection records
## so that the end of a capture can send the ones still open.
global collecting: table[string] of Collection;

## Raised max_wait after a connection's first packet.
global max_wait_reached: event(uid: string);

## Shared by every connection that is not collected, so skipping one costs no
## allocation.
global skipped = Collection($id=conn_id($orig_h=0.0.0.0, $orig_p=0/unknown,
    $resp_h=0.0.0.0, $resp_p=0/unknown), $first_ts=double_to_time(0.0),
    $done=T);

## The notice type of each coarse class that can raise one.
global notice_types: table[string] of Notice::Type = {
	["dos"] = DoS,
	["recon"] = Recon,
	["bruteforce"] = BruteForce,
};

## Uids of requests published again, so that a second verdict for one is
## counted as a duplicate rather than as unmatched.
global resent_uids: set[string];

function this_node(): string
	{
	if ( node_name != "" )
		return node_name;

	if ( Cluster::is_enabled() )
		return Cluster::node;

	return "zeek";
	}

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

function request_topic_for(orig_h: addr): string
	{
	if ( num_shards <= 1 )
		return request_topic;

	# The last 32-bit word of the address (all of an IPv4 address, the
	# interface identifier's low half of an IPv6 one): every Zeek process
	# of a cluster picks the same shard for one originator.
	local words = addr_to_counts(orig_h);
	local last_word = words[|words| - 1];

	return fmt("%s%d/", request_topic, last_word % num_shards);
	}

function pending_expired(t: table[string] of Pending, uid: string): interval
	{
	if ( hold_pending )
		return pending_expiry;

	++requests_expired;
	return 0secs;
	}

## Reads the data-link type from the packet source, unless it is known. A
## source that is not open (a capture at ``Pcap::file_done``, when most
## connections are flushed) reports -1: that value is never kept.
function note_link_type()
	{
	if ( capture_link_type >= 0 )
		return;

	local source = packet_source();
	if ( source$link_type >= 0 )
		capture_link_type = source$link_type;
	}

function subscribe(topic: string)
	{
@if ( Version::at_least("7.1") )
	Cluster::subscribe(topic);
@else
	Broker::subscribe(topic);
@endif
	}

function publish(topic: string, req: Request)
	{
@if ( Version::at_least("7.1") )
	Cluster::publish(topic, request, req$node, req$uid, req$orig_h, req$orig_p,
	    req$resp_h, req$resp_p, req$link_type, req$ts, req$is_orig,
	    req$frames);
@else
	Broker::publish(topic, request, req$node, req$uid, req$orig_h, req$orig_p,
	    req$resp_h, req$resp_p, req$link_type, req$ts, req$is_orig,
	    req$frames);
@endif
	}

## Sends one connection's collected frames and forgets them.
function flush(uid: string)
	{
	if ( uid !in collecting )
		return;

	local col = collecting[uid];
	delete collecting[uid];
	col$done = T;

	# Normally known since the connection's first packet; read again in
	# case no packet source had reported it then.
	note_link_type();
	if ( capture_link_type < 0 )
		{
		if ( requests_without_link_type == 0 )
			Reporter::warning("packetclip: the packet source reports no data-link type; connections are not sent");

		++requests_without_link_type;
		return;
		}

	local req = Request($node=this_node(), $uid=uid, $orig_h=col$id$orig_h,
	    $orig_p=col$id$orig_p, $resp_h=col$id$resp_h, $resp_p=col$id$resp_p,
	    $link_type=int_to_count(capture_link_type), $ts=col$ts,
	    $is_orig=col$is_orig, $frames=col$frames);

	# The connection record keeps the collection until Zeek removes it:
	# drop the frames now.
	col$ts = vector();
	col$is_orig = vector();
	col$frames = vector();

	local topic = request_topic_for(req$orig_h);
	if ( ! hook request_policy(topic, req) )
		{
		++requests_vetoed;
		return;
		}

	pending[uid] = Pending($id=col$id, $ts=col$first_ts);
	if ( hold_pending )
		held_requests[uid] = req;

	publish(topic, req);
	++requests_published;
	}

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

function give_up(uid: string, reason: string)
	{
	if ( uid !in pending )
		return;

	local where = pending[uid];
	delete pending[uid];
	delete held_requests[uid];

	write_row(uid, where, "error", "error", 0.0, reason, "", F);
	++requests_lost;
	}

function resend_pending(): count
	{
	local sent = 0;
	for ( uid, req in held_requests )
		{
		publish(request_topic_for(req$orig_h), req);
		add resent_uids[uid];
		++sent;
		}

	requests_resent += sent;
	return sent;
	}

function flush_all()
	{
	# Flushing deletes from the table: iterate over a copy of its keys.
	local uids: vector of string = vector();
	for ( uid in collecting )
		uids[|uids|] = uid;

	for ( i in uids )
		flush(uids[i]);
	}

function sent_by_originator(c: connection, p: pkt_hdr): bool
	{
	local src: addr;
	if ( p?$ip )
		src = p$ip$src;
	else if ( p?$ip6 )
		src = p$ip6$src;
	else
		return T;

	if ( src != c$id$orig_h )
		return F;

	# A connection between two ports of one host: the source port tells.
	if ( c$id$orig_h == c$id$resp_h )
		{
		if ( p?$tcp )
			return p$tcp$sport == c$id$orig_p;
		if ( p?$udp )
			return p$udp$sport == c$id$orig_p;
		}

	return T;
	}

function sampled(): bool
	{
	if ( sample_rate >= 1.0 )
		return T;

	return rand(1000000) < double_to_count(sample_rate * 1000000.0);
	}

function start_collection(c: connection): Collection
	{
	if ( ! enable || ! sampled() )
		return skipped;

	# The packet source is open while it hands over a packet: read the
	# link type now, not at the end of a capture, when it reports -1.
	note_link_type();

	local col = Collection($id=c$id, $first_ts=c$start_time);
	collecting[c$uid] = col;
	schedule max_wait { max_wait_reached(c$uid) };
	return col;
	}

## The current packet's own timestamp. Zeek never moves network time
## backwards, so network_time() is wrong for a packet whose timestamp is
## earlier than one seen before.
function packet_time(frame: pcap_packet): double
	{
	return count_to_double(frame$ts_sec) + count_to_double(frame$ts_usec) /
	    1000000.0;
	}

function collect(c: connection, p: pkt_hdr)
	{
	if ( ! c?$packetclip )
		c$packetclip = start_collection(c);

	local col = c$packetclip;
	if ( col$done )
		return;

	# For a fragmented datagram Zeek raises new_packet once, when the
	# datagram is reassembled, and the current packet is the fragment
	# that completed it (often a later fragment, without a transport
	# header). That frame is sent as it is: the sidecar takes a later
	# fragment as a packet of the connection, as packetclip classify
	# does.
	local frame = get_current_packet();
	local n = |col$frames|;
	col$ts[n] = packet_time(frame);
	col$is_orig[n] = sent_by_originator(c, p);
	col$frames[n] = encode_base64(sub_bytes(frame$data, 1, snaplen));

	if ( n + 1 >= max_packets )
		flush(c$uid);
	}

event new_packet(c: connection, p: pkt_hdr)
	{
	# Runs for every packet Zeek sees: anything after this test runs only
	# for a connection's first max_packets packets.
	if ( c?$packetclip && c$packetclip$done )
		return;

	collect(c, p);
	}

event max_wait_reached(uid: string)
	{
	flush(uid);
	}

event connection_state_remove(c: connection)
	{
	if ( c?$packetclip && ! c$packetclip$done )
		flush(c$uid);
	}

event Pcap::file_done(path: string)
	{
	# Most connections of a capture are still open at its end (a scan's
	# half-open attempts, for one): send them all now.
	flush_all();
	}

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

event verdict(uid: string, label: string, attack: string, score: double,
    explanation: string, model: string) &priority=5
	{
	if ( uid !in pending )
		{
		if ( uid in resent_uids )
			++verdicts_duplicate;
		else
			++verdicts_unmatched;

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
	++verdicts_logged;

	if ( is_allowed )
		++verdicts_allowed;
	else
		raise_notice(uid, where, label, attack, score, text);
	}

event allowed(uid: string, reason: string)
	{
	if ( uid in pending )
		pending[uid]$allowed = T;
	}

event mission_scores(uid: string, missions: vector of string, scores: vector of
    double)
	{
	if ( uid !in pending || |missions| != |scores| )
		return;

	local where = pending[uid];
	local entries: vector of string = vector();

	# An allowed verdict raises no notice, its missions' included.
	local quiet = where$allowed || allowing_option(where$id) != "";

	for ( i in missions )
		{
		entries[|entries|] = fmt("%s=%.6f", missions[i], scores[i]);

		if ( quiet
		    || missions[i] !in mission_thresholds
		    || scores[i] < mission_thresholds[missions[i]] )
			next;

		NOTICE([$note=UserMission, $msg=fmt(
		    "PacketCLIP mission %s from %s, score %.2f", missions[i],
		    where$id$orig_h, scores[i]), $uid=uid, $id=where$id,
		    $src=where$id$orig_h, $identifier=cat(where$id$orig_h, "/",
		    missions[i]), $suppress_for=notice_suppress_for]);
		}

	where$missions = entries;
	}

event zeek_init() &priority=5
	{
	Log::create_stream(LOG, [$columns=Info, $ev=log_packetclip, $path="packetclip",
	    $policy=log_policy]);
	}

event zeek_init()
	{
	subscribe(fmt("%s%s/", verdict_topic_prefix, this_node()));
	subscribe(control_topic);
	}

event zeek_done()
	{
	if ( requests_expired > 0
	    || verdicts_unmatched > 0
	    || requests_without_link_type > 0 )
		Reporter::warning(fmt("packetclip: %d requests published, %d verdicts logged, %d requests expired without a verdict, %d verdicts unmatched, %d connections not sent for want of a link type",
		    requests_published, verdicts_logged, requests_expired,
		    verdicts_unmatched, requests_without_link_type));
	}
