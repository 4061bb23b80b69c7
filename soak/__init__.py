"""The soak: real hub processes under steady load, churn and injected faults for a
set time, then the laws that must still hold (ledger, client-received against
delivered, flat memory, no unexplained errors).

Importing the package is cheap (the command line does it on every start); the
run's machinery is loaded by ``run_soak``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._checks import Check, MemoryVerdict, Reconciliation
from ._command import add_soak_command
from ._model import Plan, SoakError, SoakOptions, StreamEnd, StreamRecord

if TYPE_CHECKING:
    from ._run import SoakResult

__all__ = [
    "Check",
    "MemoryVerdict",
    "Plan",
    "Reconciliation",
    "SoakError",
    "SoakOptions",
    "StreamEnd",
    "StreamRecord",
    "add_soak_command",
    "run_soak",
]


async def run_soak(
    options: SoakOptions, progress: Callable[[str], None] = lambda line: None
) -> SoakResult:
    """Run one soak; the result's ``passed`` says whether every check held."""
    from ._run import run_soak as run

    return await run(options, progress)
