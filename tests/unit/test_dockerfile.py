"""Dockerfile instructions used by import -c."""

from __future__ import annotations

import pytest

from bocker_engine.build.dockerfile import apply_config_change, parse_key_values, split_words
from bocker_engine.errors import InvalidParameter


def test_dockerfile_changes() -> None:
    cfg: dict[str, object] = {}
    apply_config_change(cfg, 'CMD ["sh", "-c", "echo hi"]')
    assert cfg["Cmd"] == ["sh", "-c", "echo hi"]
    apply_config_change(cfg, "CMD echo shell form")
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo shell form"]
    apply_config_change(cfg, 'ENV A=1 B="two words"')
    apply_config_change(cfg, "ENV C three words")
    assert cfg["Env"] == ["A=1", "B=two words", "C=three words"]
    apply_config_change(cfg, "ENV A=2")
    assert cfg["Env"] == ["B=two words", "C=three words", "A=2"]
    apply_config_change(cfg, "LABEL a=b c=d")
    assert cfg["Labels"] == {"a": "b", "c": "d"}
    apply_config_change(cfg, "EXPOSE 80 53/udp")
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    apply_config_change(cfg, "WORKDIR /a")
    apply_config_change(cfg, "WORKDIR b")
    assert cfg["WorkingDir"] == "/a/b"
    apply_config_change(cfg, "USER app")
    apply_config_change(cfg, "STOPSIGNAL SIGINT")
    apply_config_change(cfg, 'ENTRYPOINT ["/bin/true"]')
    assert cfg["Entrypoint"] == ["/bin/true"] and cfg["Cmd"] is None
    apply_config_change(cfg, "VOLUME /data")
    assert cfg["Volumes"] == {"/data": {}}
    with pytest.raises(InvalidParameter, match="not a valid change command"):
        apply_config_change(cfg, "RUN echo")
    assert split_words("a 'b c' \"d\\\"e\" f\\ g") == ["a", "b c", 'd"e', "f g"]
    assert parse_key_values("ENV", "k v w") == [("k", "v w")]
