"""The node check where operators plug it in: the Slurm prolog and HealthCheckProgram as slurmd
runs them, the node-problem-detector plugin by its exit-code contract (0 OK, 1 problem,
2 unknown), and the Python client's check(), against a real wardend whose GPU set is a device
node the test makes (the device number of /dev/zero: nothing holds it open, and no other test
uses it as its GPU)."""

import os
import subprocess
import time

import pytest

import slurmd
from conftest import ROOT, WARDENCTL, serve, wait_gone

PROLOG = os.path.join(slurmd.SLURM, "prolog.sh")
HEALTHCHECK = os.path.join(slurmd.SLURM, "healthcheck.sh")
NPD_PLUGIN = os.path.join(ROOT, "contrib", "kubernetes", "node-problem-detector", "warden-check.sh")


@pytest.fixture
def gpu_node(tmp_path):
    node = tmp_path / "gpus" / "nvidia0"
    node.parent.mkdir()
    try:
        os.mknod(node, 0o666 | 0o020000, os.makedev(1, 5))
        os.close(os.open(node, os.O_RDONLY))
    except OSError as e:
        pytest.skip("cannot make a device node here: %s" % e)
    return str(node)


@pytest.fixture
def checked(request, monkeypatch, gpu_node):
    """A wardend whose GPU is the test's node (the machine's own /dev/shm is not judged)."""
    yield from serve(request, monkeypatch, "--gpu-devices", os.path.dirname(gpu_node) + "/nvidia*",
                     "--nvml-library", "", "--check-shm-share", "1")


def hold(node):
    """A process of no job holding the GPU, as a leftover CUDA process would."""
    p = subprocess.Popen(["/bin/sh", "-c", 'exec sleep 600 3<"$0"', node])
    deadline = time.monotonic() + 5
    while not os.path.exists("/proc/%d/fd/3" % p.pid) or "sleep" not in open(
            "/proc/%d/comm" % p.pid).read():
        assert time.monotonic() < deadline, "the holder never opened the node"
        time.sleep(0.01)
    return p


def end(process):
    process.kill()
    process.wait(10)


def test_client_check_names_the_stray_and_reclaim_ends_it(checked, gpu_node):
    client = checked.client()
    assert client.check()["clean"]
    stray = hold(gpu_node)
    try:
        verdict = client.check()
        assert not verdict["clean"]
        [finding] = verdict["findings"]
        assert finding["kind"] == "stray_gpu_holder"
        assert finding["pid"] == stray.pid
        assert finding["action"]
        reclaimed = client.check(reclaim=True, grace=1)
        assert reclaimed["clean"], reclaimed
        assert [a["outcome"] for a in reclaimed["reclaimed"]] == ["terminated"]
        stray.wait(5)
    finally:
        end(stray)


@pytest.mark.skipif(not slurmd.CAN_RUN, reason=slurmd.WHY_NOT)
def test_prolog_fails_on_a_dirty_node_and_passes_on_a_clean_one(checked, gpu_node, tmp_path):
    stray = hold(gpu_node)
    try:
        run, lines = slurmd.run(tmp_path / "dirty", checked.socket, PROLOG, {"SLURM_JOB_ID": "99"})
        assert run.returncode == 1, run.stderr
        assert "stray_gpu_holder: pid %d" % stray.pid in run.stderr
        assert any("warden-prolog" in l and "slurm job 99" in l and str(stray.pid) in l
                   for l in lines), lines
    finally:
        end(stray)
    run, _ = slurmd.run(tmp_path / "clean", checked.socket, PROLOG, {"SLURM_JOB_ID": "100"})
    assert run.returncode == 0, run.stderr


@pytest.mark.skipif(not slurmd.CAN_RUN, reason=slurmd.WHY_NOT)
def test_prolog_that_may_reclaim_ends_the_stray_and_passes(checked, gpu_node, tmp_path):
    stray = hold(gpu_node)
    try:
        run, _ = slurmd.run(tmp_path, checked.socket, PROLOG,
                            {"SLURM_JOB_ID": "101", "WARDEN_PROLOG_RECLAIM": "1"})
        assert run.returncode == 0, run.stderr
        assert not wait_gone([stray.pid], 5)
    finally:
        end(stray)


@pytest.mark.skipif(not slurmd.CAN_RUN, reason=slurmd.WHY_NOT)
def test_prolog_does_not_drain_when_wardend_cannot_be_reached(tmp_path):
    run, lines = slurmd.run(tmp_path, str(tmp_path / "none.sock"), PROLOG, {"SLURM_JOB_ID": "7"})
    assert run.returncode == 0, run.stderr
    assert "cannot tell" in run.stderr


@pytest.mark.skipif(not slurmd.CAN_RUN, reason=slurmd.WHY_NOT)
def test_healthcheck_drains_a_dirty_node_and_resumes_it_once_clean(checked, gpu_node, tmp_path):
    # scontrol as far as the script uses it: `show node` says the drain reason, `update` records.
    calls = tmp_path / "scontrol.calls"
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("""#!/bin/sh
if [ "$1" = show ]; then
  grep -o 'Reason=warden:.*' "%(calls)s" 2>/dev/null | tail -n1 | sed 's/.*/   & [root@now]/'
  exit 0
fi
echo "$*" >>"%(calls)s"
""" % {"calls": calls})
    scontrol.chmod(0o755)
    env = {"SCONTROL": str(scontrol), "SLURMD_NODENAME": "n1"}
    stray = hold(gpu_node)
    try:
        run, lines = slurmd.run(tmp_path / "dirty", checked.socket, HEALTHCHECK, env)
        assert run.returncode == 0, run.stderr
        assert calls.read_text().splitlines() == [
            "update NodeName=n1 State=DRAIN Reason=warden: 1 findings (wardenctl check)"]
        assert any("warden-healthcheck" in l for l in lines)
    finally:
        end(stray)
    run, _ = slurmd.run(tmp_path / "clean", checked.socket, HEALTHCHECK, env)
    assert run.returncode == 0, run.stderr
    assert calls.read_text().splitlines()[-1] == "update NodeName=n1 State=RESUME"


def npd(socket_path):
    env = dict(os.environ, WARDENCTL=WARDENCTL, WARDEN_SOCKET=socket_path)
    return subprocess.run([NPD_PLUGIN], capture_output=True, text=True, env=env, timeout=60)


def test_node_problem_detector_plugin_follows_its_exit_code_contract(checked, gpu_node, tmp_path):
    clean = npd(checked.socket)
    assert (clean.returncode, clean.stdout) == (0, "warden: node clean\n")
    stray = hold(gpu_node)
    try:
        dirty = npd(checked.socket)
        assert dirty.returncode == 1
        assert dirty.stdout.startswith("warden: 1 findings: stray_gpu_holder: pid %d" % stray.pid)
        assert dirty.stdout.count("\n") == 1 and len(dirty.stdout) <= 160, dirty.stdout
    finally:
        end(stray)
    unknown = npd(str(tmp_path / "none.sock"))
    assert unknown.returncode == 2
    assert unknown.stdout.startswith("warden: cannot check: ")
