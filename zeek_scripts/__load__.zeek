##! The packetclip package: PacketCLIP verdicts on every connection, in
##! ``packetclip.log`` and notices. Load it with ``@load packetclip``.
##!
##! One script per concern, each loading what it builds on:
##!
##! - ``transport.zeek``: the wire events, topics and shards, pending requests;
##! - ``collection.zeek``: each connection's first frames, sent as requests;
##! - ``notices.zeek``: notices from verdicts, and the ``allow_*`` options;
##! - ``log.zeek``: ``packetclip.log``, a row per verdict;
##! - ``websocket.zeek``: the WebSocket endpoint of a standalone Zeek;
##! - ``offline.zeek``: holding and draining a capture read with ``zeek -r``.

@load ./transport
@load ./collection
@load ./notices
@load ./log
@load ./websocket
@load ./offline
