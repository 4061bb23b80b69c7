"""Tuning ``realtimeBatchQuietWindowMs`` on the hub core's own batch synthesizer.

Arrivals come from a submission model (``load_model``, ``default_model``) or from a
log of real arrivals (``load_arrival_log``); ``sweep`` replays them once per window
in virtual time and ``recommend`` picks the smallest window that keeps premature
``batch.completed`` under a target.
"""

from ._arrivals import Arrivals, Partner
from ._errors import TuningInputError
from ._log import LOG_COLUMNS, load_arrival_log
from ._model import (
    Distribution,
    PartnerModel,
    Pause,
    SubmissionModel,
    default_model,
    default_model_text,
    load_model,
    parse_model,
)
from ._recommend import Recommendation, Recommendations, recommend
from ._sweep import WindowResult, WindowStats, sweep, wilson_upper

__all__ = [
    "LOG_COLUMNS",
    "Arrivals",
    "Distribution",
    "Partner",
    "PartnerModel",
    "Pause",
    "Recommendation",
    "Recommendations",
    "SubmissionModel",
    "TuningInputError",
    "WindowResult",
    "WindowStats",
    "default_model",
    "default_model_text",
    "load_arrival_log",
    "load_model",
    "parse_model",
    "recommend",
    "sweep",
    "wilson_upper",
]
