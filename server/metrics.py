"""Prometheus metrics: request counts and latency histograms per route, plus index sizes.

A deliberately small implementation of the text exposition format (version 0.0.4), so
the server needs no extra dependency.  Counters and histograms are updated only from
the event loop (in :class:`MetricsMiddleware`), so they need no lock.  Routes are
labelled by their template (``/v1/collections/{name}/search``), never by the raw path,
which keeps the label set bounded; unmatched paths share one label.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets in seconds: sub-millisecond cache hits up to slow bulk ingests.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNMATCHED = "<unmatched>"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


class HttpMetrics:
    """Request counters and latency histograms keyed by (method, route[, status])."""

    def __init__(self, buckets: Sequence[float] = BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.hist_counts: dict[tuple[str, str], list[int]] = {}
        self.hist_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.in_flight = 0
        self.faults: dict[str, int] = defaultdict(int)

    def count_fault(self, code: str) -> None:
        """A server-side fault with a stable code (e.g. ``corrupt_data``) was answered."""
        self.faults[code] += 1

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, str(status))] += 1
        key = (method, route)
        counts = self.hist_counts.get(key)
        if counts is None:
            counts = self.hist_counts[key] = [0] * (len(self.buckets) + 1)
        for i, b in enumerate(self.buckets):
            if seconds <= b:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.hist_sum[key] += seconds

    def render(self) -> list[str]:
        out = ["# HELP vqsearch_http_requests_total HTTP requests by method, route template and status.",
               "# TYPE vqsearch_http_requests_total counter"]
        for (method, route, status), n in sorted(self.requests.items()):
            labels = _labels([("method", method), ("route", route), ("status", status)])
            out.append(f"vqsearch_http_requests_total{labels} {n}")
        out += ["# HELP vqsearch_http_request_duration_seconds HTTP request latency by method and route template.",
                "# TYPE vqsearch_http_request_duration_seconds histogram"]
        for (method, route), counts in sorted(self.hist_counts.items()):
            base = [("method", method), ("route", route)]
            acc = 0
            for b, c in zip(self.buckets, counts):
                acc += c
                out.append(f"vqsearch_http_request_duration_seconds_bucket{_labels(base + [('le', _num(b))])} {acc}")
            acc += counts[-1]
            out.append(f"vqsearch_http_request_duration_seconds_bucket{_labels(base + [('le', '+Inf')])} {acc}")
            total = _num(self.hist_sum[(method, route)])
            out.append(f"vqsearch_http_request_duration_seconds_sum{_labels(base)} {total}")
            out.append(f"vqsearch_http_request_duration_seconds_count{_labels(base)} {acc}")
        out += ["# HELP vqsearch_server_faults_total Server-side faults answered with a stable code "
                "(corrupt_data: a damaged file found while serving).",
                "# TYPE vqsearch_server_faults_total counter"]
        out += [f"vqsearch_server_faults_total{_labels([('code', c)])} {n}" for c, n in sorted(self.faults.items())]
        out += ["# HELP vqsearch_http_requests_in_flight HTTP requests being served.",
                "# TYPE vqsearch_http_requests_in_flight gauge", f"vqsearch_http_requests_in_flight {self.in_flight}"]
        return out


def gauge(name: str, help_text: str, samples: Iterable[tuple[Sequence[tuple[str, str]], float]]) -> list[str]:
    """Lines of one gauge family: ``samples`` are (label pairs, value)."""
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    out += [f"{name}{_labels(labels)} {_num(value)}" for labels, value in samples]
    return out


class MetricsMiddleware:
    """Times every HTTP request and counts it by route template and final status."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _template(self, scope: Scope) -> str:
        """The matched route's template; for requests rejected before routing (401, 413) it is looked up."""
        route = scope.get("route")
        if route is None:
            for candidate in self.routes:
                match, _ = candidate.matches(scope)
                if match != Match.NONE:
                    route = candidate
                    break
        return getattr(route, "path", None) or UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight -= 1
            self.metrics.observe(scope.get("method", "?"), self._template(scope), status, time.perf_counter() - t0)
