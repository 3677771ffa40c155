##! The WebSocket endpoint the packetclip sidecar connects to, for a
##! standalone Zeek (``zeek -i eth0 packetclip`` or ``zeek -r capture.pcap
##! packetclip``).
##!
##! In a cluster the endpoint is the cluster's own (zeekctl's
##! ``UseWebSocket`` on Zeek 8, or a listener you start on the manager): this
##! script does nothing there. The endpoint is plain WebSocket on 127.0.0.1 by
##! default; keep it on localhost or configure TLS, since it has no
##! authentication.
##!
##! How Zeek opens the endpoint depends on its version:
##!
##! - before 7.2.2: ``Broker::listen_websocket``, TLS turned off with
##!   ``Broker::disable_ssl`` (standalone only, where no Broker peering uses
##!   it). Zeek 7.2.0 and 7.2.1 have ``Cluster::listen_websocket`` too, but
##!   their ``Cluster::WebSocketServerOptions`` has no ``listen_addr`` yet;
##! - 7.2.2 to 8.0: ``Cluster::listen_websocket``, plain unless TLS options
##!   are given;
##! - 8.1 and later: a standalone Zeek has no cluster backend, and Zeek's
##!   ``frameworks/cluster/websocket/server`` script sets one up and listens;
##!   its address and port come from ``ZEEK_WEBSOCKET_LISTEN_ADDRESS`` and
##!   ``ZEEK_WEBSOCKET_LISTEN_PORT`` (default 127.0.0.1 and 27759/tcp, as
##!   here).

@load base/misc/version
@load base/utils/numbers
@load base/frameworks/cluster
@load ./transport

module PacketCLIP;

export {
	## Open the WebSocket endpoint in a standalone Zeek (before 8.1; from
	## 8.1 on, Zeek's own server script listens whenever this package is
	## loaded standalone).
	const listen_websocket = T &redef;

	## Address of the endpoint. The environment variable
	## ``ZEEK_WEBSOCKET_LISTEN_ADDRESS`` overrides it, as it does for
	## Zeek's own server script.
	const websocket_address = 127.0.0.1 &redef;

	## Port of the endpoint, the sidecar's default. The environment
	## variable ``ZEEK_WEBSOCKET_LISTEN_PORT`` overrides it.
	const websocket_port = 27759/tcp &redef;
}

@if ( ! Cluster::is_enabled() )

@if ( Version::at_least("8.1") )
@load frameworks/cluster/websocket/server
@else

@if ( ! Version::at_least("7.2.2") )
redef Broker::disable_ssl = T;
@endif

function listen_address(): addr
	{
	local from_env = getenv("ZEEK_WEBSOCKET_LISTEN_ADDRESS");
	if ( from_env == "" )
		return websocket_address;

	return to_addr(rstrip(lstrip(from_env, "["), "]"));
	}

function listen_port(): port
	{
	local from_env = getenv("ZEEK_WEBSOCKET_LISTEN_PORT");
	if ( from_env == "" )
		return websocket_port;

	return count_to_port(extract_count(from_env), tcp);
	}

event zeek_init() &priority=-10
	{
	if ( ! listen_websocket )
		return;

	local where = listen_address();
	local which = listen_port();

@if ( Version::at_least("7.2.2") )
	if ( ! Cluster::listen_websocket(Cluster::WebSocketServerOptions(
	    $listen_addr=where, $listen_port=which)) )
		Reporter::error(fmt(
		    "packetclip: cannot listen for WebSocket clients on %s:%s",
		    where, which));
@else
	if ( Broker::listen_websocket(cat(where), which) == 0/unknown )
		Reporter::error(fmt(
		    "packetclip: cannot listen for WebSocket clients on %s:%s",
		    where, which));
@endif
	}

@endif

@endif
