"""Reading json-file logs from the end."""

from __future__ import annotations

import os

from bocker_engine.logs import _tail_offset


def test_log_tail_offset(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "log")
    with open(path, "wb") as f:
        for i in range(1000):
            f.write(f"line{i}\n".encode())
    with open(path, "rb") as f:
        f.seek(_tail_offset(path, 3))
        assert f.read() == b"line997\nline998\nline999\n"
    assert _tail_offset(path, 5000) == 0
