"""Prometheus metrics of a node, read from its counters at scrape time.

Protocols keep plain counters (``TransportStats``, the scheduler's ``stats``:
its takeovers, takeovers averted, line queries); nothing on the message path
touches prometheus_client. A per-node registry (not the global one), so
several nodes in one process (tests) keep their own figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

if TYPE_CHECKING:
    from .node import Node


SCHEDULER_COUNTERS = (
    ("takeovers", "Jobs taken over here from a coordinator that died"),
    ("takeovers_averted", "Takeovers not made: another holder of the record knew of a newer line of the job"),
    ("line_answers_ignored", "Answers to a pre-takeover line query that were no answer (wrong type or job)"),
    ("line_queries_unanswered", "Pre-takeover line queries with no answer (unreachable, timed out, undecodable)"),
    ("stepped_down", "Jobs this coordinator stepped down from: a replica held a newer line"),
    ("replicas_passed_over", "Replicas passed over for a while: a job record sent there failed in the transport"),
)


class NodeCollector:
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self):
        stats = self.node.transport.stats
        sent = CounterMetricFamily("p2pcompute_messages_sent", "Messages sent, by type", labels=["type"])
        for name, n in sorted(stats.sent.items()):
            sent.add_metric([name], n)
        yield sent
        received = CounterMetricFamily("p2pcompute_messages_received", "Messages received, by type", labels=["type"])
        for name, n in sorted(stats.received.items()):
            received.add_metric([name], n)
        yield received
        yield CounterMetricFamily("p2pcompute_bytes_sent", "Frame bytes sent", value=stats.bytes_sent)
        yield CounterMetricFamily("p2pcompute_bytes_received", "Frame bytes received", value=stats.bytes_received)
        messages = CounterMetricFamily("p2pcompute_protocol_messages", "Messages by protocol and direction",
                                       labels=["protocol", "direction"])
        frames = CounterMetricFamily("p2pcompute_protocol_bytes", "Frame bytes by protocol and direction "
                                     "(invalid: frames that did not decode)", labels=["protocol", "direction"])
        for family, by_direction in ((messages, (("sent", stats.protocol_sent), ("received", stats.protocol_received))),
                                     (frames, (("sent", stats.protocol_bytes_sent),
                                               ("received", stats.protocol_bytes_received)))):
            for direction, counts in by_direction:
                for protocol, n in sorted(counts.items()):
                    family.add_metric([protocol, direction], n)
            yield family
        rejected = CounterMetricFamily("p2pcompute_frames_rejected", "Frames dropped as invalid, by reason", labels=["reason"])
        for reason, n in sorted(stats.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        failures = CounterMetricFamily("p2pcompute_request_failures", "Requests that got no useful reply", labels=["kind"])
        for kind, n in sorted(stats.request_failures.items()):
            failures.add_metric([kind], n)
        yield failures
        yield CounterMetricFamily("p2pcompute_busy_drops", "Requests refused for lack of handler slots", value=stats.busy_drops)
        sample = stats.request_seconds
        yield SummaryMetricFamily("p2pcompute_request_seconds", "Round-trip time of recent requests",
                                  count_value=len(sample), sum_value=sum(sample))
        yield GaugeMetricFamily("p2pcompute_connected_peers", "Peers with an open connection",
                                value=len(self.node.transport.connected_peers()))
        yield GaugeMetricFamily("p2pcompute_known_peers", "Peers in the peer table", value=len(self.node.peering.known))
        yield from self._scheduler()

    def _scheduler(self):
        """The scheduler's fail-over counters (its ``stats``), when the node runs one."""
        scheduler = getattr(self.node, "services", {}).get("scheduler")
        stats = getattr(scheduler, "stats", None)
        if not isinstance(stats, dict):
            return
        for name, help_text in SCHEDULER_COUNTERS:
            yield CounterMetricFamily(f"p2pcompute_scheduler_{name}", help_text, value=stats.get(name, 0))


def metrics_text(node: Node) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return generate_latest(registry)
