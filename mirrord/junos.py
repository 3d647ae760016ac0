"""``mirrord import junos``: a Junos ``forwarding-options port-mirroring`` stanza as mirrord's TOML.

Junos writes its configuration in two forms, and a file may mix them: the hierarchical one
(``forwarding-options { port-mirroring { ... } }``, what ``show configuration`` prints) and
``set`` lines (what ``show configuration | display set`` prints).  Both are read into the
same list of *statements*: the path of words from the top of the hierarchy, the line it is
on, and whether it is inactive.  The interpreter then walks each statement of
``forwarding-options port-mirroring`` (the global ``input``/``output`` and each
``instance NAME``) and builds one mirrord session per Junos scope; everything it does not
understand there is listed with its line.  Statements outside that stanza (``system``,
``protocols``, ...) are not mirroring and are counted, not listed; from ``interfaces`` only
a unit's ``vlan-id`` (or ``vlan-tags outer``) is read, to turn a unit into its VLAN.

What is done with Junos annotations:

- ``inactive:`` (and ``deactivate`` lines): Junos does not apply the statement, so neither
  does the import; it is noted, with its line, and left out.
- ``replace:`` and ``protect:``: they direct ``load replace`` and who may edit, not what the
  router does; the statement is read as if they were absent.
- ``apply-groups``: the groups may add port mirroring this file does not show; listed.

The TOML is written here (the standard library reads TOML but does not write it); what it
writes is checked with mirrord's own loader (:func:`mirrord.config.parse`) before it is
given out, unless it uses a VLAN input and this mirrord does not know VLAN inputs yet.
"""
from __future__ import annotations

import dataclasses
import re
import socket
import tomllib
from collections.abc import Iterable
from pathlib import Path

from mirrord.config import _IFNAME_BAD, IFNAMSIZ, OUTPUT_TYPES, REMOTE_TYPES, ConfigError
from mirrord.config import parse as parse_config

