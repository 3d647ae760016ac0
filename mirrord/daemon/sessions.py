"""The sessions of the running config: one object per session, and the table of them.

A ``SessionState`` holds everything the daemon knows of one session: its config, its
output (sink), its row in the ring readers' route tables (``slot``), the counters folded
in from route tables that were retired (a reload, a detached ring), the errno of its
latest sink error, its sink-error log throttle and its reopen back-off.  The live
counters stay in C, per ring, until they are folded; ``SessionTable.counters`` adds the
two.  Nothing here knows the rings or the daemon: route tables are passed in.
"""
from __future__ import annotations

import dataclasses
import errno as errnomod
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mirrord.config import Output, Session
from mirrord.ring import LAT_BOUNDS_NS, LAT_BUCKETS, LAT_SUM_WORD, LAT_WORD, STATS_WORDS, DrainStats, Routes, sum_stats
from mirrord.sinks import Sink, sink_for

log = logging.getLogger("mirrord")

SINK_ERROR_LOG_EVERY = 10.0  # seconds between two sink_error log lines of one session


@dataclasses.dataclass
class SessionCounters:
    """Exact per-session totals: what rings handed over and where each copy went."""

    mirrored_packets: int = 0
    mirrored_bytes: int = 0
    dropped_no_output: int = 0
    dropped_sink_busy: int = 0
    dropped_sink_error: int = 0
    dropped_not_ip: int = 0
    truncated: int = 0
    # delivered copies by ring-to-output delay (LAT_BOUNDS_NS buckets, counted in C) and the sum
    latency: list[int] = dataclasses.field(default_factory=lambda: [0] * LAT_BUCKETS)
    latency_sum_ns: int = 0

    def add(self, s: DrainStats) -> None:
        self.mirrored_packets += s.packets
        self.mirrored_bytes += s.bytes
        self.dropped_no_output += s.dropped_no_output
        self.dropped_sink_busy += s.dropped_busy
        self.dropped_sink_error += s.dropped_error
        self.dropped_not_ip += s.dropped_not_ip
        self.truncated += s.truncated
        self.latency = [a + b for a, b in zip(self.latency, s.latency)]
        self.latency_sum_ns += s.latency_sum_ns

    def add_words(self, w: list[int], o: int) -> None:
        """Add one route's counters from ``sum_stats()`` (its words from ``o``)."""
        self.mirrored_packets += w[o]
        self.mirrored_bytes += w[o + 1]
        self.dropped_sink_busy += w[o + 2]
        self.dropped_sink_error += w[o + 3]
        self.dropped_not_ip += w[o + 4]
        self.dropped_no_output += w[o + 5]
        self.truncated += w[o + 6]
        if any(lat := w[o + LAT_WORD:o + LAT_WORD + LAT_BUCKETS]):
            self.latency = [a + b for a, b in zip(self.latency, lat)]
            self.latency_sum_ns += w[o + LAT_SUM_WORD]

    def copy(self) -> SessionCounters:
        return dataclasses.replace(self, latency=list(self.latency))

    def latency_status(self) -> dict[str, Any]:
        """Ring-to-output delay in status: the count, the mean and p50/p99 estimated from
        the buckets (linear within the bucket a quantile falls in; None with no sample)."""
        n = sum(self.latency)
        return {"samples": n, "mean_us": round(self.latency_sum_ns / n / 1e3, 1) if n else None,
                "p50_us": _quantile_us(self.latency, n, 0.50), "p99_us": _quantile_us(self.latency, n, 0.99),
                "estimated_from_buckets": True}

    def as_dict(self) -> dict[str, int]:
        return {"mirrored_packets": self.mirrored_packets, "mirrored_bytes": self.mirrored_bytes,
                "dropped_no_output": self.dropped_no_output, "dropped_sink_busy": self.dropped_sink_busy,
                "dropped_sink_error": self.dropped_sink_error, "dropped_not_ip": self.dropped_not_ip,
                "truncated": self.truncated}


class SessionState:
    """One session of the running config and everything the daemon keeps of it."""

    __slots__ = ("config", "sink", "slot", "retired", "errno", "errors_logged", "retry", "fixed", "listened")

    def __init__(self, config: Session, sink: Sink, slot: int) -> None:
        self.config = config
        self.sink = sink
        self.slot = slot                        # its row in every reader's route table
        self.retired = SessionCounters()        # folded in from retired route tables
        self.errno = 0                          # of its latest sink error (0: none yet)
        self.errors_logged = (0, -SINK_ERROR_LOG_EVERY)  # (sink errors already logged, when)
        self.retry: tuple[float, float] | None = None    # output reopen: (when, the delay that gave it)
        self.listened: bool | None = None  # when_listened: does something listen to the output now
        # what status says of it that only a reload changes (built once, not per call)
        self.fixed = {"name": config.name, "id": config.id, "input": list(config.input), "rate": config.rate,
                      "run_length": config.run_length, "max_packet_length": config.max_packet_length,
                      "filter": config.filter,  # "": none
                      # what each input names, resolved once here (VLAN inputs: the parent's
                      # bindings, outer VID; a forwarder matches these, not the labels)
                      "inputs": [{"interface": i.interface, "vlan": i.vlan, "name": i.name}
                                 for i in config.ingress],
                      "when_listened": config.when_listened}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def output(self) -> Output:
        return self.config.output

    def route(self) -> tuple[int, ...]:
        """Its row of a route table: (session id, output fd or -1, drain mode), and the
        encap of a remote output."""
        if self.sink.encap is not None:
            return (self.config.id, self.sink.fd, self.sink.mode, self.sink.encap)
        return (self.config.id, self.sink.fd, self.sink.mode)

    def status(self, counters: SessionCounters) -> dict[str, Any]:
        row = self.fixed.copy()
        s, k = self.config, self.sink
        row["output"] = {"type": s.output.type, "name": s.output.name, "open": k.is_open,
                         "error": k.error, "opens": k.opens}
        if collectors := k.collectors():  # remote outputs: per collector, for their whole life
            row["output"]["collectors"] = collectors
        row["counters"] = counters.as_dict()
        row["listened"] = self.listened if self.config.when_listened else None
        row["latency"] = counters.latency_status()
        row["latency_buckets"] = list(counters.latency)  # per LAT_BOUNDS_NS, for /metrics
        row["latency_sum_ns"] = counters.latency_sum_ns
        row["last_sink_error"] = errno_text(self.errno) if self.errno else None
        return row


