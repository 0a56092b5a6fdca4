"""Prometheus metrics in a registry of the app's own, so apps in one process never collide."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar.exceptions import HTTPException
from litestar.utils import normalize_path
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from embedserve.admission import Priority
from embedserve.batching import Batcher, BatchStats
from embedserve.vector_cache import VectorCache

if TYPE_CHECKING:
    from litestar._asgi.asgi_router import ASGIRouter

_LATENCY = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)


@dataclass(frozen=True)
class ModelMetrics:
    """One model's per-request series (`Metrics.for_model`)."""

    tokens: Counter
    inputs: Counter
    tokenization: Histogram
    queue: Histogram
    inference: Histogram
    queue_by_priority: Mapping[Priority, Histogram]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "embedserve_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "embedserve_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tokens = Counter(
            "embedserve_tokens", "Tokens embedded (what the model saw)", ["model"], registry=r
        )
        self.inputs = Counter("embedserve_inputs", "Inputs embedded", ["model"], registry=r)
        self.tokenization = Histogram(
            "embedserve_tokenization_seconds",
            "Per request: checking limits and tokenizing",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.queue = Histogram(
            "embedserve_queue_seconds",
            "Per request: from queueing to the start of its first batch",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.inference = Histogram(
            "embedserve_inference_seconds",
            "Per request: from its first batch's start to its last batch's end",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_inputs = Histogram(
            "embedserve_batch_inputs", "Inputs per batch", ["model"], buckets=_COUNTS, registry=r
        )
        self.batch_requests = Histogram(
            "embedserve_batch_requests",
            "Requests sharing one batch",
            ["model"],
            buckets=_COUNTS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "embedserve_batch_padded_tokens",
            "Padded tokens per batch (longest × rows)",
            ["model"],
            buckets=_TOKENS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "embedserve_batch_inference_seconds",
            "Model time per batch",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_depth = Gauge(
            "embedserve_queue_inputs", "Inputs waiting for a batch", ["model"], registry=r
        )
        # Per request class (issue #23). Separate series, not a label on the ones above: their
        # names and labels are what dashboards already query.
        self.priority_requests = Counter(
            "embedserve_priority_requests",
            "Requests by priority and what admission decided: admitted; refused (429 on arrival); "
            "shed (admitted, then 429 from the queue under overload)",
            ["priority", "outcome"],
            registry=r,
        )
        # Labelled once here: the pipeline counts every request, and a 429 before the body is
        # read has no model yet, so these carry none (2 x 3 series, all present from the start).
        self.admitted = {p: self.priority_requests.labels(p.value, "admitted") for p in Priority}
        self.refused = {p: self.priority_requests.labels(p.value, "refused") for p in Priority}
        self.shed = {p: self.priority_requests.labels(p.value, "shed") for p in Priority}
        self.priority_queue = Histogram(
            "embedserve_priority_queue_seconds",
            "Per request: from queueing to the start of its first batch, by priority",
            ["model", "priority"],
            buckets=_LATENCY,
            registry=r,
        )
        self.priority_queue_depth = Gauge(
            "embedserve_priority_queue_inputs",
            "Inputs waiting for a batch, by priority",
            ["model", "priority"],
            registry=r,
        )
        # The exact result cache (embedserve.vector_cache), read when scraped.
        self.cache_hits = Gauge(
            "embedserve_cache_hits", "Inputs answered from the result cache", ["model"], registry=r
        )
        self.cache_misses = Gauge(
            "embedserve_cache_misses", "Inputs the result cache did not hold", ["model"], registry=r
        )
        self.cache_bytes = Gauge(
            "embedserve_cache_bytes", "Bytes held by the result cache", ["model"], registry=r
        )
        self._models: dict[str, ModelMetrics] = {}

    def for_model(self, model: str) -> ModelMetrics:
        """The per-request series of `model`, labelled once: a `labels()` lookup costs a lock and
        a dict probe each time, and a one-text request made five of them."""
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = ModelMetrics(
                tokens=self.tokens.labels(model),
                inputs=self.inputs.labels(model),
                tokenization=self.tokenization.labels(model),
                queue=self.queue.labels(model),
                inference=self.inference.labels(model),
                queue_by_priority={p: self.priority_queue.labels(model, p.value) for p in Priority},
            )
        return found

    def batch_observer(self, model: str) -> Callable[[BatchStats], None]:
        inputs = self.batch_inputs.labels(model)
        requests = self.batch_requests.labels(model)
        tokens = self.batch_tokens.labels(model)
        seconds = self.batch_seconds.labels(model)

        def observe(stats: BatchStats) -> None:
            inputs.observe(stats.inputs)
            requests.observe(stats.requests)
            tokens.observe(stats.padded_tokens)
            seconds.observe(stats.seconds)

        return observe

    def watch_queue(self, model: str, batchers: Sequence[Batcher]) -> None:
        """`model`'s queue depth, read when scraped: all its batchers (an embedder's extra heads
        have their own) together, and per priority."""
        self.queue_depth.labels(model).set_function(lambda: sum(b.queued_inputs for b in batchers))
        for priority in Priority:
            self.priority_queue_depth.labels(model, priority.value).set_function(
                lambda p=priority: sum(b.lane_inputs(p) for b in batchers)
            )

    def watch_cache(self, model: str, cache: VectorCache) -> None:
        self.cache_hits.labels(model).set_function(lambda: cache.hits)
        self.cache_misses.labels(model).set_function(lambda: cache.misses)
        self.cache_bytes.labels(model).set_function(lambda: cache.bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# The methods counted by name (RFC 9110's and PATCH); any other is "other". httptools refuses a
# method it does not know, but under h11 any token reaches the app, and as a label each would be
# series a client could add at will, as random paths would (they are "unmatched").
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class RequestMetrics:
    """ASGI wrapper counting every HTTP request by route template and status, 404s included.

    It wraps Litestar's ASGI handler rather than being a Litestar middleware because Litestar
    runs middleware only for requests that matched a route. An unknown path is "unmatched", one
    label whatever the path, so a client's random paths cannot add series.
    """

    def __init__(self, app: Any, metrics: Metrics, router: ASGIRouter) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router
        # (route, method, status) -> its labelled series, looked up once each.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        allow = ""

        async def capture(message: Any) -> None:
            nonlocal status, allow
            if message["type"] == "http.response.start":
                status = message["status"]
                allow = _header(message, b"allow")
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("path_template")
            if route is None:
                route = self._route_of_405(scope, allow) if status == 405 else "unmatched"
            method = scope["method"]
            key = (route, method if method in _METHODS else "other", status)
            series = self._series.get(key)
            if series is None:
                route, method, _ = key
                series = self._series[key] = (
                    self.metrics.requests.labels(route, method, str(status)),
                    self.metrics.latency.labels(route),
                )
            requests, latency = series
            requests.inc()
            latency.observe(time.perf_counter() - start)

    def _route_of_405(self, scope: Any, allow: str) -> str:
        """The template of the route a 405 was for. Litestar's router raises the 405 before it
        sets `path_template`, though the path did match a route: ask it again with a method that
        route takes (the 405's Allow header), so it matches the path the one way it always does."""
        method = allow.partition(",")[0].strip()
        if not method:
            return "unmatched"
        path = scope["path"]
        if root_path := scope.get("root_path", ""):
            path = path.split(root_path, maxsplit=1)[-1]
        try:
            return self.router.handle_routing(path=normalize_path(path), method=method)[-1]
        except HTTPException:  # no route after all: a path is never a label
            return "unmatched"


def _header(message: Any, name: bytes) -> str:
    for key, value in message.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""