# Junos's own ranges for the input statements (the CLI refuses anything outside them)
RATE = (1, 65535)
RUN_LENGTH = (0, 20)
MAX_PACKET_LENGTH = (0, 9216)
VLAN_ID = (1, 4094)
FAMILIES = ("inet", "inet6", "any", "vpls", "ccc", "mpls", "ethernet-switching", "bridge")
GLOBAL = "port-mirroring"  # the session name of the global (instance-less) scope
MAX_DEPTH = 64  # braces deep: Junos's deepest hierarchies are about 15 (and Python recurses per level)
_SESSION_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII digits only (str.isdigit takes any script's)


LOCAL_TYPES = tuple(t for t in OUTPUT_TYPES if t not in REMOTE_TYPES)  # what a map may name


class JunosError(ValueError):
    """One line: where (FILE:LINE) and why."""


# ------------------------------------------------------------------------------ reading


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    text: str
    line: int
    quoted: bool = False

    def is_(self, punct: str) -> bool:
        return not self.quoted and self.text == punct


_PUNCT = "{};[]"


def tokenize(text: str, source: str = "<string>") -> list[Token]:
    """Words, quoted strings (with backslash escapes) and ``{ } ; [ ]``, each with its
    line; ``#`` comments (a ``#`` that starts a word) and ``/* */`` comments dropped."""
    out: list[Token] = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise JunosError(f"{source}:{line}: comment /* not closed")
            line += text.count("\n", i, end)
            i = end + 2
        elif c == '"':
            start, buf = line, []
            i += 1
            while True:
                if i >= n:
                    raise JunosError(f"{source}:{start}: quoted string not closed")
                c = text[i]
                if c == "\\" and i + 1 < n:
                    buf.append(text[i + 1])
                    line += text[i + 1] == "\n"
                    i += 2
                    continue
                i += 1
                if c == '"':
                    break
                line += c == "\n"
                buf.append(c)
            out.append(Token("".join(buf), start, True))
        elif c in _PUNCT:
            out.append(Token(c, line))
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _PUNCT and text[j] != '"':
                if text.startswith("/*", j):
                    break
                j += 1
            out.append(Token(text[i:j], line))
            i = j
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    path: tuple[str, ...]   # words from the top of the hierarchy
    line: int
    inactive: bool = False
    mark: tuple[tuple[str, ...], int] | None = None  # what made it inactive: (path, line)
    verb: str | None = None  # a set-form command other than set (delete, rename, ...)

    def __str__(self) -> str:
        return " ".join(_show(w) for w in self.path)


def _show(word: str) -> str:
    """A word as Junos would print it (quoted when it has to be), safe for one line."""
    w = word.encode("unicode_escape").decode("ascii")
    return f'"{w}"' if not w or any(c.isspace() or c in _PUNCT + '"#' for c in w) or w != word else w


_ANNOTATIONS = ("inactive:", "replace:", "protect:")
_LIST = object()  # where a [ ] list stands in a statement's words
_SET_VERBS = ("set", "deactivate", "activate", "delete", "insert", "rename", "annotate", "protect",
              "unprotect")


def statements(tokens: list[Token], source: str = "<string>") -> list[Statement]:
    """Both forms as one list of statements.  At the top level a line that starts with a
    bare ``set`` (or ``deactivate``, ...) is a set-form command: the words on that line;
    anything else is hierarchical, up to its ``;`` or its block's ``}``.  A container
    (``input { ... }``) is a statement of its own as well as the prefix of those inside it;
    ``interface [ a b ];`` is one statement per element.  Inactive marks (``inactive:``,
    ``deactivate PATH``) are applied to every statement under them."""
    out: list[Statement] = []
    deactivated: list[tuple[str, ...]] = []
    activated: list[tuple[str, ...]] = []
    pos = 0

    def fail(tok: Token | None, why: str) -> JunosError:
        where = f"{source}:{tok.line}" if tok is not None else f"{source}: at the end"
        return JunosError(f"{where}: {why}")

    def block(prefix: tuple[str, ...], inactive: bool, depth: int) -> None:
        nonlocal pos
        if depth > MAX_DEPTH:
            raise fail(tokens[pos - 1], f"more than {MAX_DEPTH} '{{' deep: not a Junos configuration")
        while pos < len(tokens):
            t = tokens[pos]
            if t.is_("}"):
                if depth == 0:
                    raise fail(t, "'}' without a '{' before it")
                pos += 1
                return
            if depth == 0 and not t.quoted and t.text in _SET_VERBS:
                words = []
                pos += 1
                while pos < len(tokens) and tokens[pos].line == t.line:
                    w = tokens[pos]
                    if not w.quoted and w.text in _PUNCT:
                        raise fail(w, f"{t.text} command: unexpected {w.text!r}")
                    words.append(w.text)
                    pos += 1
                if not words:
                    raise fail(t, f"{t.text} command without a statement")
                path = tuple(words)
                if t.text == "set":
                    out.append(Statement(path, t.line))
                elif t.text == "deactivate":
                    deactivated.append((path, t.line))
                elif t.text == "activate":
                    activated.append(path)
                else:  # delete, rename, ...: the import reads a configuration, not a change to one
                    out.append(Statement(path, t.line, verb=t.text))
                continue
            first, words, flag = t, [], inactive
            own_mark = False
            while pos < len(tokens) and not tokens[pos].quoted and tokens[pos].text in _ANNOTATIONS:
                own_mark = own_mark or (tokens[pos].text == "inactive:" and not inactive)
                flag = flag or tokens[pos].text == "inactive:"
                pos += 1
            lists: list[list[str]] = []
            while True:
                if pos >= len(tokens):
                    raise fail(None, f"statement at line {first.line} ends without ';' or '{{'")
                w = tokens[pos]
                if w.is_(";") or w.is_("{") or w.is_("}"):
                    break
                if w.is_("["):
                    if lists:  # Junos takes one per statement; several would multiply out
                        raise fail(w, "a second [ ] list in one statement")
                    items = []
                    pos += 1
                    while pos < len(tokens) and not tokens[pos].is_("]"):
                        if not tokens[pos].quoted and tokens[pos].text in _PUNCT:
                            raise fail(tokens[pos], f"unexpected {tokens[pos].text!r} in a [ ] list")
                        items.append(tokens[pos].text)
                        pos += 1
                    if pos >= len(tokens):
                        raise fail(w, "'[' without ']'")
                    lists.append(items)
                    words.append(_LIST)
                    pos += 1
                    continue
                words.append(w.text)
                pos += 1
            end = tokens[pos]
            if end.is_("}"):
                raise fail(end, f"statement at line {first.line} ends without ';'")
            if not words:
                raise fail(end, f"{end.text!r} without a statement")
            pos += 1
            for expanded in _expand(words, lists):
                out.append(Statement(prefix + expanded, first.line, flag))
                if own_mark:
                    deactivated.append((prefix + expanded, first.line))
            if end.is_("{"):
                block(prefix + tuple(w if w is not _LIST else " ".join(lists[0]) for w in words), flag, depth + 1)
        if depth:
            raise fail(None, "a '{' is not closed")

    block((), False, 0)

    def mark(path: tuple[str, ...]) -> tuple[tuple[str, ...], int] | None:
        if any(path[:len(m)] == m for m in activated):
            return None
        return next(((m, n) for m, n in deactivated if path[:len(m)] == m), None)

    return [dataclasses.replace(s, inactive=(m := mark(s.path)) is not None or s.inactive, mark=m)
            for s in out]


def _expand(words: list, lists: list[list[str]]) -> list[tuple[str, ...]]:
    """``interface [ a b ]`` -> (interface, a), (interface, b)."""
    paths: list[tuple[str, ...]] = [()]
    it = iter(lists)
    for w in words:
        if w is _LIST:
            items = next(it)
            paths = [p + (i,) for p in paths for i in items] if items else paths
        else:
            paths = [p + (w,) for p in paths]
    return paths


# ------------------------------------------------------------------------------ the stanza


@dataclasses.dataclass(slots=True)
class Value:
    value: int
    line: int


@dataclasses.dataclass(slots=True)
class Scope:
    """One Junos port-mirroring scope: the global one or an instance; one mirrord session."""

    junos: str                      # "port-mirroring" or "port-mirroring instance NAME"
    name: str                       # the Junos instance name, or GLOBAL
    lines: set[int] = dataclasses.field(default_factory=set)
    rate: Value | None = None
    run_length: Value | None = None
    max_packet_length: Value | None = None
    ingress: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    output: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    families: dict[str, int] = dataclasses.field(default_factory=dict)  # family: its first line


@dataclasses.dataclass(slots=True)
class Report:
    """What an import found: the sessions, and what the operator must hear about."""

    scopes: dict[str, Scope] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)     # the import fails
    unknown: list[str] = dataclasses.field(default_factory=list)    # fails unless --skip-unknown
    notes: list[str] = dataclasses.field(default_factory=list)      # said, changes nothing
    vlans: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # "ge-0/0/1.100": (vid, line)
    ignored: int = 0                 # statements outside the stanza
    ignored_tops: set[str] = dataclasses.field(default_factory=set)


