"""`make bench`, alarm de-duplication: 1,000 identical ALARM creates sent at once over gRPC
(h2load, 10 connections x 100 streams: every create in flight together) must end as one
alarm with count 1000; the rate they are absorbed at is printed beside the rate of 1,000
plain creates (no alarm, each stored) driven the same way against the same server in the
same run. Rounds alternate the two, each round with a new entity, so load from anything else
on the machine hits both alike; the ratio is the median of the rounds'.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import grpc
from bench import Service, _wrk_duration, grpc_frame, require_tools

from service.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

CREATES = 1000
CONNECTIONS, STREAMS = 10, 100  # 1,000 streams in flight: all the creates at once
ROUNDS = 3
PATH = "/eventmgmt.v1.EventService/CreateEvent"


def blast(service: Service, key: str, body: Path) -> float:
    """Sends the serialized request CREATES times at once; the seconds until the last answer."""
    argv = [
        "h2load",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-m{STREAMS}",
        f"-n{CREATES}",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-H",
        f"x-api-key: {key}",
        "-d",
        str(body),
        f"http://127.0.0.1:{service.grpc_port}{PATH}",
    ]
    output = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", output)
    took = re.search(r"finished in ([\d.]+(?:us|ms|s|m))", output)
    if not (done and took) or int(done.group(2)) != CREATES:
        raise RuntimeError(f"h2load did not get {CREATES} answers:\n{output}")
    return _wrk_duration(took.group(1)) / 1000


def request_file(work_dir: Path, name: str, event: event_pb2.Event) -> Path:
    body = work_dir / f"{name}.bin"
    body.write_bytes(grpc_frame(event_service_pb2.CreateEventRequest(event=event)))
    return body


def the_alarm(service: Service, key: str, entity: str) -> tuple[int, int]:
    """(events stored for the entity, the count of the first), read back over gRPC."""
    with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        listed = event_service_pb2_grpc.EventServiceStub(channel).ListEvents(
            event_service_pb2.ListEventsRequest(
                entity_id=entity,
                page_size=10,
                total_size_mode=event_service_pb2.TOTAL_SIZE_MODE_EXACT,
            ),
            metadata=(("x-api-key", key),),
        )
    return listed.total_size, listed.events[0].count if listed.events else 0


def main() -> int:
    require_tools()
    alarm_rates: list[float] = []
    plain_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="eventmgmt-bench-alarms-") as tmp:
        work_dir = Path(tmp)
        service = Service(work_dir)
        service.start()
        try:
            key = service.create_key("bench")
            for round_ in range(ROUNDS):
                entity = f"pump-{uuid.uuid4().hex[:8]}"
                alarm = event_pb2.Event(
                    entity_type="Device",
                    entity_id=entity,
                    code="10042",
                    description="pump overheating",
                    classification=event_pb2.CLASSIFICATION_ALARM,
                    severity=event_pb2.SEVERITY_HIGH,
                )
                plain = event_pb2.Event(
                    entity_id=f"{entity}-plain", description="pump reading", severity=3
                )
                alarm_body = request_file(work_dir, f"alarm-{round_}", alarm)
                plain_body = request_file(work_dir, f"plain-{round_}", plain)
                for name in ("alarm", "plain") if round_ % 2 == 0 else ("plain", "alarm"):
                    time.sleep(0.5)  # the previous burst's commits and answers are done
                    if name == "alarm":
                        alarm_rates.append(CREATES / blast(service, key, alarm_body))
                    else:
                        plain_rates.append(CREATES / blast(service, key, plain_body))
                stored, count = the_alarm(service, key, entity)
                if (stored, count) != (1, CREATES):
                    raise AssertionError(
                        f"{CREATES} identical alarms left {stored} events, count {count}"
                    )
                plain_stored, _ = the_alarm(service, key, f"{entity}-plain")
                if plain_stored != CREATES:
                    raise AssertionError(f"{CREATES} plain creates stored {plain_stored}")
        finally:
            service.stop()
    ratios = [a / p for a, p in zip(alarm_rates, plain_rates, strict=True)]
    print(f"\nAlarm de-duplication: {CREATES:,} identical creates at once over gRPC (h2load):")
    print(
        f"  ended as                      1 alarm with count {CREATES:,} (each of {ROUNDS} rounds)"
    )
    print(
        f"  absorbed at             {statistics.median(alarm_rates):>9,.0f} creates/s  (runs: "
        f"{', '.join(f'{r:,.0f}' for r in alarm_rates)})"
    )
    print(
        f"  plain creates           {statistics.median(plain_rates):>9,.0f} creates/s  (runs: "
        f"{', '.join(f'{r:,.0f}' for r in plain_rates)})"
    )
    print(f"  absorbed / plain        {statistics.median(ratios):>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
