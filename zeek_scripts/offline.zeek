##! Reading a capture (``zeek -r capture.pcap packetclip``) with the sidecar
##! attached: Zeek holds the capture until the sidecar's
##! :zeek:see:`PacketCLIP::hello` arrives, and at its end stays up until every
##! request has its verdict, so that packetclip.log has a row for every
##! connection.
##!
##! Zeek reading a file starts at once and exits at the end of the file; a
##! sidecar connecting a moment later would miss the first connections, and
##! the last verdicts would arrive after Zeek is gone. After the capture ends,
##! network time stops, so the drain cannot be a timer: it counts the
##! pending requests, and the sidecar answers every request it receives
##! (with an ``error`` verdict when it cannot classify one).
##!
##! What it does not do: anything on a live sensor.

@load base/frameworks/cluster
@load ./main

module PacketCLIP;

export {
	## Reading a capture, wait for the sidecar before the first packet
	## and for the verdicts after the last one. Turn off to read a capture
	## with no sidecar (requests are then published to nobody).
	const wait_for_sidecar = T &redef;

	## Set while the capture is held for the sidecar's hello.
	global waiting_for_hello = F;

	## Set once the capture has ended and Zeek is waiting for the verdicts
	## of the requests still pending.
	global draining = F;
}

# Zeek otherwise exits at the end of a capture, before the last verdicts are
# in. A live sensor never reaches the end of its input, so this changes
# nothing there; reading a capture, the package calls terminate() itself.
@if ( ! Cluster::is_enabled() )
redef exit_only_after_terminate = T;
@endif

function offline_with_sidecar(): bool
	{
	return reading_traces() && wait_for_sidecar && ! Cluster::is_enabled();
	}

function finish_if_drained()
	{
	if ( draining && |pending| == 0 )
		terminate();
	}

event zeek_init()
	{
	if ( ! offline_with_sidecar() )
		return;

	hold_pending = T;
	waiting_for_hello = T;
	suspend_processing();
	Reporter::info("packetclip: waiting for the sidecar's hello before reading the capture");
	}

event hello(sidecar: string, model: string)
	{
	if ( ! waiting_for_hello )
		return;

	waiting_for_hello = F;
	Reporter::info(fmt(
	    "packetclip: sidecar %s (model %s) is ready, reading the capture",
	    sidecar, model));
	continue_processing();
	}

# After main.zeek's handler has sent the connections still open.
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
	finish_if_drained();
	}

# After main.zeek's handler has removed the verdict's request from pending.
event verdict(uid: string, label: string, attack: string, score: double,
    explanation: string, model: string) &priority=-10
	{
	finish_if_drained();
	}
