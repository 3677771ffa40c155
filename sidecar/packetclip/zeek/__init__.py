"""The live sidecar for Zeek: Zeek's Broker WebSocket API (v1 JSON) in and out.

`codec` is the v1 JSON data model, `client` the WebSocket client (handshake, reconnect, publish), `service` the
serve loop (queue, micro-batches through the shared engine, verdicts, metrics, hot reload). The wire contract is
docs/design.md's "Zeek <-> sidecar wire"; the protocol facts are in docs/zeek.md.
"""
