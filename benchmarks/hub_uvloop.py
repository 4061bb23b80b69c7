"""Fan-out figures of the reference hub on uvloop instead of the asyncio loop."""

from __future__ import annotations

from ._fanout import bench
from ._systems import HubUvloop


def main() -> None:
    bench(HubUvloop())


if __name__ == "__main__":
    main()
