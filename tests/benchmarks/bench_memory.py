"""`make bench`, memory: a server's resident set after it took 1,000,000 events in, and its
Envoy's while streams pass through it.

One real `eventmgmt serve --workers 1` (its Envoy included) on a fresh SQLite file. The events
come as IngestEvents streams through Envoy's port (native gRPC passes through it, on the
streams' cluster), driven by h2load: each h2load request is one client stream whose body is
--frames serialized IngestEventsRequest messages of 100 events each, so the C client speaks
the stream and the load costs little of the two cores; --connections streams at a time, one
per connection, as edge gateways stream (h2load's unary setting, 128 streams at once, holds
1,000 batches in flight: what that costs is load, not what the events leave behind). Every
0.5 s the server's and Envoy's RSS are sampled. Reported: the server's RSS after the last event
(and its peak), Envoy's before, at its highest and at the end, and how much each grew over the
second half of the load (a bounded process stops growing once its caches and buffers are full).
The same run's rate is issue 15's streamed-ingest figure as a C client measures it (beside
bench_live's Python client, which shares the two cores with the server).

Flags: --events 1000000 (BENCH_MEMORY_EVENTS), --frames 10, --connections 4.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import figures
from bench import GrpcLoad, Service, env_default, grpc_frame, require_tools, status_kb
from bench_live import TARGET_INGEST_RATE

from service.v1 import event_pb2, event_stream_service_pb2

TARGET_SERVER_MB = 150.0
BATCH = 100


def ingest_body(path: Path, frames: int) -> int:
    """Writes one stream's body (frames x BATCH events, no idempotency keys, so that every
    request stores its events anew); returns the events in it."""
    with path.open("wb") as out:
        for frame in range(frames):
            request = event_stream_service_pb2.IngestEventsRequest(
                items=[
                    event_stream_service_pb2.IngestItem(
                        event=event_pb2.Event(
                            description="Error happened in the engine (memory bench)",
                            severity=(frame + n) % 6,
                            entity_id=f"pump-{n % 50}",
                            code=str(10000 + n),
                        )
                    )
                    for n in range(BATCH)
                ]
            )
            out.write(grpc_frame(request))
    return frames * BATCH


class Sampler(threading.Thread):
    """The largest server process's RSS and Envoy's, in MB, every `every` seconds."""

    def __init__(self, service: Service, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.service, self.every = service, every
        self.samples: list[tuple[float, float, float]] = []
        self.done = threading.Event()

    def sample(self) -> tuple[float, float, float]:
        groups = self.service.processes()
        server = max((status_kb(p, "VmRSS") or 0) for p in groups["server"]) / 1024
        envoy = max([(status_kb(p, "VmRSS") or 0) for p in groups["envoy"]] or [0]) / 1024
        return time.monotonic(), server, envoy

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.samples.append(self.sample())


def growth(samples: list[tuple[float, float, float]], column: int) -> float:
    """MB gained from the middle of the load to its end."""
    half = samples[len(samples) // 2 :]
    return half[-1][column] - half[0][column] if len(half) > 1 else 0.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=env_default("BENCH_MEMORY_EVENTS", 0))
    parser.add_argument("--frames", type=int, default=10)
    # As an edge gateway streams: a few long streams, one per connection.
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args(argv)
    quick = os.environ.get("BENCH_QUICK") in ("1", "true")
    events = args.events or (100_000 if quick else 1_000_000)
    require_tools()
    work_dir = Path(tempfile.mkdtemp(prefix="eventmgmt-bench-memory-"))
    try:
        service = Service(work_dir, workers=1)
        key = service.create_key("bench")
        service.start()
        try:
            body = work_dir / "ingest.bin"
            per_stream = ingest_body(body, args.frames)
            load = GrpcLoad(
                "/eventmgmt.v1.EventStreamService/IngestEvents",
                body,
                key,
                None,
                clients=args.connections,
                streams=1,
            )
            sampler = Sampler(service)
            before = sampler.sample()
            before_stored = service.stored_events()
            streams = -(-events // per_stream)
            print(
                f"memory bench: {streams * per_stream:,} events in {streams:,} IngestEvents "
                f"streams of {per_stream} through Envoy (h2load); server RSS {before[1]:.0f} "
                f"MB, Envoy {before[2]:.0f} MB, load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            sampler.start()
            began = time.monotonic()
            load.run(service.rest_port, service.processes(), count=streams)
            took = time.monotonic() - began
            sampler.done.set()
            sampler.join()
            time.sleep(1.0)  # the last commits and their answers
            after = sampler.sample()
            stored = service.stored_events()
            peak = service.rss_mb()[1]
            if stored < streams * per_stream:
                # h2load counts a gRPC error (trailers on an HTTP 200) as a success.
                print(f"  only {stored:,} events stored; the server's log:\n{service.log_tail()}")
        finally:
            service.stop()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    samples = [before, *sampler.samples, after]
    envoy_peak = max(s[2] for s in samples)
    print(
        f"  {stored:,} events stored in {took:.0f} s ({stored / took:,.0f}/s; "
        f"{streams - (stored - before_stored) // per_stream} streams failed)\n"
        f"  server RSS {after[1]:.0f} MB after them (peak {peak:.0f}; "
        f"{growth(samples, 1):+.1f} MB over the second half)\n"
        f"  Envoy RSS {before[2]:.0f} MB before, {envoy_peak:.0f} MB at most, {after[2]:.0f} "
        f"MB at the end ({growth(samples, 2):+.1f} MB over the second half)",
        flush=True,
    )
    figures.record(
        7,
        f"streamed ingest into one process ({streams:,} IngestEvents streams through Envoy, "
        "batches of 100; h2load, a C client)",
        f"{stored / took:,.0f} events/s ({stored:,} events stored in {took:.0f} s)",
        f">= {TARGET_INGEST_RATE:,} events/s",
        stored / took >= TARGET_INGEST_RATE and stored >= events,
    )
    figures.record(
        8,
        f"server RSS after {stored:,} events streamed in (SQLite, one process)",
        f"{after[1]:.0f} MB (peak {peak:.0f}, {growth(samples, 1):+.1f} MB over the second "
        f"half; {stored / took:,.0f} events/s by h2load through Envoy)",
        f"<= {TARGET_SERVER_MB:.0f} MB",
        after[1] <= TARGET_SERVER_MB and stored >= events,
    )
    figures.record(
        8,
        f"Envoy RSS under {streams:,} IngestEvents streams",
        f"{before[2]:.0f} MB before, {envoy_peak:.0f} at most, {after[2]:.0f} at the end "
        f"({growth(samples, 2):+.1f} MB over the second half)",
        "bounded",
        growth(samples, 2) <= max(5.0, 0.05 * envoy_peak),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
