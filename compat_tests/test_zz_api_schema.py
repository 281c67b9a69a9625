"""Every JSON response the test session saw, validated against the upstream v1.44 swagger.

The session `daemon` fixture starts bockerd with BOCKER_API_RECORD=<RECORD_DIR>/<driver>-<pid>.jsonl,
so the recording read here is this session's, for that driver. This module's name sorts last so
that it runs after the other compat tests of the session (pytest keeps file order within a
driver's group). See tests/api_schema.py for the rules, including the leniency for Go nulls.
"""

from __future__ import annotations

import warnings

from tests.api_schema import api_schema, check_recording, load_endpoints, read_recording
from tests.daemon import Daemon


def test_recorded_responses_match_the_upstream_schema(daemon: Daemon) -> None:
    assert daemon.record is not None, "the session daemon records its responses"
    # Run alone, the session has made few calls: these make sure the commonest bodies are checked.
    for args in (["version"], ["info"], ["ps", "-a"], ["images"], ["inspect", "busybox"]):
        daemon.out(*args)
    entries = read_recording(daemon.record)
    seen = {(e["method"].upper(), e["route"]) for e in entries if e["body"] is not None}
    for key in (("GET", "/version"), ("GET", "/info"), ("GET", "/containers/json"), ("GET", "/images/json")):
        assert any(k[0] == key[0] and k[1].endswith(key[1]) for k in seen), f"no {key} response recorded: {seen}"
    mismatches, unlisted, undocumented = check_recording(entries, api_schema(), load_endpoints())
    if undocumented:
        warnings.warn(
            f"{len(undocumented)} response fields not in the v1.44 swagger (not an error):\n  "
            + "\n  ".join(sorted(undocumented)),
            stacklevel=1,
        )
    problems = [f"route not listed in api_spec/endpoints.yaml: {r}" for r in unlisted]
    problems += [str(m) for m in mismatches]
    assert not problems, (
        f"{len(problems)} problems in {len(entries)} recorded responses ({daemon.record}):\n  " + "\n  ".join(problems)
    )
