##! Collection of each connection's first frames: ``new_packet`` gathers up
##! to :zeek:see:`PacketCLIP::max_packets` frames of a connection, cut to
##! :zeek:see:`PacketCLIP::snaplen` bytes, and hands them to the transport as
##! one request at the last of them, at ``connection_state_remove``,
##! :zeek:see:`PacketCLIP::max_wait` after the connection's first frame, or
##! when a capture ends, whichever comes first.
##!
##! ``new_packet`` runs for every packet Zeek sees: once a connection is sent
##! (or skipped), a flag on its record makes every later packet return at the
##! first test.
##!
##! What it does not do: publish (``transport.zeek``) or handle verdicts
##! (``log.zeek``, ``notices.zeek``).

@load ./transport

module PacketCLIP;

export {
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
}

global requests_without_link_type = register_counter(
    "requests_without_link_type",
    "Connections not sent because no packet source reported a data-link type.");

## Frames collected so far for one connection. The connection record and the
## collection table share it, so a flush from a timer is seen by the
## connection's next packet.
type Collection: record {
	## The connection's endpoints.
	id: conn_id;
	## Time of its first packet (the connection's ``start_time``, the
	## packet's own timestamp).
	first_ts: time;
	## Set once the connection was sent or skipped: its further packets
	## are ignored.
	done: bool &default=F;
	## Per frame: the packet's own timestamp, as seconds since the epoch.
	ts: vector of double &default=vector();
	## Per frame: sent by the originator.
	is_orig: vector of bool &default=vector();
	## Per frame: base64 of the first snaplen bytes.
	frames: vector of string &default=vector();
};

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

## The capture's data-link type number (1 Ethernet, 113 Linux SLL, ...), read
## from packet_source() while it is open; -1 until a packet source has
## reported one.
global capture_link_type = -1;

## Set once the missing data-link type has been reported.
global warned_no_link_type = F;

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
		if ( ! warned_no_link_type )
			{
			Reporter::warning("packetclip: the packet source reports no data-link type; connections are not sent");
			warned_no_link_type = T;
			}

		Telemetry::counter_inc(requests_without_link_type);
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

	send_request(req, col$id, col$first_ts);
	}

## Sends every connection collected but not yet sent.
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
