# Shared by scripts/demo and scripts/bench: a throwaway local registry and base images made
# from Debian packages. Source it; it defines functions only.

CAIRN_TESTDATA=${CAIRN_TESTDATA:-/var/tmp/cairn-testdata}

# The Debian mirror and suite this machine's apt uses (never hard-coded here).
apt_mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    [ -n "$uri" ] || uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$uri" ] || { echo "cannot find a Debian mirror in /etc/apt/sources*" >&2; return 1; }
    echo "$uri"
}

apt_suite() {
    . /etc/os-release
    echo "${VERSION_CODENAME:-bookworm}"
}

# debootstrap --variant=minbase once per machine; prints the path of the rootfs tarball.
debian_rootfs_tar() {
    local suite tar tmp
    suite=$(apt_suite)
    tar="$CAIRN_TESTDATA/debian-$suite-minbase.tar"
    if [ ! -s "$tar" ]; then
        mkdir -p "$CAIRN_TESTDATA"
        tmp=$(mktemp -d "$CAIRN_TESTDATA/debootstrap.XXXXXX")
        echo "making a Debian $suite minbase root with debootstrap (once per machine)..." >&2
        debootstrap --variant=minbase "$suite" "$tmp/root" "$(apt_mirror)" >"$tmp/log" 2>&1 \
            || { tail -20 "$tmp/log" >&2; rm -rf "$tmp"; return 1; }
        rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
        tar --numeric-owner --xattrs --xattrs-include='*' -C "$tmp/root" -cf "$tar.part" .
        mv "$tar.part" "$tar"
        rm -rf "$tmp"
    fi
    echo "$tar"
}

# A busybox root from Debian's busybox-static; prints the tarball path.
busybox_rootfs_tar() {
    local tar="$CAIRN_TESTDATA/busybox.tar" tmp
    if [ ! -s "$tar" ]; then
        mkdir -p "$CAIRN_TESTDATA"
        tmp=$(mktemp -d)
        mkdir -p "$tmp/bin" "$tmp/etc" "$tmp/tmp" "$tmp/root"
        cp /bin/busybox "$tmp/bin/busybox"
        for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$tmp/bin/$a"; done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$tmp/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' > "$tmp/etc/group"
        chmod 1777 "$tmp/tmp"
        tar --numeric-owner -C "$tmp" -cf "$tar.part" . && mv "$tar.part" "$tar"
        rm -rf "$tmp"
    fi
    echo "$tar"
}

# Starts docker-registry on a free 127.0.0.1 port with a throwaway config and storage.
# Sets REGISTRY (host:port) and REGISTRY_PID; the caller kills it.
start_registry() {
    local dir port
    dir=$(mktemp -d /tmp/cairn-registry.XXXXXX)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$dir/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
    /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    REGISTRY_PID=$!
    REGISTRY=127.0.0.1:$port
    for _ in $(seq 1 50); do
        curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "registry did not start: $(cat "$dir/log")" >&2
    return 1
}

# push_rootfs TARBALL REF [CMD]: wraps a root tarball as a one-layer image and pushes it.
push_rootfs() {
    local tarball=$1 ref=$2 cmd=${3:-/bin/sh} tmp
    tmp=$(mktemp -d)
    umoci init --layout "$tmp/oci" >/dev/null
    umoci new --image "$tmp/oci:img" >/dev/null
    umoci unpack --image "$tmp/oci:img" "$tmp/bundle" >/dev/null
    tar --numeric-owner --xattrs --xattrs-include='*' -C "$tmp/bundle/rootfs" -xf "$tarball"
    umoci repack --image "$tmp/oci:img" "$tmp/bundle" >/dev/null
    umoci config --image "$tmp/oci:img" --config.cmd "$cmd" \
        --config.env 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' >/dev/null
    skopeo copy -q --dest-tls-verify=false "oci:$tmp/oci:img" "docker://$ref" >/dev/null
    rm -rf "$tmp"
}
