"""Layer storage: drivers (btrfs, overlay2) and the safe tar engine they share."""

from __future__ import annotations

import os

from bocker_engine.errors import System
from bocker_engine.storage.driver import Driver

DRIVERS = ("btrfs", "overlay2")


def new_driver(name: str, data_root: str) -> Driver:
    """The driver called `name`, keeping its files in <data_root>/<name> like dockerd."""
    from bocker_engine.storage.btrfs import BtrfsDriver
    from bocker_engine.storage.overlay import OverlayDriver

    drivers: dict[str, type[Driver]] = {"btrfs": BtrfsDriver, "overlay2": OverlayDriver, "overlay": OverlayDriver}
    if name not in drivers:
        raise System(f"unknown storage driver {name!r} (choose one of: {', '.join(DRIVERS)})")
    cls = drivers[name]
    return cls(os.path.join(data_root, cls.name))
