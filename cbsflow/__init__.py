"""cbsflow: Complexity-Balanced Splitting of flow-matching models.

Convention (stated once, used everywhere): t = 0 is noise, t = 1 is data;
x_t = alpha(t) * x1 + sigma(t) * eps, and networks predict the velocity d/dt x_t.
"""

__version__ = "0.1.0"


def load_run(run_dir: str, use_ema: bool | None = None, imports=()):
    """A trained run directory as an object that samples and evaluates its velocity (``cbsflow.api.load_run``)."""
    from cbsflow.api import load_run as _load_run

    return _load_run(run_dir, use_ema=use_ema, imports=imports)