def interpret(stmts: Iterable[Statement], source: str = "<string>") -> Report:
    r = Report()
    unknown_at: list[tuple[str, ...]] = []
    noted: set[tuple[tuple[str, ...], int]] = set()

    def unknown(s: Statement, depth: int, why: str = "unknown statement") -> None:
        prefix = s.path[:depth + 1]
        if any(prefix[:len(u)] == u for u in unknown_at):
            return  # a statement inside one already listed
        unknown_at.append(prefix)
        r.unknown.append(f"{source}:{s.line}: {' '.join(_show(w) for w in prefix)}: {why}")

    for s in stmts:
        p = s.path
        if s.inactive:
            m = s.mark or (p, s.line)
            if p[:2] == ("forwarding-options", "port-mirroring") and m not in noted:
                noted.add(m)
                r.notes.append(f"{source}:{m[1]}: {' '.join(_show(w) for w in m[0])}: inactive in Junos, "
                               f"left out with all it holds")
            continue
        if s.verb is not None:
            unknown(s, len(p) - 1, f"the command {s.verb!r} changes a configuration; the import reads one "
                          f"(use the output of 'show configuration | display set')")
            continue
        if p[0] in ("apply-groups", "apply-groups-except"):
            unknown(s, 0, "groups may add port mirroring this import does not see; "
                          "export with 'show configuration | display inheritance'")
            continue
        if p[0] == "interfaces":
            _vlan_of(s, r, source)
            continue
        if p[0] != "forwarding-options":
            r.ignored += 1
            r.ignored_tops.add(p[0])
            continue
        if len(p) == 1:
            continue
        if p[1] == "analyzer":
            unknown(s, 1, "analyzer sessions are not imported (only port-mirroring)")
            continue
        if p[1] in ("apply-groups", "apply-groups-except"):
            unknown(s, 1, "groups may add port mirroring this import does not see")
            continue
        if p[1] != "port-mirroring":
            r.ignored += 1
            r.ignored_tops.add(f"forwarding-options {p[1]}")
            continue
        _port_mirroring(s, 2, r, unknown, source)
    return r


