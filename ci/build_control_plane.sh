#!/usr/bin/env bash
# Builds the real control plane the tests run against (etcd, kube-apiserver,
# kube-controller-manager) from the Go module proxy, into a cache directory
# outside the repository keyed by the pinned versions. Does nothing when the
# binaries are already there. Prints the directory holding them.
set -euo pipefail
cd "$(dirname "$0")/../simulation_components/control_plane"

k8s_version=$(go list -m -f "{{.Version}}" k8s.io/kubernetes)
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
cache_root=${MSO_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mso-control-plane}
bin_dir="$cache_root/kubernetes-$k8s_version-etcd-$etcd_version"
binaries=(etcd kube-apiserver kube-controller-manager)

complete=true
for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || complete=false; done
if $complete; then
    echo "$bin_dir"
    exit 0
fi

mkdir -p "$bin_dir.partial"
started=$(date +%s)
# Static, stripped, without VCS stamping: what the release build does, minus cross-compiling.
export CGO_ENABLED=0
flags=(-trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$k8s_version") -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version")
go build "${flags[@]}" -o "$bin_dir.partial/etcd" go.etcd.io/etcd/server/v3 >&2
go build "${flags[@]}" -o "$bin_dir.partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
go build "${flags[@]}" -o "$bin_dir.partial/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager >&2
rm -rf "$bin_dir"
mv "$bin_dir.partial" "$bin_dir"
echo "built the control plane in $(( $(date +%s) - started )) s" >&2
echo "$bin_dir"
