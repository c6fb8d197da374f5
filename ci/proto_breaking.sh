#!/usr/bin/env bash
# `buf breaking` at the WIRE level: the .proto files of message_definitions/ against those of the last tagged
# release (ci/proto_baseline.env names it: its tag when this clone has it, else its commit).
#
# Why: the SO and the models are separate programs built from these files; a field renumbered, retyped or
# removed would make them misread us silently (PROTOCOL.md section 7: fields are only added). The baseline's
# files are taken from git history (git archive), so no network and no tag are needed, only the history.
#
# Usage: ci/proto_breaking.sh   (from any directory; PROTO_DIR checks another copy of the files, BUF names the
# buf binary, by default the one of .venv, from the buf-bin package of requirements-dev.txt)
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
proto_dir="${PROTO_DIR:-${repo_root}/message_definitions}"
config="${repo_root}/message_definitions/buf.yaml"
if [[ -n "${BUF:-}" ]]; then
    buf="${BUF}"
elif [[ -x "${repo_root}/.venv/bin/buf" ]]; then
    buf="${repo_root}/.venv/bin/buf"
else
    buf="buf"
fi
# shellcheck source=ci/proto_baseline.env
source "${repo_root}/ci/proto_baseline.env"

has_commit() { git -C "${repo_root}" cat-file -e "${BASELINE_COMMIT}^{commit}" 2>/dev/null; }
if ! has_commit && [[ "$(git -C "${repo_root}" rev-parse --is-shallow-repository)" == "true" ]]; then
    # A shallow clone (CI's may be one): fetch just the baseline commit from where the clone came from.
    git -C "${repo_root}" fetch --quiet --depth=1 origin "${BASELINE_COMMIT}" || true
fi
if [[ -n "${BASELINE_TAG}" ]] && git -C "${repo_root}" rev-parse -q --verify "refs/tags/${BASELINE_TAG}^{commit}" >/dev/null; then
    baseline="${BASELINE_TAG}"
elif has_commit; then
    baseline="${BASELINE_COMMIT}"
else
    echo "proto_breaking: neither the tag ${BASELINE_TAG:-(none)} nor the commit ${BASELINE_COMMIT} is in this clone," \
         "nor could it be fetched (git fetch --unshallow, then again)" >&2
    exit 2
fi

against="$(mktemp -d)"
trap 'rm -rf -- "${against}"' EXIT
git -C "${repo_root}" archive "${baseline}" message_definitions | tar -x -C "${against}"
"${buf}" breaking "${proto_dir}" --against "${against}/message_definitions" \
    --config "${config}" --against-config "${config}" --error-format text
echo "proto_breaking: ${proto_dir} is wire-compatible with message_definitions/ of ${baseline}"