def _vlan_of(s: Statement, r: Report, source: str) -> None:
    """``interfaces IFD unit N vlan-id V`` (or ``vlan-tags outer V``): the VLAN of IFD.N."""
    p = s.path
    if len(p) < 6 or p[2] != "unit":
        return
    if p[4] == "vlan-id" and len(p) == 6:
        v = p[5]
    elif p[4] == "vlan-tags" and len(p) >= 7 and p[5] == "outer":
        v = p[6]
    else:
        return
    if not _DIGITS.fullmatch(v) or not VLAN_ID[0] <= int(v) <= VLAN_ID[1]:
        return  # a range, "none", ...: the unit is not one VLAN; the unit number stays the guess
    r.vlans[f"{p[1]}.{p[3]}"] = (int(v), s.line)


def _number(s: Statement, words: tuple[str, ...], name: str, bounds: tuple[int, int], r: Report,
            source: str) -> Value | None:
    lo, hi = bounds
    if len(words) != 1 or not _DIGITS.fullmatch(words[0]):
        got = " ".join(words) or "nothing"
        r.errors.append(f"{source}:{s.line}: {name}: expects one number {lo}-{hi}, got {got!r}")
        return None
    v = int(words[0])
    if not lo <= v <= hi:
        r.errors.append(f"{source}:{s.line}: {name} {v}: out of range: Junos takes {lo}-{hi}")
        return None
    return Value(v, s.line)


def _port_mirroring(s: Statement, at: int, r: Report, unknown, source: str) -> None:
    p = s.path
    if len(p) > at and p[at] == "instance":
        if len(p) == at + 1:
            return
        name = p[at + 1]
        key, label = f"instance {name}", f"port-mirroring instance {_show(name)}"
        at += 2
    else:
        key, label, name = "", "port-mirroring", GLOBAL
    scope = r.scopes.get(key)
    if scope is None:
        scope = r.scopes[key] = Scope(junos=label, name=name)
    scope.lines.add(s.line)
    rest = p[at:]
    if rest and rest[0] == "family":
        if len(rest) == 1:
            return
        if rest[1] not in FAMILIES:
            unknown(s, at + 1, f"family {rest[1]!r} is not one of {', '.join(FAMILIES)}")
            return
        scope.families.setdefault(rest[1], s.line)
        at += 2
        rest = p[at:]
    if not rest:
        return
    head, args = rest[0], rest[1:]
    if head in ("apply-groups", "apply-groups-except"):
        unknown(s, at, "groups may add port mirroring this import does not see")
    elif head == "input":
        _input(s, scope, at + 1, args, r, unknown, source)
    elif head == "output":
        if not args:
            return
        if args[0] == "interface" and len(args) >= 2:
            if args[1] not in (i for i, _ in scope.output):  # not the same output said again
                scope.output.append((args[1], s.line))
            if len(args) > 2:
                unknown(s, at + 3, "not supported: mirrord sends the whole frame out of the "
                                   "interface, with no next hop or other option")
        else:
            unknown(s, at + 1, "not supported in an output (mirrord knows: interface)")
    else:
        unknown(s, at, "unknown statement")


