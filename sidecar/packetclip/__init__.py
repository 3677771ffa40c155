"""packetclip runtime: featurizer, ONNX inference, verdicts and the sensor sidecars.

This package never imports torch or packetclip_training; the model factory imports it, not the reverse.
"""

__version__ = "0.1.0"
