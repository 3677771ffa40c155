##! Reading a capture (``zeek -r capture.pcap packetclip``) with the sidecar
##! attached: Zeek holds the capture until the sidecar's
##! :zeek:see:`PacketCLIP::hello` arrives, and at its end stays up until every
##! request has its verdict, so that packetclip.log has a row for every
##! connection.
##!
##! Zeek reading a file starts at once and exits at the end of the file; a
##! sidecar connecting a moment later would miss the first connections, and
##! the last verdicts would arrive after Zeek is gone. The drain counts the
##! pending requests (the sidecar answers every request it receives, with an
##! ``error`` verdict when it cannot classify one) and Zeek terminates when
##! none is left.
##!
##! Nothing waits forever: with no hello within
##! :zeek:see:`PacketCLIP::hello_timeout` Zeek stops with an error; a sidecar
##! that says hello again (it restarted, or reconnected) gets every request
##! still without a verdict again; and when no verdict has come for
##! :zeek:see:`PacketCLIP::drain_timeout` after the capture ended, the
##! requests left are written to packetclip.log as lost and Zeek exits.
##!
##! What it does not do: anything on a live sensor.

@load base/frameworks/cluster
@load ./transport
@load ./collection
@load ./log

module PacketCLIP;

export {
	## Reading a capture, wait for the sidecar before the first packet
	## and for the verdicts after the last one. Turn off to read a capture
	## with no sidecar (requests are then published to nobody).
	const wait_for_sidecar = T &redef;

	## Reading a capture with :zeek:see:`PacketCLIP::wait_for_sidecar`
	## set, how long (wall-clock time) to wait for the sidecar's hello
	## before Zeek stops with an error. Longer than the sidecar's longest
	## reconnect back-off (30 s), so that a sidecar started first connects
	## in time.
	option hello_timeout = 2min;

	## After the capture has ended, how long (wall-clock time) to wait
	## for a verdict when none has arrived since the last one (or since
	## the end of the capture). Then every request still without one is
	## given up (an ``error`` row in ``packetclip.log`` saying it was
	## lost) and Zeek exits.
	option drain_timeout = 1min;
}

# Zeek otherwise exits at the end of a capture, before the last verdicts are
# in. A live sensor never reaches the end of its input, so this changes
# nothing there; reading a capture, the package calls terminate() itself.
@if ( ! Cluster::is_enabled() )
redef exit_only_after_terminate = T;
@endif

## Set while the capture is held for the sidecar's hello.
global waiting_for_hello = F;

## Set once the capture has ended and Zeek is waiting for the verdicts of the
## requests still pending.
global draining = F;

## Checks the hello and drain timeouts; see start_watch.
global watch: event();

## Set while a watch event is scheduled.
global watching = F;

## Network time when the last watch event was scheduled.
global watch_network_time = double_to_time(0.0);

## Wall-clock time the wait for the hello began.
global hello_wait_since = double_to_time(0.0);

## Wall-clock time of the drain's last progress: its start, a verdict, or
## requests published again to a sidecar that said hello again.
global last_progress = double_to_time(0.0);

## Between two watch events while network time stands still.
const watch_sleep = "sleep 0.2";

## Between two watch events while network time moves.
const watch_interval = 1sec;

function offline_with_sidecar(): bool
	{
	return reading_traces() && wait_for_sidecar && ! Cluster::is_enabled();
	}

function finish_if_drained()
	{
	if ( draining && |pending| == 0 )
		terminate();
	}

# The timeouts are measured in wall-clock time (current_time()), and the
# watch event that checks them copes with both ways Zeek's network time
# behaves here. While a capture is suspended before its first packet, and
# possibly after its end, network time stands still, so no timer that lies
# ahead of it ever fires: the event is scheduled with no delay and, to cost
# no CPU, sleeps in a child process (piped_exec waits for it) between two
# checks. Where network time follows the wall clock (a capture's source gone
# at its end), the event is an ordinary timer of one second; its first run
# may come at once, when network time jumps from the capture's last packet to
# the present.
function start_watch()
	{
	if ( watching )
		return;

	watching = T;
	watch_network_time = network_time();
	schedule 0secs { watch() };
	}

function give_up_drain()
	{
	local reason = fmt("lost: no verdict from the sidecar within %s of its last answer after the capture ended",
	    drain_timeout);
	# give_up deletes from pending: iterate over a copy of its keys.
	local uids: vector of string = vector();
	for ( uid in pending )
		uids[|uids|] = uid;

	for ( i in uids )
		give_up(uids[i], reason);

	Reporter::warning(fmt("packetclip: %d requests got no verdict within %s of the sidecar's last answer; written to packetclip.log as lost",
	    |uids|, drain_timeout));
	}

event watch()
	{
	local now = current_time();

	if ( waiting_for_hello && now - hello_wait_since >= hello_timeout )
		Reporter::fatal(fmt("packetclip: no sidecar said hello within %s: start packetclip serve with --zeek pointing at this Zeek's WebSocket endpoint (ws://127.0.0.1:27759/v1/messages/json by default), or read the capture without a sidecar: add PacketCLIP::wait_for_sidecar=F to the zeek command line",
		    hello_timeout));

	if ( draining && |pending| > 0 && now - last_progress >= drain_timeout )
		{
		give_up_drain();
		terminate();
		}

	if ( ! waiting_for_hello && ! ( draining && |pending| > 0 ) )
		{
		watching = F;
		return;
		}

	if ( network_time() == watch_network_time )
		{
		piped_exec(watch_sleep, "");
		schedule 0secs { watch() };
		}
	else
		{
		watch_network_time = network_time();
		schedule watch_interval { watch() };
		}
	}

event zeek_init()
	{
	if ( ! offline_with_sidecar() )
		return;

	hold_pending = T;
	waiting_for_hello = T;
	hello_wait_since = current_time();
	suspend_processing();
	Reporter::info(fmt("packetclip: waiting up to %s for the sidecar's hello before reading the capture",
	    hello_timeout));
	start_watch();
	}

event hello(sidecar: string, model: string)
	{
	if ( waiting_for_hello )
		{
		waiting_for_hello = F;
		Reporter::info(fmt("packetclip: sidecar %s (model %s) is ready, reading the capture",
		    sidecar, model));
		continue_processing();
		return;
		}

	# A sidecar that says hello again has (re)subscribed: requests
	# published while none was subscribed, and those a sidecar that went
	# away had not answered, would otherwise never be answered.
	if ( ! hold_pending )
		return;

	local resent = resend_pending();
	if ( resent > 0 )
		{
		last_progress = current_time();
		Reporter::info(fmt("packetclip: sidecar %s said hello again; %d requests without a verdict published again",
		    sidecar, resent));
		}
	}

# After collection.zeek's handler has sent the connections still open.
event Pcap::file_done(path: string) &priority=-10
	{
	if ( Cluster::is_enabled() )
		return;

	if ( ! offline_with_sidecar() )
		{
		terminate();
		return;
		}

	draining = T;
	last_progress = current_time();
	finish_if_drained();
	if ( draining && |pending| > 0 )
		start_watch();
	}

# After log.zeek's handler has removed the verdict's request from pending.
event verdict(uid: string, label: string, attack: string, score: double,
    explanation: string, model: string) &priority=-10
	{
	last_progress = current_time();
	finish_if_drained();
	}
