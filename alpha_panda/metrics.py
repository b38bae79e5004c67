"""Prometheus metrics of one stage process (one registry per process, served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class StageMetrics:
    def __init__(self, stage: str, registry: CollectorRegistry | None = None) -> None:
        self.stage = stage
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.produced = Counter(
            "alpha_panda_messages_produced", "Records produced", ["stage", "topic"], registry=r
        )
        self.send_errors = Counter(
            "alpha_panda_send_errors", "Failed produce calls", ["stage", "topic"], registry=r
        )
        self.consumed = Counter(
            "alpha_panda_messages_consumed", "Records consumed", ["stage", "topic"], registry=r
        )
        self.processed = Counter(
            "alpha_panda_messages_processed", "Records processed", ["stage", "topic"], registry=r
        )
        self.failed = Counter(
            "alpha_panda_messages_failed",
            "Processing attempts that raised or records that failed decoding",
            ["stage", "topic", "kind"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "alpha_panda_dlq_records", "Records sent to a DLQ", ["stage", "topic"], registry=r
        )
        self.processing_seconds = Histogram(
            "alpha_panda_processing_seconds",
            "Time to process one record",
            ["stage", "topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "alpha_panda_record_age_seconds",
            "Wall time between a record's broker timestamp and the end of its processing",
            ["stage", "topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.offset_gaps = Counter(
            "alpha_panda_offset_gaps",
            "Source records skipped by the consumer (fetched and dropped around a rebalance)",
            ["stage", "topic"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "alpha_panda_consumer_lag",
            "High watermark minus committed offset",
            ["stage", "topic", "partition"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "alpha_panda_circuit_breaker_open",
            "1 while a circuit breaker is open (failing fast)",
            ["stage", "breaker"],
            registry=r,
        )
        self.broker_connected = Gauge(
            "alpha_panda_broker_connected",
            "1 while the stage's broker connection (Kite feed or trader) is usable",
            ["stage", "broker"],
            registry=r,
        )
        self.broker_token_expired = Gauge(
            "alpha_panda_broker_token_expired",
            "1 while the broker refuses the stored access token (log in again)",
            ["stage", "broker"],
            registry=r,
        )
        self.http_requests = Counter(
            "alpha_panda_http_requests",
            "HTTP requests served",
            ["stage", "route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "alpha_panda_http_request_seconds",
            "HTTP request latency",
            ["stage", "route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.domain = Counter(
            "alpha_panda_domain_events",
            "Domain outcomes (signals, approvals, rejections by reason, fills)",
            ["stage", "event", "detail"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
