"""OSErrors reach clients in Go's words, as dockerd reports them."""

from __future__ import annotations

import errno

from bocker_engine.errors import NotFound, message_of, os_error_message


def test_os_error_in_go_words() -> None:
    e = OSError(errno.ENOSPC, "No space left on device", "/var/lib/x/config.v2.json")
    assert os_error_message(e) == "/var/lib/x/config.v2.json: no space left on device"
    assert os_error_message(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    assert message_of(OSError(errno.EIO, "Input/output error")) == "input/output error"


def test_other_errors_unchanged() -> None:
    assert message_of(NotFound("No such image: x")) == "No such image: x"
    assert message_of(ValueError("bad")) == "ValueError: bad"
