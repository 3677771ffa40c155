"""packetclip model factory: traffic lab, datasets, training, evaluation and export.

It imports the runtime (`packetclip`) for the featurizer so that training sees exactly the bytes the sensor
feeds its models; the runtime never imports this package.
"""

__version__ = "0.1.0"
