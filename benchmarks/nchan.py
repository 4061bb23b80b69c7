"""Fan-out figures of nginx with the nchan module, one worker process.

Needs Debian's ``nginx`` and ``libnginx-mod-nchan`` (``tools/install-bench-deps.sh``);
without them the result file says why nothing was measured.
"""

from __future__ import annotations

from ._fanout import bench
from ._systems import Nchan


def main() -> None:
    bench(Nchan())


if __name__ == "__main__":
    main()
