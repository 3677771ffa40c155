"""The traffic lab: real Debian services and tools inside network namespaces the lab creates and removes.

Submodules: `context` (what attacks may know of a lab), `topology` (namespaces, links, router, safety checks),
`services` (daemons; `telnet_login`, the Telnet server's login program), `benign` (background traffic), `capture` (the sensor's tcpdump), `runner` (episodes and
output files), `profiles` (quick/full), `cli` (`packetclip-train lab ...`). The attack catalogue is `attacks`.
"""