def _input(s: Statement, scope: Scope, at: int, args: tuple[str, ...], r: Report, unknown,
           source: str) -> None:
    if not args:
        return
    head, vals = args[0], args[1:]
    bounds = {"rate": RATE, "run-length": RUN_LENGTH, "maximum-packet-length": MAX_PACKET_LENGTH}
    if head in bounds:
        v = _number(s, vals, head, bounds[head], r, source)
        if v is None:
            return
        attr = head.replace("-", "_").replace("maximum", "max")
        old: Value | None = getattr(scope, attr)
        if old is not None and old.value != v.value:
            r.errors.append(f"{source}:{v.line}: {scope.junos}: {head} {v.value} contradicts "
                            f"{head} {old.value} at line {old.line}")
            return
        if head == "maximum-packet-length" and 0 < v.value < 14:
            r.errors.append(f"{source}:{v.line}: maximum-packet-length {v.value}: Junos takes it "
                            f"(0-9216) but mirrord needs 0 (whole frame) or at least 14 (an Ethernet header)")
            return
        setattr(scope, attr, v)
    elif head == "ingress":
        if not vals:
            return
        if vals[0] == "interface" and len(vals) == 2:
            scope.ingress.append((vals[1], s.line))
        elif vals[0] == "interface" and len(vals) > 2:
            unknown(s, at + 3, "not supported on an ingress interface")
        else:
            unknown(s, at + 1, "unknown statement (mirrord knows: ingress interface NAME)")
    elif head == "egress":
        unknown(s, at, "not supported: mirrord mirrors what arrives on an interface (ingress) only")
    else:
        unknown(s, at, "unknown statement (mirrord knows: rate, run-length, maximum-packet-length, ingress)")


# ------------------------------------------------------------------------------ names


def linux_name_problem(v: str) -> str | None:
    """Why the kernel would refuse ``v`` as an interface name (config.py's rule), or None."""
    raw = v.encode("utf-8", "surrogatepass")
    if not 0 < len(raw) < IFNAMSIZ:
        return f"is {len(raw)} bytes long (1-15)"
    if v in (".", ".."):
        return "is reserved"
    if any(b in _IFNAME_BAD for b in raw):
        return "contains NUL, '/', ':', '%' or whitespace"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """What a Junos interface name maps to: a Linux name, and an output type (for an output)."""

    name: str
    type: str | None = None   # "tap"/"tun"/"interface" given as TYPE:NAME in the map; None: plain
    origin: str = ""          # where the mapping came from, for messages


def parse_map_entry(text: str, origin: str) -> tuple[str, Target]:
    """``JUNOS=LINUX`` or ``JUNOS LINUX``; LINUX may be ``tap:NAME`` / ``tun:NAME`` /
    ``interface:NAME`` to choose the output type of an output."""
    if "=" in text:
        junos, _, linux = text.partition("=")
    else:
        parts = text.split()
        if len(parts) != 2:
            raise JunosError(f"{origin}: expected 'JUNOS LINUX' or 'JUNOS=LINUX', got {text!r}")
        junos, linux = parts
    junos, linux = junos.strip(), linux.strip()
    if not junos or not linux:
        raise JunosError(f"{origin}: expected 'JUNOS LINUX' or 'JUNOS=LINUX', got {text!r}")
    otype = None
    if ":" in linux:
        otype, _, linux = linux.partition(":")
        if otype not in LOCAL_TYPES:  # a remote collector has no Junos interface to map
            raise JunosError(f"{origin}: {otype!r}: an output type is one of {', '.join(LOCAL_TYPES)}")
    if why := linux_name_problem(linux):
        raise JunosError(f"{origin}: {linux!r} is not a Linux interface name: it {why}")
    return junos, Target(linux, otype, origin)


