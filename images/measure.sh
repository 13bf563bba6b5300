#!/usr/bin/env bash
# Measures an image: bytes our layers add on top of the base, and container start → first 200 on
# /health (5 starts, `docker run -d` included; median printed).
#   images/measure.sh IMAGE BASE_IMAGE
set -euo pipefail
IMAGE="${1:?image}"; BASE="${2:?base image}"
size() { docker image inspect --format '{{.Size}}' "$1"; }
added=$(( $(size "$IMAGE") - $(size "$BASE") ))
printf 'image %s on %s: layers added %d bytes (%.1f MB)\n' "$IMAGE" "$BASE" "$added" "$(echo "$added/1000000" | bc -l)"
times=()
for i in 1 2 3 4 5; do
  port=$(( 38000 + RANDOM % 1000 ))
  t0=$(date +%s%N)
  id=$(docker run -d --rm -p "127.0.0.1:$port:8000" "$IMAGE")
  until curl -fs -o /dev/null "http://127.0.0.1:$port/health"; do sleep 0.005; done
  t1=$(date +%s%N)
  docker rm -f "$id" >/dev/null
  times+=($(( (t1 - t0) / 1000000 )))
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "start -> first 200 on /health (ms): ${times[*]}; median ${sorted[2]}"
