"""The wheel: built from the sources, installed into a fresh venv, it gives a working `bockerd`."""

from __future__ import annotations

import glob
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile

from bocker_engine import __version__
from tests.daemon import ROOT


def _run(*args: str, cwd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_wheel_installs_a_working_bockerd(tmp_path: object) -> None:
    tmp = str(tmp_path)
    # Build from a copy: the build leaves build/ and egg-info behind, never in the checkout.
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.join(ROOT, "bocker_engine"), os.path.join(src, "bocker_engine"), ignore=ignore)
    r = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w",
             os.path.join(tmp, "dist"), src, cwd=tmp)
    assert r.returncode == 0, r.stderr
    [wheel] = glob.glob(os.path.join(tmp, "dist", "bocker_engine-*.whl"))

    # Every file the package loads at run time is in it (package_data covers all non-.py files).
    names = set(zipfile.ZipFile(wheel).namelist())
    for dirpath, dirs, files in os.walk(os.path.join(ROOT, "bocker_engine")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for fname in files:
            rel = os.path.relpath(os.path.join(dirpath, fname), ROOT)
            if not fname.endswith(".pyc"):
                assert rel in names, f"{rel} is missing from the wheel (setup.cfg package_data?)"

    # A fresh venv; its dependencies come from this environment's site-packages (appended after
    # its own, so bocker_engine itself can only come from the wheel), so nothing is downloaded.
    venv = os.path.join(tmp, "venv")
    r = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    assert r.returncode == 0, r.stderr
    vpy = os.path.join(venv, "bin", "python")
    r = _run(sys.executable, "-m", "pip", "--python", vpy, "install", "-q", "--no-deps", "--no-index",
             "--disable-pip-version-check", wheel, cwd=tmp)
    assert r.returncode == 0, r.stderr
    vsite = _run(vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).stdout.strip()
    with open(os.path.join(vsite, "zz-deps.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")

    bockerd = os.path.join(venv, "bin", "bockerd")
    r = _run(bockerd, "--version", cwd=tmp)
    assert r.returncode == 0 and r.stdout.strip() == f"bocker-engine version {__version__}", r.stderr
    good = os.path.join(tmp, "good.json")
    with open(good, "w") as f:
        json.dump({"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}, "debug": True}, f)
    r = _run(bockerd, "--validate", "--config-file", good, cwd=tmp)
    assert r.returncode == 0 and r.stderr.strip() == "configuration OK", r.stderr
    bad = os.path.join(tmp, "bad.json")
    with open(bad, "w") as f:
        json.dump({"log-opts": {"max-file": "0"}}, f)
    r = _run(bockerd, "--validate", "--config-file", bad, cwd=tmp)
    assert r.returncode == 1 and r.stderr.strip() == "bockerd: failed to set log opts: max-file cannot be less than 1"
    # The installed package, not the checkout, and its data files load.
    code = (
        "import bocker_engine, bocker_engine.daemon; from bocker_engine.runtime import seccomp;"
        "print(bocker_engine.__file__); print(len(seccomp.default_profile()['syscalls']) > 0)"
    )
    r = _run(vpy, "-c", code, cwd=tmp)
    assert r.returncode == 0, r.stderr
    where, loaded = r.stdout.split()
    assert where.startswith(venv) and loaded == "True"
