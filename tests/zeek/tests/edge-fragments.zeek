# @TEST-DOC: Fragmented UDP: one frame per reassembled datagram, the fragment that completed it (a later fragment, or the first fragment when the fragments arrive last-first), with its own time; the answer is a whole datagram.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: zeek -b -r $TRACES/packetclip-fragments.pcap $PACKAGE $SCRIPTS/print-requests.zeek %INPUT >output
# @TEST-EXEC: sort output >requests
# @TEST-EXEC: btest-diff requests

redef PacketCLIP::wait_for_sidecar = F;
