"""SIGHUP: re-read the configuration file and apply the keys a running daemon can change.

As dockerd: the file is merged with the same command-line flags as at start (so a key set both
ways is still an error), and only the reloadable keys take effect; a file that does not load
leaves the running configuration untouched. Unlike dockerd, a reloadable key removed from the
file goes back to its default (dockerd keeps the last value it was given).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bocker_engine import config as config_mod
from bocker_engine import systemd
from bocker_engine.registry.config import RegistryConfig

if TYPE_CHECKING:
    from bocker_engine.daemon import Daemon

log = logging.getLogger("bockerd")


def apply_runtime(daemon: Daemon) -> None:
    """Push the configuration's live settings to the parts that hold them (at start and on reload)."""
    cfg = daemon.config
    logging.getLogger().setLevel(config_mod.python_log_level(cfg))
    if hasattr(daemon, "distribution"):
        dist = daemon.distribution
        dist.max_downloads = cfg.max_concurrent_downloads or type(dist).max_downloads
        dist.max_uploads = cfg.max_concurrent_uploads or type(dist).max_uploads


def reload(daemon: Daemon) -> list[str]:
    """Reload; the names of the keys that changed (empty if none, or if the file was refused)."""
    systemd.notify("RELOADING=1")
    try:
        return _reload(daemon)
    finally:
        systemd.notify("READY=1")


def _reload(daemon: Daemon) -> list[str]:
    old = daemon.config
    try:
        new = config_mod.load(old.argv)
    except (config_mod.ConfigError, OSError) as e:
        log.error("reload: %s not applied, keeping the running configuration: %s", old.config_file, e)
        return []
    except SystemExit:  # argparse; the flags were good at start, so only a broken invocation
        log.error("reload: command line no longer parses; keeping the running configuration")
        return []
    changed = []
    for key in config_mod.RELOADABLE:
        attr = config_mod.FILE_KEYS[key][0]
        before, after = getattr(old, attr), getattr(new, attr)
        if before != after:
            changed.append(key)
            log.info("reload: %s: %s -> %s", key, _show(before), _show(after))
            setattr(old, attr, after)
    ignored = [
        key
        for key, (attr, _) in config_mod.FILE_KEYS.items()
        if key not in config_mod.RELOADABLE and getattr(old, attr) != getattr(new, attr)
    ]
    if ignored:
        log.warning("reload: not reloadable, takes effect at the next start: %s", ", ".join(ignored))
    if hasattr(daemon, "registry") and {"registry-mirrors", "insecure-registries"} & set(changed):
        # Checked by load(); the transport holds this same object, so the next pull sees it.
        checked = RegistryConfig(mirrors=list(new.registry_mirrors), insecure=list(new.insecure_registries))
        live = daemon.registry.config
        live.mirrors = checked.mirrors
        live.insecure = checked.insecure
    apply_runtime(daemon)
    log.info("reloaded configuration from %s%s", old.config_file, "" if changed else " (nothing changed)")
    return changed


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)
