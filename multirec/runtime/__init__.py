"""How multirec uses the machine: threads, memory and the time a long step will take.

Importing this package sets OpenMP's environment, so entry points import it before
anything that loads torch (see :mod:`multirec.runtime.threads`).
"""

from multirec.runtime.threads import (
    ThreadPolicy,
    apply_thread_policy,
    available_cores,
    choose_policy,
    current_policy,
    model_threads,
)

__all__ = [
    "ThreadPolicy",
    "apply_thread_policy",
    "available_cores",
    "choose_policy",
    "current_policy",
    "model_threads",
]
