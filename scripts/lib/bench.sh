# Helpers for scripts/bench: timing one command under /usr/bin/time, resetting each tool to
# a cold state, and the machine-limit measurements. Source it after images.sh; it defines
# functions only. Every measurement appends one JSON object to $RAW (JSON lines), which
# scripts/lib/bench.py turns into the tables, the JSON summary and the plot.

# json_str S: S as a JSON string.
json_str() {
    python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"
}

# measure KIND NAME SCENARIO RUN LOGBASE -- CMD...: runs CMD with stdout/stderr in
# LOGBASE.{out,err}, records wall seconds, peak RSS and exit status. Never fails the script:
# a tool that breaks shows up as ok=false in the results.
measure() {
    local kind=$1 name=$2 scenario=$3 run=$4 log=$5
    shift 6
    local tf=$log.time rc=0 t0 t1
    t0=$(date +%s.%N)
    if [ "${name#*/}" = cairn ] || [ "${name#*/}" = cairn-tar ] || [ "${name#*/}" = cairn-containerd ]; then
        # cairn's events carry no clock: stamp each stderr line on arrival, so the time to
        # the first step (resolve + pull) and around "loading the image" can be told apart.
        /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >"$log.out" \
            2> >(perl -MTime::HiRes=time -pe 'BEGIN { $| = 1 } $_ = sprintf("%.3f ", time) . $_' >"$log.err") \
            || rc=$?
    else
        /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >"$log.out" 2>"$log.err" || rc=$?
    fi
    t1=$(date +%s.%N)
    local rss secs cpu
    rss=$(awk 'END {print $2}' "$tf" 2>/dev/null)
    # user + system CPU of the command and the children it waited for: on a shared machine
    # wall time includes waiting for a core, CPU time does not.
    cpu=$(awk 'END {printf "%.2f", $3 + $4}' "$tf" 2>/dev/null)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
    printf '{"kind":"%s","name":"%s","scenario":"%s","run":%s,"t0":%s,"seconds":%s,"cpu_seconds":%s,"max_rss_kb":%s,"ok":%s,"log":%s}\n' \
        "$kind" "$name" "$scenario" "$run" "$t0" "$secs" "${cpu:-0}" "${rss:-0}" \
        "$([ $rc -eq 0 ] && echo true || echo false)" "$(json_str "$log")" >>"$RAW"
    if [ $rc -ne 0 ]; then
        echo "bench:   $kind $name $scenario run $run FAILED (exit $rc), see $log.err:" >&2
        tail -5 "$log.err" | sed 's/^/bench:     /' >&2
    else
        printf 'bench:   %-8s %-16s %-8s run %s  %7.2fs  %6d MiB\n' "$kind" "$name" "$scenario" \
            "$run" "$secs" "$(( ${rss:-0} / 1024 ))" >&2
    fi
    return 0
}

