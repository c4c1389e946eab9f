"""The cost of warden.Job.beat() in the calling thread (`make bench`, tests/bench/beat_bench.cc).

Registers a job (heartbeat 0.4 s, so a beat is handed to the sending thread every 100 ms), times
20,000 beat() calls 100 µs apart and prints {"p50_ns", "p99_ns", "max_ns"}; then waits for a line
on stdin (the benchmark stops wardend meanwhile) and does it again.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import warden  # noqa: E402


def measure(job, calls=20000):
    took = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        job.beat()
        took.append(time.perf_counter_ns() - start)
        time.sleep(0.0001)
    took.sort()
    print(json.dumps({"p50_ns": took[len(took) // 2], "p99_ns": took[len(took) * 99 // 100],
                      "max_ns": took[-1]}), flush=True)


with warden.Job("beat-bench", heartbeat=0.4, grace=0) as job:
    measure(job)
    sys.stdin.readline()
    measure(job)
