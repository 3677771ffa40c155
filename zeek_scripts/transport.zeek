##! The wire between Zeek and the packetclip sidecar: the events of the
##! contract, their topics, sharding by originator, and the requests published
##! but not yet answered.
##!
##! The wire format (event names, argument names, types and order, topics) is
##! the contract in the packetclip design document; the sidecar relies on it
##! exactly. Zeek 7.1 and later publish and subscribe through ``Cluster::``,
##! older versions through ``Broker::``.
##!
##! What it does not do: collect frames (``collection.zeek``), turn verdicts
##! into rows and notices (``log.zeek``, ``notices.zeek``), or open the
##! WebSocket endpoint the sidecar connects to (``websocket.zeek``).

@load base/misc/version
@load base/frameworks/cluster
@load base/frameworks/telemetry

module PacketCLIP;

export {
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

	## How long a live sensor keeps a sent request while waiting for its
	## verdict; verdicts arriving later are counted as unmatched. Reading
	## a capture with the sidecar attached, requests never expire: the
	## drain counts on every one being answered.
	const pending_expiry = 5min &redef;

	## A request before it is published: the arguments of
	## :zeek:see:`PacketCLIP::request`, in the same order.
	type Request: record {
		## The publishing node (see :zeek:see:`PacketCLIP::node_name`).
		node: string;
		## The connection's uid.
		uid: string;
		## The connection's originator address.
		orig_h: addr;
		## The connection's originator port.
		orig_p: port;
		## The connection's responder address.
		resp_h: addr;
		## The connection's responder port.
		resp_p: port;
		## The capture's data-link type number (1 = Ethernet, 113 = Linux
		## cooked capture).
		link_type: count;
		## Per frame: the packet's own timestamp, as seconds since the
		## epoch.
		ts: vector of double;
		## Per frame: sent by the originator.
		is_orig: vector of bool;
		## Per frame: base64 of its first
		## :zeek:see:`PacketCLIP::snaplen` bytes, link-layer header
		## included.
		frames: vector of string;
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
}

# The package's counters live in Zeek's Telemetry framework, one counter
# family per count, prefix "packetclip" (packetclip_<name>_total on Zeek's
# Prometheus endpoint). Every script of the package registers its own with
# register_counter; counted reads one back by name.

## Registers the package's counter *name*, described by *help*.
function register_counter(name: string, help: string): Telemetry::Counter
	{
	local family = Telemetry::register_counter_family(Telemetry::MetricOpts(
	    $prefix="packetclip", $name=name, $unit="", $help_text=help));
	return Telemetry::counter_with(family);
	}

## The current value of the package's counter *name* (0 for one not
## registered).
function counted(name: string): count
	{
	local found = Telemetry::collect_metrics("packetclip", name);
	if ( |found| == 0 || ! found[0]?$value )
		return 0;

	return double_to_count(found[0]$value);
	}

global requests_published = register_counter("requests_published",
    "Requests published to the sidecar.");
global requests_vetoed = register_counter("requests_vetoed",
    "Requests dropped by a PacketCLIP::request_policy hook.");
global requests_expired = register_counter("requests_expired",
    "Requests given up after pending_expiry without a verdict.");
global requests_resent = register_counter("requests_resent",
    "Requests published again to a sidecar that said hello again.");

## What is kept of a sent request until its verdict arrives.
type Pending: record {
	## The connection's endpoints, for the log row and notices.
	id: conn_id;
	## Time of its first packet.
	ts: time;
	## Scores of user-written missions, as ``name=score``, when
	## :zeek:see:`PacketCLIP::mission_scores` came before the verdict.
	missions: vector of string &optional;
	## Set when :zeek:see:`PacketCLIP::allowed` came before the verdict.
	allowed: bool &default=F;
};

## Keeps every pending request, whatever its age, while it is set: reading a
## capture with the sidecar attached, network time runs far ahead of the
## sidecar's answers, and the drain at the end counts on every request being
## answered (offline.zeek sets it).
global hold_pending = F;

## Called by the table expiry for a request whose verdict never came.
function pending_expired(t: table[string] of Pending, uid: string): interval
	{
	if ( hold_pending )
		return pending_expiry;

	Telemetry::counter_inc(requests_expired);
	return 0secs;
	}

## Sent requests waiting for their verdicts, by uid.
global pending: table[string] of Pending &create_expire=pending_expiry
    &expire_func=pending_expired;

## Sent requests kept whole while hold_pending is set, by uid, so that they can
## be published again.
global held_requests: table[string] of Request;

## Uids of requests published again, so that a second verdict for one is
## counted as a duplicate rather than as unmatched.
global resent_uids: set[string];

## Name of this node as sent in requests.
function this_node(): string
	{
	if ( node_name != "" )
		return node_name;

	if ( Cluster::is_enabled() )
		return Cluster::node;

	return "zeek";
	}

## The topic a request about a connection from *orig_h* goes to.
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

## Publishes the request *req* about the connection with endpoints *id* whose
## first packet came at *first_ts*, unless a request_policy hook drops it, and
## keeps it pending until its verdict arrives.
function send_request(req: Request, id: conn_id, first_ts: time)
	{
	local topic = request_topic_for(req$orig_h);
	if ( ! hook request_policy(topic, req) )
		{
		Telemetry::counter_inc(requests_vetoed);
		return;
		}

	pending[req$uid] = Pending($id=id, $ts=first_ts);
	if ( hold_pending )
		held_requests[req$uid] = req;

	publish(topic, req);
	Telemetry::counter_inc(requests_published);
	}

## Publishes every request still waiting for its verdict again (those kept in
## held_requests): a sidecar that (re)connects has never seen the requests
## published while no sidecar was subscribed, nor those its previous run had
## not answered. Returns how many.
function resend_pending(): count
	{
	local sent = 0;
	for ( uid, req in held_requests )
		{
		publish(request_topic_for(req$orig_h), req);
		add resent_uids[uid];
		++sent;
		}

	Telemetry::counter_inc(requests_resent, count_to_double(sent));
	return sent;
	}

event allowed(uid: string, reason: string)
	{
	if ( uid in pending )
		pending[uid]$allowed = T;
	}

event zeek_init()
	{
	subscribe(fmt("%s%s/", verdict_topic_prefix, this_node()));
	subscribe(control_topic);
	}
