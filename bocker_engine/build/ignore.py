""".dockerignore: Go-style patterns with `**` and `!` exceptions (moby's patternmatcher).

Patterns are cleaned like filepath.Clean with the leading `/` dropped; the last pattern that
matches a path (or one of its parent directories) decides, a `!` pattern re-including it.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
from dataclasses import dataclass

_ESCAPE = set(".+()|{}$")


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


def _compile(pattern: str) -> re.Pattern[str]:
    out = "^"
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                out += ".*" if i >= n else "(.*/)?"
                continue
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c in _ESCAPE:
            out += "\\" + c
        elif c == "\\":
            i += 1
            out += re.escape(pattern[i]) if i < n else "\\\\"
        else:
            out += c
        i += 1
    try:
        return re.compile(out + "$", re.S)
    except re.error:
        # Go rejects such a pattern at build time; a pattern that matches nothing is kinder.
        return re.compile(r"(?!)")


def _clean(pattern: str) -> str:
    cleaned = posixpath.normpath(pattern)
    if cleaned.startswith("//"):
        cleaned = cleaned[1:]
    if len(cleaned) > 1 and cleaned.startswith("/"):
        cleaned = cleaned[1:]
    return cleaned


def parse(text: str) -> list[Pattern]:
    """The lines of a .dockerignore file (comments, blank lines, `!` exceptions)."""
    out: list[Pattern] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
            if not line:
                continue
        cleaned = _clean(line)
        out.append(Pattern(cleaned, exclusion, _compile(cleaned)))
    return out


class Matcher:
    def __init__(self, patterns: list[Pattern]) -> None:
        self.patterns = patterns
        self.has_exclusions = any(p.exclusion for p in patterns)

    def matches(self, path: str) -> bool:
        """Whether `path` (relative to the context, `/`-separated) is ignored."""
        path = posixpath.normpath(path)
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for p in self.patterns:
            if p.exclusion != matched:
                continue
            hit = bool(p.regex.match(path))
            if not hit and parents:
                hit = any(p.regex.match("/".join(parents[: i + 1])) for i in range(len(parents)))
            if hit:
                matched = not p.exclusion
        return matched


ALWAYS_KEPT = (".dockerignore",)


def apply(root: str, matcher: Matcher, keep: tuple[str, ...] = ()) -> None:
    """Delete from the extracted context `root` what the patterns exclude (never `keep`)."""
    if not matcher.patterns:
        return
    kept = set(keep) | set(ALWAYS_KEPT)

    def walk(rel: str) -> None:
        full = os.path.join(root, rel) if rel else root
        with os.scandir(full) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            child = f"{rel}/{e.name}" if rel else e.name
            is_dir = e.is_dir(follow_symlinks=False)
            if child in kept:
                continue
            if matcher.matches(child):
                if is_dir and matcher.has_exclusions:
                    walk(child)  # an exception may re-include something inside
                    with os.scandir(os.path.join(root, child)) as inner:
                        if next(inner, None) is not None:
                            continue
                if is_dir:
                    shutil.rmtree(os.path.join(root, child), ignore_errors=True)
                else:
                    os.unlink(os.path.join(root, child))
            elif is_dir:
                walk(child)

    walk("")
