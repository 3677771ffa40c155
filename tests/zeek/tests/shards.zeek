# @TEST-DOC: With four shards, every request goes to packetclip/request/<k>/ with k below 4, and all connections of one originator go to the same shard.
# @TEST-PORT: ZEEK_WEBSOCKET_LISTEN_PORT
# @TEST-EXEC: zeek -b -r $TRACES/packetclip-small.pcap $PACKAGE %INPUT >output
# @TEST-EXEC: test "$(wc -l <output)" -eq 6
# @TEST-EXEC: awk '$2 !~ /^packetclip\/request\/[0-3]\/$/ { bad = 1 } END { exit bad }' output
# @TEST-EXEC: test "$(sort -u output | awk '{ print $1 }' | uniq -d | wc -l)" -eq 0
# @TEST-EXEC: test "$(grep -c '^10.0.0.1 ' output)" -eq 3

redef PacketCLIP::wait_for_sidecar = F;
redef PacketCLIP::num_shards = 4;

hook PacketCLIP::request_policy(topic: string, req: PacketCLIP::Request)
	{
	print fmt("%s %s", req$orig_h, topic);
	}
