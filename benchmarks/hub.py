"""Fan-out figures of the reference hub (``rcm-realtime serve``, asyncio loop)."""

from __future__ import annotations

from ._fanout import bench
from ._systems import Hub


def main() -> None:
    bench(Hub())


if __name__ == "__main__":
    main()
