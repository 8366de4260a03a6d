"""Turning finished runs into the paper's tables, plots and model inspections.

* :mod:`~multirec.reporting.runs` finds run directories under a folder (training runs of
  ``multirec.train`` and evaluations of ``multirec.evaluate``) and merges them into one
  entry per (configuration, seed);
* :mod:`~multirec.reporting.tables` aggregates entries over seeds into the layouts of the
  paper's Table 2 and Table 3, and :mod:`~multirec.reporting.formats` writes them as
  Markdown, CSV and LaTeX;
* :mod:`~multirec.reporting.significance` pairs per-list results of two rows;
* :mod:`~multirec.reporting.plots` draws the figures (matplotlib, Agg backend);
* :mod:`~multirec.reporting.inspect` asks a trained checkpoint for recommendations,
  modality weights and its best and worst predictions;
* :mod:`~multirec.reporting.build` ties them together for ``python -m multirec.report``.
"""
