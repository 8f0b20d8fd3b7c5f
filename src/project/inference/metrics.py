"""Prometheus metrics of ``serve.py`` (``GET /metrics``), in a registry of the app's own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class ServerMetrics:
    """Requests by route and status, their latency, the batch sizes of predictions, and requests in flight."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("serve_requests", "Requests answered, by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("serve_request_seconds", "Time from a request's start to its answer, by route", ["route"],
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.batch_sizes = Histogram("serve_batch_size", "Inputs per prediction request", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                                     registry=self.registry)
        self.in_flight = Gauge("serve_requests_in_flight", "Requests being answered", registry=self.registry)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
