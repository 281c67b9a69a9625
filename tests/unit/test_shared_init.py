"""The init layer of a container is shared by the containers of one image (layers.create_rw):
made once, kept across daemon restarts, collected when no container uses it, and made again
when an earlier attempt was interrupted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bocker_engine.engine.containers import INIT_PATHS
from bocker_engine.engine.layers import LayerStore
from bocker_engine.errors import System
from tests.unit.fakes import FakeDriver


def store(tmp_path: Path) -> tuple[LayerStore, FakeDriver]:
    driver = FakeDriver(str(tmp_path / "fake"))
    driver.setup()
    layers = LayerStore(str(tmp_path / "image"), driver)
    layers.load()
    return layers, driver


def test_containers_of_one_image_share_their_init_layer(tmp_path: Path) -> None:
    layers, driver = store(tmp_path)
    a = layers.create_rw("a", None, INIT_PATHS)
    b = layers.create_rw("b", None, INIT_PATHS)
    assert a.init_id == b.init_id and a.mount_id != b.mount_id
    root = driver.layer_dir(b.mount_id)
    assert os.path.isfile(os.path.join(root, "etc/hosts")) and os.path.isdir(os.path.join(root, "dev/pts"))
    # Another init spec (the builder's, empty) is another layer.
    assert layers.create_rw("c", None, {}).init_id != a.init_id
    layers.remove_rw("a")
    assert driver.exists(a.init_id)  # b still stands on it


def test_unused_init_layers_are_collected_and_remade(tmp_path: Path) -> None:
    layers, driver = store(tmp_path)
    a = layers.create_rw("a", None, INIT_PATHS)
    layers.collect([])
    assert driver.exists(a.init_id)  # in use
    layers.remove_rw("a")
    assert driver.exists(a.init_id)  # kept for the next create
    layers.collect([])
    assert not driver.exists(a.init_id) and a.init_id not in layers.inits
    assert os.listdir(driver.home) == []
    b = layers.create_rw("b", None, INIT_PATHS)
    assert b.init_id == a.init_id and driver.exists(b.init_id)


def test_restart_keeps_init_layers_and_remakes_an_interrupted_one(tmp_path: Path) -> None:
    layers, driver = store(tmp_path)
    a = layers.create_rw("a", None, INIT_PATHS)
    again, _ = store(tmp_path)
    assert again.mounts["a"].init_id == a.init_id and a.init_id in again.inits
    # A daemon killed after making the init layer and before marking it complete.
    half = layers.create_rw("h", None, {"/half": None}).init_id
    layers.remove_rw("h")
    os.unlink(os.path.join(layers.root, "inits", half))
    os.rmdir(os.path.join(driver.layer_dir(half), "half"))
    again, _ = store(tmp_path)
    assert half not in again.inits
    c = again.create_rw("c", None, {"/half": None})
    assert c.init_id == half and os.path.isdir(os.path.join(driver.layer_dir(c.mount_id), "half"))


def test_a_failed_create_leaves_nothing_not_even_the_init_it_made(tmp_path: Path) -> None:
    layers, driver = store(tmp_path)
    driver.fail_create = "no space left on device"
    with pytest.raises(System, match="no space"):
        layers.create_rw("a", None, INIT_PATHS)
    assert "a" not in layers.mounts and not os.path.exists(os.path.join(layers.root, "mounts", "a"))
    assert os.listdir(driver.home) == [] and layers.inits == set()  # it made the init: dropped
    assert layers.create_rw("b", None, INIT_PATHS).init_id in layers.inits
