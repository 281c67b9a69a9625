"""The builder's pure parts: Dockerfile stages, word expansion, .dockerignore, config steps."""

from __future__ import annotations

import os

import pytest

from bocker_engine.build import ignore, steps
from bocker_engine.build.parser import parse, parse_commands
from bocker_engine.build.shell import expand, expand_words
from bocker_engine.errors import InvalidParameter


def test_stages_meta_args_and_directives() -> None:
    df = parse(
        "# escape=`\nARG B=busybox\nFROM ${B} AS one\nRUN echo a `\n  b\n"
        "FROM one\nCOPY --from=one --chown=1:2 a b /d/\n"
    )
    assert df.escape == "`"
    assert [c.original for c in df.meta_args] == ["ARG B=busybox"]
    assert [(s.base, s.name, s.index) for s in df.stages] == [("${B}", "one", 0), ("one", "", 1)]
    assert df.stages[0].commands[0].args == ("echo a   b",)
    copy = df.stages[1].commands[0]
    assert copy.flag("from") == "one" and copy.flag("chown") == "1:2" and copy.flag("chmod") is None
    assert df.stage_index("ONE") == 0
    with pytest.raises(InvalidParameter):
        df.stage_index("nope")


def test_parse_errors() -> None:
    with pytest.raises(InvalidParameter, match="unknown instruction: FOO"):
        parse("FROM x\nfoo bar\n")
    with pytest.raises(InvalidParameter, match="no build stage"):
        parse("RUN true\n")
    with pytest.raises(InvalidParameter):
        parse("# just a comment\n")
    assert parse_commands("ONBUILD RUN echo hi")[0].sub == "RUN"


@pytest.mark.parametrize(
    ("text", "one", "words"),
    [
        ("$A", "1", ["1"]),
        ("${A}x", "1x", ["1x"]),
        ('"$B"', "x y", ["x y"]),
        ("$B", "x y", ["x", "y"]),
        ("'$A'", "$A", ["$A"]),
        ("${C:-d}", "d", ["d"]),
        ("${E:-d}", "d", ["d"]),
        ("${E-d}", "", []),
        ("${A:+alt}", "alt", ["alt"]),
        ("${C:+alt}", "", []),
        ("a\\ b", "a b", ["a b"]),
        ("\\$A", "$A", ["$A"]),
        ("p q", "p q", ["p", "q"]),
    ],
)
def test_expand(text: str, one: str, words: list[str]) -> None:
    env = {"A": "1", "B": "x y", "E": ""}
    assert expand(text, env) == one
    assert expand_words(text, env) == words


def test_expand_errors() -> None:
    with pytest.raises(InvalidParameter):
        expand("${C:?must be set}", {})
    with pytest.raises(InvalidParameter):
        expand('"open', {})


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("x.log", True),
        ("keep.log", False),
        ("sub/x.log", False),
        ("node_modules", True),
        ("node_modules/a/b", True),
        ("a/b/tmp/x", True),
        ("abs/x", True),
        ("docs/a.md", True),
        ("docs/README.md", False),
        ("abc", True),
        ("abbc", False),
        ("src/main.py", False),
    ],
)
def test_dockerignore_patterns(path: str, ignored: bool) -> None:
    m = ignore.Matcher(
        ignore.parse("# c\n*.log\n!keep.log\nnode_modules\n**/tmp\n/abs\ndocs/*.md\n!docs/README.md\na?c\n")
    )
    assert m.matches(path) is ignored


def test_dockerignore_apply_keeps_exceptions_in_ignored_dirs(tmp_path: object) -> None:
    root = str(tmp_path)
    for rel in ("d/keep", "d/drop", "e/x", "Dockerfile"):
        os.makedirs(os.path.dirname(os.path.join(root, rel)) or root, exist_ok=True)
        open(os.path.join(root, rel), "w").close()
    ignore.apply(root, ignore.Matcher(ignore.parse("d\n!d/keep\ne\nDockerfile\n")), keep=("Dockerfile",))
    found = sorted(os.path.relpath(os.path.join(p, f), root) for p, _, fs in os.walk(root) for f in fs)
    assert found == ["Dockerfile", "d/keep"]


def test_config_steps_and_history_comments() -> None:
    cfg: dict[str, object] = {"Env": ["PATH=/bin"]}
    env = {"V": "val"}
    cmds = parse_commands(
        'ENV A=$V B="x y"\nLABEL "k 1"=v\nEXPOSE 80 90-91/udp\nVOLUME /a /b\nCMD echo hi\n'
        'ENTRYPOINT ["/e"]\nHEALTHCHECK --interval=1m30s CMD ["true"]\nSTOPSIGNAL SIGKILL\n'
    )
    comments = []
    cmd_set = False
    for c in cmds:
        comment, cmd_set = steps.apply(cfg, c, env, "\\", cmd_set)
        comments.append(comment)
    assert comments[:5] == [
        "ENV A=val B=x y",
        "LABEL k 1=v",
        "EXPOSE 80/tcp 90/udp 91/udp",
        "VOLUME [/a /b]",
        'CMD ["/bin/sh" "-c" "echo hi"]',
    ]
    assert cfg["Env"] == ["PATH=/bin", "A=val", "B=x y"]
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo hi"]  # CMD came first: ENTRYPOINT keeps it
    assert cfg["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 90_000_000_000}
    assert steps.parse_duration("100ms", "interval") == 100_000_000
    with pytest.raises(InvalidParameter):
        steps.parse_duration("5x", "interval")
