"""multirec: an experiment framework for multimodal image recommendation."""

__version__ = "0.1.0"