# measure_hf_as KIND NAME SCENARIO RUN LOGBASE -- CMD...: CMD's hyperfine median (20 runs after
# 3 warm-ups, no shell) as one row; measure_hf below is the no-op form of it.
measure_hf_as() {
    local kind=$1 name=$2 scenario=$3 run=$4 log=$5 rc=0 secs
    shift 6
    hyperfine -N -w 3 -r 20 --export-json "$log.json" -- "$(printf '%q ' "$@")" \
        >"$log.out" 2>"$log.err" || rc=$?
    secs=$(python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' \
        "$log.json" 2>/dev/null) || rc=1
    printf '{"kind":"%s","name":"%s","scenario":"%s","run":%s,"t0":0,"seconds":%s,"cpu_seconds":0,"max_rss_kb":0,"ok":%s,"log":%s}\n' \
        "$kind" "$name" "$scenario" "$run" "${secs:-0}" "$([ $rc -eq 0 ] && echo true || echo false)" \
        "$(json_str "$log")" >>"$RAW"
    if [ $rc -ne 0 ]; then
        echo "bench:   hyperfine $kind $name $scenario run $run FAILED, see $log.err" >&2
    else
        printf 'bench:   %-8s %-16s %-8s run %s  %7.4fs  (hyperfine median of 20)\n' "$kind" "$name" \
            "$scenario" "$run" "$secs" >&2
    fi
    return 0
}

# measure_floor WORKLOAD RUN IMAGE: the no-op floor next to cairn's no-op of WORKLOAD: process
# start (`cairn --version`), one manifest HEAD on the local registry and one image inspect on
# the Engine API socket, what a --load no-op cannot avoid. One curl process makes both
# requests (`--next`); its own start (`curl --version`) is measured too, for the report to
# take out.
measure_floor() {
    local wl=$1 run=$2 image=$3 log=$LOGS/floor-$1-$2
    local accept='application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json'
    measure_hf_as floor "$wl/cairn-version" floor "$run" "$log-version" -- "$CAIRN" --version
    measure_hf_as floor "$wl/curl-version" floor "$run" "$log-curl" -- curl --version
    measure_hf_as floor "$wl/head+inspect" floor "$run" "$log-requests" -- \
        curl -sfI -o /dev/null -H "Accept: $accept" "http://$REGISTRY/v2/debian/manifests/bookworm" \
        --next -sf -o /dev/null --unix-socket /var/run/docker.sock "http://localhost/images/$image/json"
}

# measure_callgrind NAME LOGBASE -- env VAR=... CAIRN ARGS...: the instructions cairn executes
# for the command under valgrind's callgrind (valgrind goes after env's assignments, so it
# runs cairn itself). Instruction counts do not depend on how busy the machine is, so they
# show a regression on the no-op path that wall time on a shared box would hide.
measure_callgrind() {
    local name=$1 log=$2 rc=0 n i=0
    shift 3
    local cmd=("$@")
    while [ "${cmd[$i]}" = env ] || [[ ${cmd[$i]} == *=* ]]; do i=$((i + 1)); done
    "${cmd[@]:0:$i}" valgrind --tool=callgrind --callgrind-out-file="$log.callgrind" \
        "${cmd[@]:$i}" >"$log.out" 2>"$log.err" || rc=$?
    n=$(awk '/^(summary|totals):/ {print $2; exit}' "$log.callgrind" 2>/dev/null)
    [ -n "$n" ] || rc=1
    printf '{"kind":"callgrind","name":"%s","scenario":"noop","run":1,"t0":0,"seconds":0,"cpu_seconds":0,"max_rss_kb":0,"instructions":%s,"ok":%s,"log":%s}\n' \
        "$name" "${n:-0}" "$([ $rc -eq 0 ] && echo true || echo false)" "$(json_str "$log")" >>"$RAW"
    if [ $rc -ne 0 ]; then
        echo "bench:   callgrind $name noop FAILED, see $log.err" >&2
    else
        printf 'bench:   %-8s %-16s %-8s        %14s instructions\n' callgrind "$name" noop "$n" >&2
    fi
    return 0
}

# start_acng DIR: Debian's apt-cacher-ng on a free local port (ACNG_PORT, ACNG_PID), its
# cache in ACNG_CACHE, kept between runs. A minimal config of its own: no Remap rules, so a
# request goes to the host it names (the packaged backends list mirrors this machine may
# not reach), bound to 127.0.0.1 only.
start_acng() {
    local dir=$1 _
    ACNG_CACHE=${ACNG_CACHE:-/var/cache/cairn-bench/apt-cacher-ng}
    mkdir -p "$dir/conf" "$dir/log" "$ACNG_CACHE"
    # A free port below 32768: apt-cacher-ng 3.7 cannot bind higher ones.
    ACNG_PORT=$(python3 -c '
import random, socket
while True:
    p = random.randint(20000, 32000)
    try:
        socket.socket().bind(("127.0.0.1", p))
    except OSError:
        continue
    print(p)
    break')
    printf '%s\n' "CacheDir: $ACNG_CACHE" "LogDir: $dir/log" "SupportDir: /usr/lib/apt-cacher-ng" \
        "Port: $ACNG_PORT" "BindAddress: 127.0.0.1:$ACNG_PORT" "PidFile: $dir/pid" \
        "SocketPath: $dir/sock" "ExThreshold: 4" >"$dir/conf/acng.conf"
    /usr/sbin/apt-cacher-ng -c "$dir/conf" ForeGround=1 >"$dir/out" 2>&1 &
    ACNG_PID=$!
    for _ in $(seq 1 50); do
        curl -s -o /dev/null "http://127.0.0.1:$ACNG_PORT/acng-report.html" && return 0
        sleep 0.1
    done
    echo "bench: apt-cacher-ng did not start: $(tail -3 "$dir/out")" >&2
    return 1
}

# warm_acng: one untimed cairn build of the workspace (its apt-get goes through the cache, as
# every tool's will), so the timed builds find every package cached.
warm_acng() {
    local ctx=$W/warm-ctx before after
    before=$(find "$ACNG_CACHE" -name '*.deb' | wc -l)
    echo "bench: warming the package cache (one untimed build of the workspace)" >&2
    prepare_context workspace "$ctx"
    SIZE_ARGS=()
    env "CAIRN_ROOT=$W/warm-store" "$CAIRN" build "$ctx" --build-arg "BASE=$BASE_REF" \
        --network=host -o "type=oci,dest=$W/warm-oci" --progress=plain >"$LOGS/warm-acng.log" 2>&1 ||
        echo "bench: the warm-up build failed, see $LOGS/warm-acng.log" >&2
    rm -rf "$ctx" "$W/warm-store" "$W/warm-oci"
    after=$(find "$ACNG_CACHE" -name '*.deb' | wc -l)
    ACNG_NOTE="apt-cacher-ng $(dpkg-query -W -f '${Version}' apt-cacher-ng) on 127.0.0.1:$ACNG_PORT; $after packages cached ($before before the warm-up)"
    echo "bench: $ACNG_NOTE" >&2
}

# measure_hf NAME RUN LOGBASE -- CMD...: a no-op takes milliseconds, below what one run under
# /usr/bin/time and the stderr stamper can resolve (their own start-up is of the same order):
# hyperfine runs CMD 20 times after 3 warm-ups, without a shell, and its median goes in as
# scenario "noop-hf", the figure the no-op targets use.
measure_hf() {
    local name=$1 run=$2 log=$3 rc=0 secs
    shift 4
    hyperfine -N -w 3 -r 20 --export-json "$log.json" -- "$(printf '%q ' "$@")" \
        >"$log.out" 2>"$log.err" || rc=$?
    secs=$(python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' \
        "$log.json" 2>/dev/null) || rc=1
    printf '{"kind":"build","name":"%s","scenario":"noop-hf","run":%s,"t0":0,"seconds":%s,"cpu_seconds":0,"max_rss_kb":0,"ok":%s,"log":%s}\n' \
        "$name" "$run" "${secs:-0}" "$([ $rc -eq 0 ] && echo true || echo false)" "$(json_str "$log")" >>"$RAW"
    if [ $rc -ne 0 ]; then
        echo "bench:   hyperfine $name noop run $run FAILED, see $log.err" >&2
    else
        printf 'bench:   %-8s %-16s %-8s run %s  %7.4fs  (hyperfine median of 20)\n' build "$name" noop-hf "$run" "$secs" >&2
    fi
    return 0
}

# The per-tool storage roots live under $W so nothing touches the machine's own stores.
buildah_() { buildah --root "$W/buildah/root" --runroot "$W/buildah/run" "$@"; }
podman_() { podman --root "$W/podman/root" --runroot "$W/podman/run" "$@"; }

# docker_rm_images REF...: removes the images (and the builder's untagged parents) if present.
docker_rm_images() {
    local r
    for r in "$@"; do
        docker image inspect "$r" >/dev/null 2>&1 && docker rmi -f "$r" >/dev/null 2>&1 || true
    done
}

# reset_tool TOOL IMAGE: the cold state: an empty store and no image (nor base) in Docker.
reset_tool() {
    local tool=$1 image=$2
    case $tool in
        cairn|cairn-tar) rm -rf "$W/$tool-store" ;;
        cairn-containerd)
            rm -rf "$W/$tool-store"
            DOCKER_HOST=$ENGINE26 docker image rm -f "$image" >/dev/null 2>&1 || true
            ;;
        buildah)
            if [ -d "$W/buildah" ]; then
                buildah_ rm -a >/dev/null 2>&1 || true
                buildah_ rmi -af >/dev/null 2>&1 || true
                rm -rf "$W/buildah"
            fi
            ;;
        podman)
            if [ -d "$W/podman" ]; then
                podman_ rmi -af >/dev/null 2>&1 || true
                podman_ system reset -f >/dev/null 2>&1 || true
                rm -rf "$W/podman"
            fi
            ;;
        docker|buildkit)
            # Every image this tool built in earlier runs (by ID, from --iidfile) and the
            # base, which the daemon pulls from our registry again on a cold build.
            if [ -f "$W/docker-ids" ]; then
                # shellcheck disable=SC2046
                docker_rm_images $(sort -u "$W/docker-ids")
                rm -f "$W/docker-ids"
            fi
            docker_rm_images "$BASE_REF"
            ;;
    esac
    docker_rm_images "$image"
}

