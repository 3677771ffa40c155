##! PacketCLIP verdicts for Zeek connections.
##!
##! This script collects the first frames of every connection, publishes them
##! to the packetclip sidecar as :zeek:see:`PacketCLIP::request` events, and
##! turns the sidecar's :zeek:see:`PacketCLIP::verdict` events into rows of
##! ``packetclip.log`` and into notices. The wire format (event names, argument
##! names, types and order, topics) is the contract in the packetclip design
##! document; the sidecar relies on it exactly.
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
	## without waiting for Zeek's inactivity timeouts.
	option max_wait = 1500msec;

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
	};

	## Frames collected so far for one connection. The connection
	## record and the collection table share it, so a flush from a timer
	## is seen by the connection's next packet.
	type Collection: record {
		## The connection's endpoints.
		id: conn_id;
		## Time of its first packet.
		first_ts: time;
		## Set once the connection was sent or skipped: its further
		## packets are ignored.
		done: bool &default=F;
		## Per frame: time as seconds since the epoch.
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
	## Verdicts for no pending request (expired, answered twice, or
	## never asked).
	global verdicts_unmatched = 0;
	## Requests given up without a verdict.
	global requests_expired = 0;
	## Requests dropped by a :zeek:see:`PacketCLIP::request_policy` hook.
	global requests_vetoed = 0;
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

## The capture's data-link type, read from the packet source once.
global link_type_cache = 0;
global link_type_known = F;

function this_node(): string
	{
	if ( node_name != "" )
		return node_name;

	if ( Cluster::is_enabled() )
		return Cluster::node;

	return "zeek";
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

function capture_link_type(): count
	{
	if ( ! link_type_known )
		{
		local source = packet_source();
		if ( source?$link_type && source$link_type >= 0 )
			link_type_cache = int_to_count(source$link_type);

		link_type_known = T;
		}

	return link_type_cache;
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

	local req = Request($node=this_node(), $uid=uid, $orig_h=col$id$orig_h,
	    $orig_p=col$id$orig_p, $resp_h=col$id$resp_h, $resp_p=col$id$resp_p,
	    $link_type=capture_link_type(), $ts=col$ts, $is_orig=col$is_orig,
	    $frames=col$frames);

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
	publish(topic, req);
	++requests_published;
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

	local col = Collection($id=c$id, $first_ts=network_time());
	collecting[c$uid] = col;
	schedule max_wait { max_wait_reached(c$uid) };
	return col;
	}

function collect(c: connection, p: pkt_hdr)
	{
	if ( ! c?$packetclip )
		c$packetclip = start_collection(c);

	local col = c$packetclip;
	if ( col$done )
		return;

	local frame = get_current_packet();
	local n = |col$frames|;
	col$ts[n] = time_to_double(network_time());
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
		++verdicts_unmatched;
		return;
		}

	local where = pending[uid];
	delete pending[uid];

	Log::write(LOG, Info($ts=where$ts, $uid=uid, $id=where$id, $label=label,
	    $attack=attack, $score=score, $explanation=explanation,
	    $model=model));
	++verdicts_logged;

	raise_notice(uid, where, label, attack, score, explanation);
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
	if ( requests_expired > 0 || verdicts_unmatched > 0 )
		Reporter::warning(fmt("packetclip: %d requests published, %d verdicts logged, %d requests expired without a verdict, %d verdicts unmatched",
		    requests_published, verdicts_logged, requests_expired,
		    verdicts_unmatched));
	}
