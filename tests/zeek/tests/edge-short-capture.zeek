# @TEST-DOC: A capture shorter than max_wait, in Linux cooked-capture framing: every connection is sent only at the end of the capture, when the closed packet source reports link type -1, and each request still carries link type 113 (read while the source was open), all its frames and their own times.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: zeek -b -r $TRACES/packetclip-short.pcap $PACKAGE $SCRIPTS/print-requests.zeek %INPUT >output
# @TEST-EXEC: sort output >requests
# @TEST-EXEC: btest-diff requests

redef PacketCLIP::wait_for_sidecar = F;
