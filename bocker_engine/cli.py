"""`bockerd`: parse flags like dockerd, configure logging, run the daemon."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from bocker_engine import config as config_mod
from bocker_engine.daemon import run


def main(argv: list[str] | None = None) -> None:
    try:
        cfg = config_mod.load(argv)
    except config_mod.ConfigError as e:
        print(f"bockerd: {e}", file=sys.stderr)
        sys.exit(1)
    level = {"warn": "WARNING", "fatal": "CRITICAL"}.get(cfg.log_level, cfg.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if os.geteuid() != 0:
        print("bockerd: must run as root (namespaces, mounts, cgroups)", file=sys.stderr)
        sys.exit(1)
    sys.exit(asyncio.run(run(cfg)))
