"""packetclip for Suricata: per-flow packets from a stock Suricata 7, verdicts out as eve, flagged hosts back in.

Mechanism (chosen by measurement, `benchmarks/suricata_bench.py`, Suricata 7.0.10, 64,140-packet capture made of
20 time-shifted copies of samples/lab-quick, 3 interleaved runs, medians; times include ~0.15 s of start-up):

    variant                                      suricata -r   vs. no rules   what the sidecar gets
    no packetclip rules (baseline)                 0.26 s        1.00          -
    sampling rule + eve alert packet/tagged → file 0.71 s        0.36          flow_id, community_id, packets
    same, eve over a unix_stream socket            0.94 s        0.28          the same records
    sampling rule + pcap-log conditional: tag      3.11 s        0.08          packets only (no flow_id)

The lab capture is the worst case for sampling: it was cut to the first 60 packets of each connection, so 93% of
its packets are among a flow's first 31 and get logged; on long flows the logged share, and the cost, shrink.
`rules/suricata/packetclip-sampling.rules` alerts on the first packet of every flow (its eve `alert` record
carries the base64 `packet`) and tags the next 30 packets of the session (eve `packet` records, same `flow_id`);
eve `flow` records mark each flow's end. Completeness on the lab capture: 397 of the 399 connections
`packetclip classify` finds, every one with the same first packets except the frames the capture's 256-byte
snaplen cut short (Suricata's decoder drops those, ipv4.trunc_pkt; the two missing flows consist only of such
frames). The eve file is the default transport (cheapest, and it survives a sidecar restart: nothing is lost
while the sidecar is down); the unix_stream socket is supported for hosts that do not want the file.

Modules: `eve` (records → packets and flow ends), `follow` (the growing file with rotation, or the socket),
`flows` (grouping by flow_id, when a flow is ready), `sidecar` (the loop: featurize_frames → Engine.classify),
`verdicts` (eve-style records out), `control` (Suricata's unix command socket), `datasets` (flagged originators
in Suricata datasets, with expiry), `agreement` (comparison with `packetclip classify`). The command line is
`packetclip.commands.suricata`.
"""
