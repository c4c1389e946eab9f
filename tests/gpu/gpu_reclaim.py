#!/usr/bin/python3
"""On a machine with an NVIDIA GPU: a real torch job whose main process and DataLoader workers hold
device memory is SIGKILLed, with and without warden. Measures from nvidia-smi how long until the
memory is released, and compares warden's cleanup report with nvidia-smi's figures.

    WARDEND=build/bin/wardend /usr/bin/python3 tests/gpu/gpu_reclaim.py

Run as root (wardend reads every process's /proc/PID/fd). Prints a Markdown table for
BENCHMARKS.md; exits 1 if warden did not release the memory within grace + 1 s.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
GRACE = 2.0
WORKERS = 2
MIB = 512


def gpu_memory_by_pid():
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         check=True).stdout
    used = {}
    for line in out.strip().splitlines():
        pid, mib = (x.strip() for x in line.split(","))
        used[int(pid)] = int(mib) << 20
    return used


def start_job(env, no_warden):
    ready = tempfile.mkdtemp(prefix="warden-gpu-ready-")
    argv = [sys.executable, os.path.join(here, "gpu_job.py"), "--workers", str(WORKERS),
            "--mib", str(MIB), "--grace", str(GRACE)] + (["--no-warden"] if no_warden else [])
    job = subprocess.Popen(argv, env=dict(env, READY_DIR=ready), stdout=subprocess.PIPE, text=True)
    pids = json.loads(job.stdout.readline())
    return job, [pids["main"]] + pids["workers"]


def kill_main(env, no_warden):
    """Starts the job, SIGKILLs its main process once every process holds its memory; returns the
    pids (main first), what each held by nvidia-smi, and the seconds until all was released (None:
    not within grace + 10 s)."""
    job, pids = start_job(env, no_warden)
    before = gpu_memory_by_pid()
    held = {pid: before.get(pid, 0) for pid in pids}
    os.kill(pids[0], signal.SIGKILL)
    job.wait()
    return pids, held, until_released(pids, GRACE + 10)


def until_released(pids, bound):
    """Seconds until no pid holds device memory, or None after `bound`."""
    start = time.monotonic()
    while time.monotonic() - start < bound:
        if not set(pids) & set(gpu_memory_by_pid()):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def main():
    state = tempfile.mkdtemp(prefix="warden-gpu-")
    socket = os.path.join(state, "warden.sock")
    wardend = subprocess.Popen([os.environ.get("WARDEND", os.path.join(root, "build/bin/wardend")),
                                "--socket", socket, "--state-dir", state, "--no-durable"])
    env = dict(os.environ, WARDEN_SOCKET=socket,
               PYTHONPATH=os.path.join(root, "client", "python"))
    sys.path.insert(0, os.path.join(root, "client", "python"))
    import warden
    for _ in range(100):
        if os.path.exists(socket):
            break
        time.sleep(0.05)
    rows = []
    try:
        # With warden: SIGKILL the main process; wardend ends the workers and the memory is freed.
        pids, held, with_warden = kill_main(env, no_warden=False)
        client = warden.Client(socket)
        report = None
        for _ in range(200):
            jobs = [j for j in client.status() if j["state"] == "cleaned"]
            if jobs:
                report = client.status(jobs[0]["id"])["report"]
                break
            time.sleep(0.05)
        reported = {p["pid"]: sum(g.get("memory_bytes", 0) for g in p.get("gpus", []))
                    for p in report["processes"]}
        rows.append(("warden", with_warden, held, reported, report.get("gpus", [])))

        # Without warden: the hung workers keep their memory.
        pids, held, without = kill_main(env, no_warden=True)
        still = {pid: gpu_memory_by_pid().get(pid, 0) for pid in pids[1:]}
        for pid in pids[1:]:
            os.kill(pid, signal.SIGKILL)
        rows.append(("no warden", without, held, still, []))
    finally:
        wardend.terminate()
        wardend.wait()

    print("| run | released after SIGKILL | held (nvidia-smi) | warden's report / still held |")
    print("|---|---|---|---|")
    for name, seconds, held, other, gpus in rows:
        when = f"{seconds:.2f} s" if seconds is not None else f"not within {GRACE + 10:.0f} s"
        print(f"| {name} | {when} | {sum(held.values()) >> 20} MiB in {len(held)} processes | "
              f"{sum(other.values()) >> 20} MiB |")
        for g in gpus:
            print(f"|  | {g['device']} {g.get('uuid', '')} | held {g.get('held_bytes', 0) >> 20} "
                  f"MiB | released {g.get('released_bytes', 0) >> 20} MiB |")
    ok = rows[0][1] is not None and rows[0][1] <= GRACE + 1 and rows[1][1] is None
    # The report's per-process figures are nvidia-smi's (both come from the driver).
    ok = ok and all(rows[0][3].get(pid, 0) == bytes for pid, bytes in rows[0][2].items())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