def load_map(path: Path) -> dict[str, Target]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise JunosError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise JunosError(f"{path}: not UTF-8 text: {e.reason}") from None
    out: dict[str, Target] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        junos, t = parse_map_entry(line, f"{path}:{n}")
        if junos in out and out[junos] != dataclasses.replace(t, origin=out[junos].origin):
            raise JunosError(f"{path}:{n}: {junos} is mapped again (first at {out[junos].origin})")
        out[junos] = t
    return out


def split_unit(name: str) -> tuple[str, int | None]:
    """``ge-0/0/1.100`` -> (``ge-0/0/1``, 100); ``ge-0/0/1`` -> (``ge-0/0/1``, None)."""
    ifd, dot, unit = name.rpartition(".")
    if dot and ifd and _DIGITS.fullmatch(unit):
        return ifd, int(unit)
    return name, None


# ------------------------------------------------------------------------------ sessions


Input = str | tuple[str, int]  # a Linux name, or (parent, VLAN ID)


@dataclasses.dataclass(slots=True)
class Session:
    name: str
    junos: str
    lines: list[int]
    inputs: list[tuple[Input, str, int]]   # (input, Junos name, line)
    output: tuple[str, str, str, int]      # (type, Linux name, Junos name, line)
    rate: int = 1
    run_length: int = 0
    max_packet_length: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)


def build(r: Report, mapping: dict[str, Target], source: str = "<string>") -> list[Session]:
    """The sessions of the report, names mapped; problems go to r.errors / r.unknown / r.notes."""
    sessions: list[Session] = []
    unmapped: dict[str, int] = {}

    def lookup(junos: str, line: int, as_output: bool) -> tuple[Input, str | None] | None:
        ifd, unit = split_unit(junos)
        exact = mapping.get(junos)
        if exact is not None:
            if exact.type and not as_output:
                r.errors.append(f"{source}:{line}: ingress {junos}: mapped to {exact.type}:{exact.name} "
                                f"({exact.origin}); a type belongs to an output only")
                return None
            return exact.name, exact.type
        t = mapping.get(ifd)
        if t is None:
            unmapped.setdefault(ifd if unit is not None else junos, line)
            return None
        if unit is None:
            return t.name, t.type
        vid_line = r.vlans.get(junos)
        if vid_line is None and unit == 0:
            return t.name, t.type  # unit 0: the untagged parent (the Junos convention)
        if as_output:
            r.errors.append(f"{source}:{line}: output {junos}: a unit other than 0 needs a map entry of its "
                            f"own ({junos}=a Linux VLAN device such as {t.name}.{unit})")
            return None
        if t.type:
            r.errors.append(f"{source}:{line}: ingress {junos}: {ifd} is mapped to {t.type}:{t.name} "
                            f"({t.origin}); a type belongs to an output only")
            return None
        if vid_line is not None:
            return (t.name, vid_line[0]), None
        if not VLAN_ID[0] <= unit <= VLAN_ID[1]:
            r.errors.append(f"{source}:{line}: ingress {junos}: unit {unit} is no VLAN ID (1-4094) and this "
                            f"file gives no 'interfaces {ifd} unit {unit} vlan-id'; map {junos} itself")
            return None
        r.notes.append(f"{source}:{line}: ingress {junos}: no 'interfaces {ifd} unit {unit} vlan-id' in this "
                       f"file: VLAN {unit} assumed (the unit number)")
        return (t.name, unit), None

    for scope in r.scopes.values():
        if not scope.ingress and not scope.output:
            if scope.rate or scope.run_length or scope.max_packet_length:
                r.notes.append(f"{source}:{min(scope.lines)}: {scope.junos}: input settings with no ingress "
                               f"and no output: no session")
            continue
        first = min(scope.lines)
        if not scope.ingress:
            r.unknown.append(f"{source}:{first}: {scope.junos}: no ingress interface: Junos chooses its traffic "
                             f"with firewall filters (then port-mirror), which the import does not read; "
                             f"add 'input ingress interface NAME' (left out with --skip-unknown)")
            continue
        if not scope.output:
            r.errors.append(f"{source}:{first}: {scope.junos}: no output interface")
            continue
        if len(scope.output) > 1:
            (a, la), (b, lb) = scope.output[:2]
            r.errors.append(f"{source}:{lb}: {scope.junos}: a second output {b} (the first, {a}, is at line "
                            f"{la}): a mirrord session has one output")
            continue
        if "inet" in scope.families or "inet6" in scope.families:
            fams = ", ".join(sorted(scope.families))
            at = min(scope.families.values())
            r.notes.append(f"{source}:{at}: {scope.junos}: family {fams}: Junos mirrors only that family's "
                           f"packets; mirrord mirrors every frame of the ingress interfaces")
        name = scope.name
        notes = []
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            name = _SESSION_BAD.sub("_", name)[:64] or "instance"
            notes.append(f"session name {name!r}: the Junos name {scope.name!r} has characters mirrord does not take")
        inputs = []
        for junos, line in scope.ingress:
            got = lookup(junos, line, False)
            if got is not None:
                inputs.append((got[0], junos, line))
        ojunos, oline = scope.output[0]
        out = lookup(ojunos, oline, True)
        if out is None or len(inputs) != len(scope.ingress):
            continue
        oname, otype = out
        assert isinstance(oname, str)
        sessions.append(Session(
            name=name, junos=scope.junos, lines=sorted(scope.lines), inputs=inputs,
            output=(otype or "interface", oname, ojunos, oline),
            rate=scope.rate.value if scope.rate else 1,
            run_length=scope.run_length.value if scope.run_length else 0,
            max_packet_length=scope.max_packet_length.value if scope.max_packet_length else 0,
            notes=notes))
    if unmapped:
        names = sorted(unmapped, key=lambda n: unmapped[n])
        r.errors.append(f"{source}: no Linux name for {len(names)} Junos interface{'s' if len(names) > 1 else ''}: "
                        + ", ".join(f"{n} (line {unmapped[n]})" for n in names)
                        + "; give them with --map JUNOS=LINUX or --map-file")
    # an ingress in two places: Junos refuses it, and so would mirrord (one session per input)
    seen: dict[Input, tuple[str, int, str]] = {}
    for s in sessions:
        for inp, junos, line in s.inputs:
            if inp in seen:
                j0, l0, s0 = seen[inp]
                r.errors.append(f"{source}:{line}: ingress {junos} is already an ingress at line {l0} "
                                f"({j0}, {'session ' + repr(s0)}): an interface mirrors into one session")
            else:
                seen[inp] = (junos, line, s.name)
    return sessions


