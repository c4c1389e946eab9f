"""Jobs a container runs against the host's wardend (tests/python/test_containers.py). Each
prints one JSON line when it is ready, then waits to be killed.

    pod_job.py impostor HOST_PID   registers a child that has, in this PID namespace, the pid a
                                   host process has in wardend's (arranged with ns_last_pid), by
                                   its bare pid
    pod_job.py mistakes            names a pid and a path this container does not have
    pod_job.py outlived DIR        registers DIR/out (on a mount that outlives the container),
                                   /tmp/scratch (on the container's own /tmp) and a hook that
                                   writes DIR/hook-ran
    pod_job.py stall               registers with a 0.5 s heartbeat it never keeps and a diagnose
                                   command that names the main process by {pid}
"""

import json
import os
import sys
import time

import warden

mode = sys.argv[1]
client = warden.Client()
if mode == "stall":
    job = client.register_job("pod-stall", os.getpid(), heartbeat=0.5, kill_main_on_stall=True,
                              diagnose="echo {pid} $(cat /proc/{pid}/comm)")
else:
    job = client.register_job("pod-" + mode, os.getpid())
out = {"job": job, "main": os.getpid()}

if mode == "impostor":
    host_pid = int(sys.argv[2])
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(host_pid - 1))
    child = os.fork()
    if child == 0:
        os.execv("/bin/sleep", ["sleep", "3600"])
    out["child"] = child
    # A bare pid, as an old client or socat would send it: wardend must read it as this
    # container numbers it.
    out["reply"] = client.call({"op": "add_process", "job": job, "pid": child})
elif mode == "mistakes":
    errors = {}
    for name, request in [("pid", {"op": "add_process", "job": job, "pid": 4000000}),
                          ("path", {"op": "add_file", "job": job, "path": "/tmp/not/there"})]:
        try:
            client.call(request)
            errors[name] = None
        except warden.WardenError as e:
            errors[name] = {"code": e.code, "message": str(e)}
    out["errors"] = errors
elif mode == "outlived":
    out_dir = os.path.join(sys.argv[2], "out")
    os.makedirs(os.path.join(out_dir, "nested"))
    with open(os.path.join(out_dir, "nested", "part"), "w") as f:
        f.write("x")
    os.makedirs("/tmp/scratch")
    client.add_dir(job, out_dir)
    client.add_dir(job, "/tmp/scratch")
    # Runs in the pod's file tree, where DIR is, even once the pod is gone.
    client.add_hook(job, ["/bin/sh", "-c", "echo $WARDEN_REASON > %s/hook-ran" % sys.argv[2]])

print(json.dumps(out), flush=True)
while True:
    time.sleep(1)