# tool_cmd TOOL CTX IMAGE: sets CMD to the command line of one build of CTX tagged IMAGE
# (/usr/bin/time runs programs, not shell functions, hence an array).
tool_cmd() {
    local tool=$1 ctx=$2 image=$3
    case $tool in
        cairn)
            # shellcheck disable=SC2206
            CMD=(env "CAIRN_ROOT=$W/cairn-store" "$CAIRN" build "$ctx" -t "$image"
                --build-arg "BASE=$BASE_REF" "${SIZE_ARGS[@]}" --progress=json --network=host $CAIRN_FLAGS) ;;
        cairn-tar)
            # cairn with uncompressed layers: what the layer commit and docker load cost
            # without a compressor (and without zstd→gzip for an engine older than 23).
            # shellcheck disable=SC2206
            CMD=(env "CAIRN_ROOT=$W/cairn-tar-store" "$CAIRN" build "$ctx" -t "$image"
                --build-arg "BASE=$BASE_REF" "${SIZE_ARGS[@]}" --progress=json --network=host $CAIRN_FLAGS
                --compression none) ;;
        cairn-containerd)
            # cairn loading into Docker 26 with the containerd image store (scripts/engines),
            # to compare its no-op with the classic store's in the same run.
            # shellcheck disable=SC2206
            CMD=(env "CAIRN_ROOT=$W/cairn-containerd-store" "DOCKER_HOST=$ENGINE26" "$CAIRN" build "$ctx"
                -t "$image" --build-arg "BASE=$BASE_REF" "${SIZE_ARGS[@]}" --progress=json --network=host
                $CAIRN_FLAGS) ;;
        buildah)
            CMD=(buildah --root "$W/buildah/root" --runroot "$W/buildah/run" bud --layers
                --isolation "$BUILDAH_ISOLATION" --tls-verify=false --network host
                --build-arg "BASE=$BASE_REF" "${SIZE_ARGS[@]}" -t "$image" "$ctx") ;;
        buildah-load)
            CMD=(buildah --root "$W/buildah/root" --runroot "$W/buildah/run" push -q
                "$image" "docker-daemon:$image") ;;
        podman)
            CMD=(podman --root "$W/podman/root" --runroot "$W/podman/run" build --layers
                --tls-verify=false --network host --build-arg "BASE=$BASE_REF" "${SIZE_ARGS[@]}" -t "$image" "$ctx") ;;
        docker)
            CMD=(docker build -q --network host --iidfile "$W/docker-iid"
                --build-arg "BASE=$BASE_REF" "${SIZE_ARGS[@]}" -t "$image" "$ctx") ;;
        buildkit)
            CMD=(env DOCKER_BUILDKIT=1 "$BUILDKIT_CLI" build -q --network=host
                --iidfile "$W/docker-iid" --build-arg "BASE=$BASE_REF" "${SIZE_ARGS[@]}"
                -t "$image" "$ctx") ;;
        *) echo "unknown tool $tool" >&2; return 2 ;;
    esac
}

