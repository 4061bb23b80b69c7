"""Capacity planning for the hub: what one replica costs on a machine
(``calibrate``), and how many replicas, which queue size and how much memory a
workload needs (``make_plan``), from the simulator running those costs; ``check_point``
holds the plan's model against a real load run at one operating point.

    from capacity import load_calibration, load_workload, make_plan, Targets

    plan = make_plan(
        load_workload("capacity/example-workload.toml"),
        load_calibration("calibration/myhost.json"),
        Targets(p99_ms=100, max_drop_rate=0.001),
    )
    print(plan.answer)
"""

from ._calibrate import CalibrationPlan, calibrate, default_plan, fit_costs
from ._calibration import (
    FORMAT,
    Calibration,
    calibration_from_document,
    default_path,
    load_calibration,
    save_calibration,
)
from ._check import DROP_RATE_SLACK, P99_FACTOR, CheckResult, check_point, predict
from ._errors import CapacityError
from ._loadrun import LoadRun, PointFigures
from ._model import PointResult, PointSpec, point_world, run_point
from ._plan import (
    Answer,
    CapacityPlan,
    Targets,
    first_sweep,
    make_plan,
    parse_replicas,
    utilisation,
)
from ._report import draw_plot, plan_json, render_table
from ._workload import CapacityWorkload, load_workload, parse_workload

__all__ = [
    "DROP_RATE_SLACK",
    "FORMAT",
    "P99_FACTOR",
    "Answer",
    "Calibration",
    "CalibrationPlan",
    "CapacityError",
    "CapacityPlan",
    "CapacityWorkload",
    "CheckResult",
    "LoadRun",
    "PointFigures",
    "PointResult",
    "PointSpec",
    "Targets",
    "calibrate",
    "calibration_from_document",
    "check_point",
    "default_path",
    "default_plan",
    "draw_plot",
    "first_sweep",
    "fit_costs",
    "load_calibration",
    "load_workload",
    "make_plan",
    "parse_replicas",
    "parse_workload",
    "plan_json",
    "point_world",
    "predict",
    "render_table",
    "run_point",
    "save_calibration",
    "utilisation",
]