class SessionTable:
    """The running sessions in config order (a session's slot is its position)."""

    def __init__(self, configs: Iterable[Session] = ()) -> None:
        self.all: list[SessionState] = []
        self.by_name: dict[str, SessionState] = {}
        self.by_output: dict[str, SessionState] = {}  # output name -> session (names are unique)
        # sessions a reload removed: their counters and log throttle, should the name come back
        self._gone: dict[str, SessionState] = {}
        self.replace(list(configs), {})

    def __iter__(self) -> Iterator[SessionState]:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.all)

    def __getitem__(self, name: str) -> SessionState:
        return self.by_name[name]

    def replace(self, configs: list[Session], sinks: Mapping[str, Sink]) -> None:
        """Make ``configs`` the running sessions, each with its sink from ``sinks`` (a new,
        closed one where it has none).  A session that stays keeps its counters, errno and
        throttle; one that goes is set aside, its errno dropped."""
        old = self.by_name
        names = {c.name for c in configs}
        for name, st in old.items():
            if name not in names:
                st.errno = 0
                self._gone[name] = st
        table = []
        for i, c in enumerate(configs):
            prev = old.get(c.name) or self._gone.pop(c.name, None)
            st = SessionState(c, sinks.get(c.name) or sink_for(c.output), i)
            if prev is not None:
                st.retired, st.errno, st.errors_logged = prev.retired, prev.errno, prev.errors_logged
            table.append(st)
        self.all = table
        self.by_name = {s.name: s for s in table}
        self.by_output = {s.output.name: s for s in table}

    def rows(self) -> list[tuple[int, ...]]:
        return [s.route() for s in self.all]

    def make_routes(self) -> Routes:
        """A route table over the sessions as they are (outputs still missing are -1)."""
        return Routes(self.rows())

    def fold(self, routes: Routes) -> None:
        """Add a route table's counters to the sessions' retired totals (the table is
        about to be dropped or replaced)."""
        flat = sum_stats([routes], len(self.all))
        if not any(flat):
            return
        for s in self.all:
            s.retired.add_words(flat, s.slot * STATS_WORDS)

    def counters(self, tables: Iterable[Routes]) -> dict[str, SessionCounters]:
        """Retired totals plus the live route tables, summed in C with one call per table,
        so status is one pass over the sessions however many rings there are."""
        total = sum_stats(tables, len(self.all))
        out: dict[str, SessionCounters] = {}
        for s in self.all:
            c = s.retired.copy()
            c.add_words(total, s.slot * STATS_WORDS)
            out[s.name] = c
        return out

    def note_errno(self, tables: Iterable[Routes]) -> None:
        """The errno of the latest sink error of each session, taken (and cleared) from
        the route tables that had one since the last look."""
        for t in tables:
            for i in t.errno_routes():
                if e := t.take_errno(i):
                    self.all[i].errno = e

    def log_sink_errors(self, tables: list[Routes], now: float, *, force: bool = False) -> None:
        """A write error an operator must act on (EMSGSIZE: the output's MTU; ENETDOWN,
        EIO: the device is down) is logged with its errno: the first at once, then at most
        one line per SINK_ERROR_LOG_EVERY seconds per session with the count since, and
        with ``force`` (a reload, the stop) whatever was held back.
        Busy drops (EAGAIN, ENOBUFS) are flow control and stay counters."""
        self.note_errno(tables)
        counters = self.counters(tables)
        for s in self.all:
            n = counters[s.name].dropped_sink_error
            seen, at = s.errors_logged
            if n <= seen or (now - at < SINK_ERROR_LOG_EVERY and not force):
                continue
            e = s.errno
            log.warning("event=sink_error session=%s output=%s dropped=%d errno=%s reason=%r", s.name,
                        s.output.name, n - seen, errnomod.errorcode.get(e, str(e)), os.strerror(e) if e else "")
            s.errors_logged = (n, now)


def errno_text(e: int) -> str | None:
    return f"{errnomod.errorcode.get(e, str(e))}: {os.strerror(e)}" if e else None


def _quantile_us(counts: list[int], n: int, q: float) -> float | None:
    """The q-quantile of bucketed delays in µs: linear within its bucket (as Prometheus's
    histogram_quantile); one above the last finite bound reads as that bound."""
    if not n:
        return None
    rank, below, lo = q * n, 0, 0.0
    for c, hi in zip(counts, LAT_BOUNDS_NS):
        if below + c >= rank and c:
            if hi == float("inf"):
                return round(lo / 1e3, 1)
            return round((lo + (hi - lo) * (rank - below) / c) / 1e3, 1)
        below += c
        lo = hi
    return round(lo / 1e3, 1)
