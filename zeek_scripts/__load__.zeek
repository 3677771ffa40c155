##! The packetclip package: PacketCLIP verdicts on every connection, in
##! ``packetclip.log`` and notices. Load it with ``@load packetclip``.

@load ./main
@load ./websocket
@load ./offline
