#!/usr/bin/env bash
# Builds the real control plane the tests, the demo and the benchmarks run
# against (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) from the Go module
# proxy, into a cache directory outside the repository keyed by the pinned
# versions, and prints that directory. Once the binaries are there it needs
# no Go and does nothing else.
#
# --check: build nothing; exit 0 when the binaries are cached or this Go can
# build them, else print one line saying what to install and exit 1.
set -euo pipefail
cd "$(dirname "$0")/../simulation_components/control_plane"

# The pinned versions, read from go.mod itself: no Go is needed to find the cache.
required() { awk -v module="$1" '$1 == module && $2 ~ /^v/ { print $2; exit }' go.mod; }
k8s_version=$(required k8s.io/kubernetes)
etcd_version=$(required go.etcd.io/etcd/server/v3)
go_wanted=$(awk '$1 == "go" { print $2; exit }' go.mod)
cache_root=${MSO_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mso-control-plane}
bin_dir="$cache_root/kubernetes-$k8s_version-etcd-$etcd_version"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler)

# A cache built before a binary joined the list lacks it: only the missing ones are built.
missing=()
for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || missing+=("$b"); done
complete=true
(( ${#missing[@]} == 0 )) || complete=false

at_least() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]; }

# Why this machine's Go cannot build the control plane; nothing when it can.
go_problem() {
    local install="install Go $go_wanted or later from https://go.dev/dl/ (or any Go from 1.21 on, e.g. Debian's golang-go from bookworm-backports: it fetches go$go_wanted itself, GOTOOLCHAIN=auto)"
    if ! command -v go >/dev/null 2>&1; then
        echo "the control plane (Kubernetes $k8s_version) is built once with Go, and 'go' is not on the PATH: $install, then run this again"
        return
    fi
    local have
    have=$(cd / && GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || true)
    have=${have#go}
    if [[ -z "$have" ]]; then
        echo "'go env GOVERSION' answers nothing (a Go older than 1.16?): $install"
    elif at_least "$have" "$go_wanted"; then
        return
    elif ! at_least "$have" 1.21; then
        echo "Go $have is too old to build the control plane (go.mod asks for $go_wanted): $install"
    elif [[ "$(cd / && go env GOTOOLCHAIN)" == local* ]]; then
        echo "Go $have is older than the $go_wanted go.mod asks for, and GOTOOLCHAIN=$(cd / && go env GOTOOLCHAIN) forbids fetching it: run with GOTOOLCHAIN=auto, or $install"
    fi
}

if [[ "${1:-}" == "--check" ]]; then
    if $complete; then exit 0; fi
    problem=$(go_problem)
    if [[ -n "$problem" ]]; then
        echo "$problem" >&2
        exit 1
    fi
    exit 0
fi

if $complete; then
    echo "$bin_dir"
    exit 0
fi
problem=$(go_problem)
if [[ -n "$problem" ]]; then
    echo "$problem" >&2
    exit 1
fi

echo "Building the Kubernetes control plane (${missing[*]}; etcd $etcd_version, Kubernetes $k8s_version) with Go, once: about 8 minutes on two cores for all four and 4 GB of disk; later runs use $bin_dir" >&2
rm -rf "$bin_dir.partial"
mkdir -p "$bin_dir.partial"
started=$(date +%s)
# Static, stripped, without VCS stamping: what the release build does, minus cross-compiling.
export CGO_ENABLED=0
flags=(-trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$k8s_version") -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version")
package_of() {
    case "$1" in
        etcd) echo go.etcd.io/etcd/server/v3 ;;
        *) echo "k8s.io/kubernetes/cmd/$1" ;;
    esac
}
for b in "${missing[@]}"; do
    go build "${flags[@]}" -o "$bin_dir.partial/$b" "$(package_of "$b")" >&2
done
if [[ -d "$bin_dir" ]]; then
    # Binaries already there stay in place (running control planes use them); each new one arrives whole.
    for b in "${missing[@]}"; do mv -f "$bin_dir.partial/$b" "$bin_dir/$b"; done
    rmdir "$bin_dir.partial"
else
    mv "$bin_dir.partial" "$bin_dir"
fi
echo "Built the control plane in $(( $(date +%s) - started )) s" >&2
echo "$bin_dir"
