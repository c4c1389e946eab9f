#!/bin/sh
# Slurm epilog: when a Slurm job ends on this node, clean every warden job of it. Jobs get their
# group from SLURM_JOB_ID when they register (wardenctl, the C++ and Python clients do this), so
# this ends whatever the job left behind: workers, files, shm segments, hooks run as the user.
#
# Install (slurm.conf):  Epilog=/usr/share/warden/slurm/epilog.sh
# The epilog runs as root on each node with SLURM_JOB_ID set. It never fails the node: a missing
# or stopped wardend is logged and ignored.
wardenctl=${WARDENCTL:-wardenctl}
if [ -z "${SLURM_JOB_ID:-}" ]; then
  echo "warden epilog: SLURM_JOB_ID is not set; nothing to clean" >&2
  exit 0
fi
if ! out=$("$wardenctl" cleanup --group "$SLURM_JOB_ID" 2>&1); then
  echo "warden epilog: $out" >&2
fi
exit 0
