#!/bin/sh
# node-problem-detector custom plugin: is this node clean for the next pod? Its contract is
# warden's own exit status (0 OK, 1 problem, 2 unknown), and one short line of output (NPD keeps
# the first maxOutputLength bytes as the condition's message).
#
# Runs in the node-problem-detector pod with the host's warden socket mounted (see
# warden-check.json beside this file and the DaemonSet in ../warden-daemonset.yaml).
wardenctl=${WARDENCTL:-wardenctl}
out=$("$wardenctl" check 2>&1)
status=$?
case $status in
  0) echo "warden: node clean" ;;
  1)
    n=$(printf '%s\n' "$out" | grep -c ': .*; do: ')
    first=$(printf '%s\n' "$out" | grep -m1 ': .*; do: ' | sed 's/; do: .*//')
    # Within max_output_length (warden-check.json), its newline included: a path can be long.
    echo "warden: $n findings: $first" | cut -c1-159
    ;;
  *)
    status=2
    echo "warden: cannot check: $(printf '%s' "$out" | head -n1)"
    ;;
esac
exit $status
