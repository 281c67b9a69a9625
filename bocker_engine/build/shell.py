"""Word expansion of Dockerfile arguments (BuildKit's shell.Lex): quotes, the escape character,
`$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`.

`expand` gives one string (ENV values, paths, USER...); `expand_words` splits on unquoted
whitespace (EXPOSE, VOLUME), unquoted variable values included.
"""

from __future__ import annotations

from collections.abc import Mapping

from bocker_engine.errors import InvalidParameter


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.s = text
        self.i = 0
        self.env = env
        self.esc = escape
        self.words: list[str] = []
        self.cur = ""
        self.in_word = False

    def _emit(self) -> None:
        if self.in_word:
            self.words.append(self.cur)
        self.cur, self.in_word = "", False

    def _add(self, text: str, split: bool) -> None:
        if not split:
            self.cur += text
            self.in_word = True
            return
        parts = text.split()
        if not parts:
            return
        if text[0].isspace():
            self._emit()
        for j, p in enumerate(parts):
            if j:
                self._emit()
            self.cur += p
            self.in_word = True
        if text[-1].isspace():
            self._emit()

    def run(self, stop: str = "") -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if stop and c == stop:
                return
            if c == "'":
                end = s.find("'", self.i + 1)
                if end < 0:
                    raise InvalidParameter("unexpected end of statement while looking for matching single-quote")
                self.cur += s[self.i + 1 : end]
                self.in_word = True
                self.i = end + 1
            elif c == '"':
                self.i += 1
                self.in_word = True
                self._double()
            elif c == self.esc:
                self.i += 1
                if self.i < len(s):
                    self.cur += s[self.i]
                    self.i += 1
                else:
                    self.cur += c
                self.in_word = True
            elif c == "$":
                self.i += 1
                self._add(self._var(), split=True)
            elif c.isspace():
                self._emit()
                self.i += 1
            else:
                self.cur += c
                self.in_word = True
                self.i += 1

    def _double(self) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                self.i += 1
                return
            if c == self.esc and self.i + 1 < len(s) and s[self.i + 1] in ('"', "$", self.esc):
                self.cur += s[self.i + 1]
                self.i += 2
            elif c == "$":
                self.i += 1
                self.cur += self._var()
            else:
                self.cur += c
                self.i += 1
        raise InvalidParameter("unexpected end of statement while looking for matching double-quote")

    def _name(self) -> str:
        s = self.s
        start = self.i
        while self.i < len(s) and (s[self.i].isalnum() or s[self.i] == "_"):
            self.i += 1
        return s[start : self.i]

    def _var(self) -> str:
        s = self.s
        if self.i < len(s) and s[self.i] == "{":
            self.i += 1
            name = self._name()
            if not name:
                raise InvalidParameter(f"failed to process {s!r}: missing ':' in substitution")
            if self.i < len(s) and s[self.i] == "}":
                self.i += 1
                return self.env.get(name, "")
            op = ""
            if self.i < len(s) and s[self.i] == ":":
                op = ":"
                self.i += 1
            if self.i >= len(s) or s[self.i] not in "-+?":
                raise InvalidParameter(f"failed to process {s!r}: unsupported modifier in substitution")
            op += s[self.i]
            self.i += 1
            sub = _Lexer(s, self.env, self.esc)
            sub.i = self.i
            sub.run(stop="}")
            if sub.i >= len(s):
                raise InvalidParameter(f"failed to process {s!r}: missing '}}' in substitution")
            self.i = sub.i + 1
            word = " ".join([*sub.words, sub.cur] if sub.in_word else sub.words)
            value = self.env.get(name)
            is_set = value is not None and (value != "" or ":" not in op)
            if op.endswith("-"):
                return value if is_set and value is not None else word
            if op.endswith("+"):
                return word if is_set else ""
            if not is_set:
                raise InvalidParameter(f"failed to process {s!r}: {name}: {word or 'is not allowed to be unset'}")
            return value or ""
        name = self._name()
        if not name:
            return "$"
        return self.env.get(name, "")

    def run_word(self) -> None:
        """Lex one whitespace-delimited word, variables not split (expand's mode)."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c.isspace():
                return
            if c == "$":
                self.i += 1
                self.cur += self._var()
            elif c == "'":
                end = s.find("'", self.i + 1)
                if end < 0:
                    raise InvalidParameter("unexpected end of statement while looking for matching single-quote")
                self.cur += s[self.i + 1 : end]
                self.i = end + 1
            elif c == '"':
                self.i += 1
                self._double()
            elif c == self.esc:
                self.i += 1
                if self.i < len(s):
                    self.cur += s[self.i]
                    self.i += 1
                else:
                    self.cur += c
            else:
                self.cur += c
                self.i += 1


def expand(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    # One word: whitespace between words is kept as written; quotes and escapes are removed.
    out = ""
    i = 0
    while i < len(text):
        if text[i].isspace():
            out += text[i]
            i += 1
            continue
        lx = _Lexer(text, env, escape)
        lx.i = i
        lx.run_word()
        out += lx.cur
        i = lx.i
    return out


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    lx = _Lexer(text, env, escape)
    lx.run()
    lx._emit()
    return lx.words
