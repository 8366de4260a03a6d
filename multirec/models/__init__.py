"""Recommenders: the shared interface (:mod:`multirec.models.base`) and the neural model."""