# limits_tree NAME DIR RUN: the machine's limits on the bytes of DIR, and cairn's layer
# writer alone on the same tree.
limits_tree() {
    local name=$1 dir=$2 run=$3 log=$LOGS/limit-$1-$3
    measure limit tar-sha256 "$name" "$run" "$log-tar" -- \
        sh -c 'tar -cf - -C "$1" . | sha256sum' sh "$dir"
    measure limit pigz "$name" "$run" "$log-pigz" -- \
        sh -c 'tar -cf - -C "$1" . | pigz -6 -c | sha256sum' sh "$dir"
    measure limit gzip-1t "$name" "$run" "$log-gzip" -- \
        sh -c 'tar -cf - -C "$1" . | pigz -p 1 -6 -c | sha256sum' sh "$dir"
    measure limit zstd-T0 "$name" "$run" "$log-zstd" -- \
        sh -c 'tar -cf - -C "$1" . | zstd -q -3 -T0 -c | sha256sum' sh "$dir"
    rm -rf "$W/cp-dst"
    measure limit cp "$name" "$run" "$log-cp" -- cp -a "$dir" "$W/cp-dst"
    rm -rf "$W/cp-dst"
    local m
    for m in tar none gzip zstd store-none store-zstd; do
        rm -rf "$W/pipe-store"
        measure pipeline "$m" "$name" "$run" "$log-pipe-$m" -- "$PIPELINE" "$m" "$dir" "$W/pipe-store"
    done
    rm -rf "$W/pipe-store"
}

# limits_base RUN: tar -x of the base layer, plain and gzipped (as the registry serves it).
limits_base() {
    local run=$1
    [ -s "$W/base.tar.gz" ] || pigz -6 -c "$BASE_TAR" >"$W/base.tar.gz"
    rm -rf "$W/untar" && mkdir -p "$W/untar"
    measure limit tar-x base "$run" "$LOGS/limit-base-$run-untar" -- \
        tar --numeric-owner -xf "$BASE_TAR" -C "$W/untar"
    rm -rf "$W/untar" && mkdir -p "$W/untar"
    measure limit tar-xz base "$run" "$LOGS/limit-base-$run-untargz" -- \
        tar --numeric-owner -xzf "$W/base.tar.gz" -C "$W/untar"
    rm -rf "$W/untar"
}
