#!/usr/bin/env bash
# Builds the container image from ./Dockerfile and checks it, where a builder works.
#
# The builder is the first of docker and podman whose engine answers (`info`).
# Where none does, or where the pinned base image cannot be pulled (no route to
# the image registry), it says so in one line and exits 0: CI does not fail for
# what the machine lacks. Once the base is pulled, a failed build or check fails.
#
# The checks: the daemon answers --version, no pip, setuptools, wheel or
# ensurepip is left, the user is the numeric non-root 10001, the version label
# is pyproject's. Then it prints the image's size.
#
#   ci/build_image.sh                 # tags model-services-orchestrator:<version>
#   IMAGE_TAG=registry/mso:1 ci/build_image.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "build_image: $*"; }

BUILDER=""
for candidate in docker podman; do
    if command -v "$candidate" >/dev/null 2>&1 && timeout 20 "$candidate" info >/dev/null 2>&1; then
        BUILDER="$candidate"
        break
    fi
done
if [ -z "$BUILDER" ]; then
    say "no image builder available (no docker or podman engine answers): image not built"
    exit 0
fi

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
TAG="${IMAGE_TAG:-model-services-orchestrator:$VERSION}"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# The first FROM is the pinned base (the later ones name stages).
BASE="$(awk 'toupper($1) == "FROM" { print $2; exit }' Dockerfile)"

if ! timeout 300 "$BUILDER" pull -q "$BASE" >/dev/null 2>&1; then
    say "$BUILDER cannot pull the base image $BASE (no access to the registry?): image not built"
    exit 0
fi

say "building $TAG with $BUILDER"
timeout 1200 "$BUILDER" build -q --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" -t "$TAG" . >/dev/null

run() { "$BUILDER" run --rm --network none --entrypoint "$1" "$TAG" "${@:2}"; }

answer="$(run model-services-orchestrator --version)"
[ "$answer" = "model-services-orchestrator $VERSION" ] || { say "--version answered: $answer"; exit 1; }

# Both interpreters: the virtualenv's does not see the base's site-packages.
for python in /opt/venv/bin/python /usr/local/bin/python; do
    run "$python" -c '
import importlib.util, shutil, sys
left = [name for name in ("pip", "setuptools", "wheel", "ensurepip") if importlib.util.find_spec(name)]
left += [name for name in ("pip", "pip3") if shutil.which(name)]
sys.exit(f"{sys.executable}: left in the image: {left}" if left else 0)'
done

user="$("$BUILDER" image inspect -f '{{.Config.User}}' "$TAG")"
uid="$(run id -u)"
[ "$user" = "10001:10001" ] && [ "$uid" = "10001" ] || { say "user: $user, id -u: $uid"; exit 1; }

label="$("$BUILDER" image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$TAG")"
[ "$label" = "$VERSION" ] || { say "org.opencontainers.image.version: $label"; exit 1; }

size="$("$BUILDER" image inspect -f '{{.Size}}' "$TAG")"
say "$TAG built with $BUILDER and checked (no pip, user 10001, --version); size $((size / 1000000)) MB"
