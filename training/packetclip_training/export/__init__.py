"""Trained checkpoints → a model bundle: `encoder` (the packet encoder's ONNX and fixtures), `bank` (the
description bank), `export` (gathering a bundle's contents), `bundle` (writing and verifying
`packetclip-bundle/1`) and `cli` (the `packetclip-train export` command)."""