def missing_interfaces(sessions: list[Session], source: str = "<string>") -> list[str]:
    """One warning per input or output whose Linux interface does not exist here now."""
    try:
        present = {name for _, name in socket.if_nameindex()}
    except OSError:
        return []
    out = []
    for s in sessions:
        for inp, junos, line in s.inputs:
            dev = inp if isinstance(inp, str) else inp[0]
            if dev not in present:
                out.append(f"{source}:{line}: ingress {junos} -> {dev}: no such interface here now; the session "
                           f"mirrors it as soon as it appears")
        otype, oname, ojunos, oline = s.output
        if otype == "interface" and oname not in present:
            out.append(f"{source}:{oline}: output {ojunos} -> {oname}: no such interface here now; the daemon "
                       f"opens it as soon as it appears")
    return out


# ------------------------------------------------------------------------------ TOML


def toml_string(s: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[c])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _comment(s: str) -> str:
    """Text for a ``#`` comment: one line, no control characters."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in s)


def _spans(lines: list[int]) -> str:
    """[3, 4, 5, 9] -> "lines 3-5, 9"."""
    runs: list[list[int]] = []
    for n in sorted(set(lines)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)
    return f"line{'s' if len(lines) > 1 else ''} {text}"


def _toml_input(inp: Input) -> str:
    if isinstance(inp, str):
        return toml_string(inp)
    return f"{{ interface = {toml_string(inp[0])}, vlan = {inp[1]} }}"


def to_toml(sessions: list[Session], source: str, header: Iterable[str] = ()) -> str:
    lines = [f"# mirrord configuration imported from the Junos configuration {_comment(source)}",
             "# by `mirrord import junos`.  Check it with `mirrord check-config`.", ""]
    header = list(header)
    for n in header:
        lines.append(f"# {_comment(n)}")
    if header:
        lines.append("")
    for s in sessions:
        span = _spans(s.lines)
        lines.append(f"# Junos: forwarding-options {_comment(s.junos)}, {span}")
        for n in s.notes:
            lines.append(f"# note: {_comment(n)}")
        lines.append("[[session]]")
        lines.append(f"name = {toml_string(s.name)}")
        lines.append("input = [")
        for inp, junos, line in s.inputs:
            lines.append(f"    {_toml_input(inp)},  # line {line}: ingress interface {_comment(junos)}")
        lines.append("]")
        lines.append(f"rate = {s.rate}")
        lines.append(f"run_length = {s.run_length}")
        lines.append(f"max_packet_length = {s.max_packet_length}")
        otype, oname, ojunos, oline = s.output
        lines.append(f"output = {{ type = {toml_string(otype)}, name = {toml_string(oname)} }}"
                     f"  # line {oline}: output interface {_comment(ojunos)}")
        lines.append("")
    return "\n".join(lines)


@dataclasses.dataclass(slots=True)
class Result:
    toml: str
    sessions: list[Session]
    report: Report
    warnings: list[str]                # missing interfaces: said, the import goes on
    unchecked: str | None = None       # why check_config could not judge the result


def import_text(text: str, mapping: dict[str, Target], source: str = "<string>", *,
                check_interfaces: bool = True) -> Result:
    """The whole import of one file's text; raises JunosError for a file that cannot be
    read as Junos at all.  Errors and unknown statements are in ``result.report``."""
    report = interpret(statements(tokenize(text, source), source), source)
    sessions = build(report, mapping, source)
    if report.ignored:
        report.notes.append(f"{source}: {report.ignored} statements outside forwarding-options port-mirroring "
                            f"({', '.join(sorted(report.ignored_tops))}) are not mirroring and were not read")
    doc = to_toml(sessions, source, [f"note: {n}" for n in report.notes]
                  + [f"skipped: {u}" for u in report.unknown])
    warnings = missing_interfaces(sessions, source) if check_interfaces else []
    result = Result(doc, sessions, report, warnings)
    if not report.errors:
        try:
            parse_config(tomllib.loads(doc), source="imported")
        except ConfigError as e:
            vlan = any(not isinstance(i, str) for s in sessions for i, _, _ in s.inputs)
            if vlan and 'key "input"' in str(e):
                result.unchecked = (f"this mirrord does not take VLAN inputs yet ({e}); the file is "
                                    f"written for one that does")
            else:
                report.errors.append(f"{source}: the result is not a valid mirrord configuration: {e}")
    return result


MAX_FILE_SIZE = 64 << 20  # bytes: a whole router's configuration fits many times over


def read_file(path: Path) -> str:
    """The file's text: a regular file (not a FIFO that would block), at most MAX_FILE_SIZE."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise JunosError(f"{path}: cannot read: not a regular file")
            chunks, n = [], 0
            while n <= MAX_FILE_SIZE and (b := os.read(fd, MAX_FILE_SIZE + 1 - n)):
                chunks.append(b)
                n += len(b)
        finally:
            os.close(fd)
    except OSError as e:
        raise JunosError(f"{path}: cannot read: {e.strerror}") from None
    if n > MAX_FILE_SIZE:
        raise JunosError(f"{path}: cannot read: larger than {MAX_FILE_SIZE} bytes")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as e:
        raise JunosError(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}") from None


__all__ = ["JunosError", "Result", "Statement", "Target", "build", "import_text", "interpret", "load_map",
           "parse_map_entry", "statements", "to_toml", "tokenize", "toml_string"]
