#!/usr/bin/env bash
# Start → ready of the cluster launchers, through the CLI as a user runs it: the wall time of
# `agent-server launch slurm|podman -d --json` (submission or `podman run` through to the first
# 200 on /health; the command returns only then), 5 starts one after another (median printed),
# then 8 at once (time until the last is ready). Each is released right after.
#   images/measure-cluster.sh [BINARY] [IMAGE]     (default target/release/agent-server, agent-server:latest)
# Needs images/slurm-setup.sh (Slurm, Podman) and, for Podman, the image (images/ci-setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-$PWD/target/release/agent-server}"
IMAGE="${2:-agent-server:latest}"
STATE="$(mktemp -d)"
trap 'rm -rf "$STATE"' EXIT
ms() { echo $(( $(date +%s%N) / 1000000 )); }
field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

launch() { # launcher name → prints the JSON line
  case "$1" in
    slurm) "$BIN" launch slurm -d --json --state-dir "$STATE" --job-name "measure-$2" --mem 200M --time 10 ;;
    podman) "$BIN" launch podman -d --json -q --name "measure-$2" "$IMAGE" ;;
  esac
}
release() { # launcher json
  case "$1" in
    slurm) scancel "$(field job_id <<<"$2")" ;;
    podman) podman rm -f -t 0 "$(field container_name <<<"$2")" >/dev/null ;;
  esac
}

for l in slurm podman; do
  # Warm-up (Podman may copy the image from Docker on first use).
  out=$(launch "$l" warm); release "$l" "$out"
  times=()
  for i in 1 2 3 4 5; do
    t0=$(ms); out=$(launch "$l" "seq$i"); t1=$(ms)
    release "$l" "$out"
    times+=($(( t1 - t0 )))
  done
  sorted=($(printf '%s\n' "${times[@]}" | sort -n))
  echo "$l: start -> ready, one at a time (ms): ${times[*]}; median ${sorted[2]}"
  t0=$(ms)
  for i in 1 2 3 4 5 6 7 8; do launch "$l" "par$i" >"$STATE/$l-$i.json" & done
  wait
  t1=$(ms)
  for i in 1 2 3 4 5 6 7 8; do release "$l" "$(cat "$STATE/$l-$i.json")"; done
  echo "$l: 8 at once, all ready after $(( t1 - t0 )) ms"
done
sleep 2
echo "left: $(squeue -h -n measure-seq1,measure-par1 | wc -l) jobs, $(podman ps -a --filter name=measure- --format '{{.Names}}' | wc -l) containers"
