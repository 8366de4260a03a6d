"""Every neural model multirec ships: importing this module registers them all, so that a
checkpoint naming any of them can be opened in a process that has not built one yet."""

from multirec.models import freedom, lightgcn, recommender, vbpr
from multirec.models.neural import MODELS

__all__ = ["MODELS", "freedom", "lightgcn", "recommender", "vbpr"]
