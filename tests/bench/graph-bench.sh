#!/usr/bin/env bash
# Times `kiln graph` on generated multi-stage Dockerfiles of 10,000, 20,000 and 40,000
# instructions and prints the time per instruction, to show it is linear. Not a test: it
# prints figures and asserts nothing.
#
#   tests/bench/graph-bench.sh [path/to/kiln]
set -euo pipefail

KILN=${1:-build/kiln}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# gen N: a Dockerfile of about N instructions in stages of 100, each copying from the one
# before, with ARG/ENV expansion, heredocs, mounts and continuation lines.
gen() {
        local n=$1 stages=$(($1 / 100)) s i
        {
                echo "# syntax=docker/dockerfile:1"
                echo "ARG BASE=debian:12"
                for ((s = 0; s < stages; s++)); do
                        echo "FROM \${BASE} AS s$s"
                        echo "ARG V=$s"
                        echo "ENV STAGE=s$s PATH=/opt/s$s/bin:\$PATH"
                        [ "$s" -gt 0 ] && echo "COPY --from=s$((s - 1)) /out /in/s$((s - 1))"
                        for ((i = 0; i < 24; i++)); do
                                echo "RUN --mount=type=cache,target=/cache/\${V} echo \"\$STAGE $i\" \\"
                                echo "    && true"
                                echo "WORKDIR /work/\${V}/$i"
                                echo "COPY --chown=1000:1000 src/$i.c /src/"
                                echo "LABEL step.$i=\"\${V}\""
                        done
                        echo "COPY <<EOF /etc/stage"
                        echo "stage \$STAGE"
                        echo "EOF"
                done
        } >"$WORK/Dockerfile.$n"
}

# time_ms FILE: the best of 5 runs of kiln graph, in milliseconds
time_ms() {
        local best=999999 t0 t1 ms r
        for r in 1 2 3 4 5; do
                t0=$(date +%s%N)
                "$KILN" graph -f "$1" "$WORK" >/dev/null
                t1=$(date +%s%N)
                ms=$(((t1 - t0) / 1000))
                [ "$ms" -lt "$best" ] && best=$ms
        done
        echo "$best"
}

printf '%-14s %-10s %-12s %-16s\n' instructions bytes "time (ms)" "us/instruction"
for n in 10000 20000 40000; do
        gen "$n"
        count=$("$KILN" parse "$WORK/Dockerfile.$n" | sed -n 's/.*: \([0-9]*\) instructions.*/\1/p')
        us=$(time_ms "$WORK/Dockerfile.$n")
        printf '%-14s %-10s %-12s %-16s\n' "$count" "$(stat -c %s "$WORK/Dockerfile.$n")" \
                "$(awk "BEGIN{printf \"%.1f\", $us/1000}")" "$(awk "BEGIN{printf \"%.2f\", $us/$count}")"
done
