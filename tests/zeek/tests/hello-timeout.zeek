# @TEST-DOC: Reading a capture with no sidecar, Zeek gives up after hello_timeout with an error that names the way out, exits with status 1 and reads nothing (it waited forever before).
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: timeout 60 zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE PacketCLIP::hello_timeout=1sec >output 2>&1; test $? -eq 1
# @TEST-EXEC: grep -q "no sidecar said hello within 1.0 sec" output
# @TEST-EXEC: grep -q "PacketCLIP::wait_for_sidecar=F" output
# @TEST-EXEC: test ! -e packetclip.log
