"""Non-neural baselines (config group ``baseline/``), all behind :class:`multirec.models.base.Recommender`."""
