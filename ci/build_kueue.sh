#!/usr/bin/env bash
# Builds Kueue's manager (sigs.k8s.io/kueue/cmd/kueue), which the tests of the
# daemon's Kueue mode (KUEUE_QUEUE_NAME) run against, from the Go module proxy
# into a cache directory outside the repository keyed by the pinned version,
# and prints that directory. Kueue's CRDs and webhook manifests are not copied
# into the repository: they ship in the module's source, which this script
# downloads into the Go module cache and links beside the binary as `source`.
#
# --check: build nothing; exit 0 when Kueue is cached or `go` is on the PATH,
# else print one line saying what to install and exit 1.
set -euo pipefail
cd "$(dirname "$0")/../simulation_components/kueue"

# The pinned version, read from go.mod itself: no Go is needed to find the cache.
kueue_version=$(awk '$1 == "require" { $0 = substr($0, 8) } $1 == "sigs.k8s.io/kueue" && $2 ~ /^v/ { print $2; exit }' go.mod)
cache_root=${MSO_KUEUE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mso-kueue}
out_dir="$cache_root/kueue-$kueue_version"

complete=false
if [[ -x "$out_dir/kueue" && -d "$out_dir/source/config/components/crd/bases" ]]; then complete=true; fi

if [[ "${1:-}" == "--check" ]]; then
    if $complete || command -v go >/dev/null 2>&1; then exit 0; fi
    echo "Kueue $kueue_version is built once with Go, and 'go' is not on the PATH: install Go (ci/build_control_plane.sh --check says which), then run this again" >&2
    exit 1
fi
if $complete; then
    echo "$out_dir"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    "$0" --check
fi

# One build at a time on this machine (parallel test sessions): the others wait, then find it built.
exec 9>"${TMPDIR:-/tmp}/mso-kueue-build.lock"
flock 9
if [[ -x "$out_dir/kueue" && -d "$out_dir/source/config/components/crd/bases" ]]; then
    echo "$out_dir"
    exit 0
fi
echo "Building Kueue $kueue_version with Go, once: about 5 minutes on two cores and 1 GB of disk; later runs use $out_dir" >&2
rm -rf "$out_dir.partial"
mkdir -p "$out_dir.partial"
started=$(date +%s)
export CGO_ENABLED=0
go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$kueue_version" \
    -o "$out_dir.partial/kueue" sigs.k8s.io/kueue/cmd/kueue >&2
# The module's own source (read-only in the module cache): its CRDs and webhook manifests.
ln -s "$(go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)" "$out_dir.partial/source"
rm -rf "$out_dir"
mv "$out_dir.partial" "$out_dir"
echo "Built Kueue in $(( $(date +%s) - started )) s" >&2
echo "$out_dir"
