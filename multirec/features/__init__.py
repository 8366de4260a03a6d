"""Frozen encoders and the HDF5 feature cache: every item is encoded once per encoder.

``encoders`` (what a model is and how it preprocesses), ``sources`` (where its files
come from, offline first), ``cache`` (the file format, readers), ``extraction``
(:func:`~multirec.features.extraction.ensure_cache`, sharded over ranks).
"""
