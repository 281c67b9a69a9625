"""Remote build contexts (build/remote.py): what counts as a git URL, fragments, content types."""

from __future__ import annotations

import pytest

from bocker_engine.build.remote import GitRemote, check, content_type, is_git_url, parse_git_url
from bocker_engine.errors import InvalidParameter


def test_git_urls_like_dockerds_urlutil() -> None:
    for url in ("git://h/r", "git@github.com:o/r.git", "github.com/o/r", "https://h/r.git", "http://h/r.git#main:sub"):
        assert is_git_url(url), url
    for url in ("https://h/ctx.tar", "http://h/Dockerfile", "ftp://h/r.git"):
        assert not is_git_url(url), url


def test_git_fragments() -> None:
    assert parse_git_url("https://h/r.git") == GitRemote("https://h/r.git", "master", "")
    assert parse_git_url("https://h/r.git#v1:docker/app") == GitRemote("https://h/r.git", "v1", "docker/app")
    assert parse_git_url("github.com/o/r#:sub") == GitRemote("https://github.com/o/r", "master", "sub")
    with pytest.raises(InvalidParameter):
        parse_git_url("https://h/r.git#--upload-pack=evil")


def test_remote_checks() -> None:
    with pytest.raises(InvalidParameter, match="could not be recognized as URL"):
        check("/etc/passwd")
    with pytest.raises(InvalidParameter, match="no longer supported"):
        check("client-session")
    check("https://h/ctx.tar")


def test_content_types() -> None:
    assert content_type("application/x-tar", b"x") == ("application/x-tar", "")
    assert content_type("", b"FROM busybox\n")[0] == "text/plain"
    assert content_type("application/octet-stream", b"\x1f\x8b\x08")[0] == "application/x-gzip"
    assert content_type("text/html", b"<html>") == ("", 'unsupported Content-Type "text/html"')
