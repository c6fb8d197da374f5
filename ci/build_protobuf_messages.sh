#!/usr/bin/env bash
# Regenerates the Python protobuf code of the wire messages.
#
# Why: the generated modules are committed (so the package imports without a
# build step), and this script is the one way to refresh them after a change in
# message_definitions/. test/test_message_definitions.py fails when the
# committed files differ from what this script produces.
#
# Usage: ci/build_protobuf_messages.sh   (from any directory)
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
proto_dir="${repo_root}/message_definitions"
# OUT_DIR and PYTHON may be overridden (the staleness test generates into a
# temporary directory with the interpreter that runs it).
out_dir="${OUT_DIR:-${repo_root}/model_services_orchestrator/messages}"

if [[ -n "${PYTHON:-}" ]]; then
    python="${PYTHON}"
elif [[ -x "${repo_root}/.venv/bin/python" ]]; then
    python="${repo_root}/.venv/bin/python"
else
    python="python3"
fi

mkdir -p "${out_dir}"
cd "${proto_dir}"
# Paths relative to proto_dir keep the descriptors' file names short
# ("lifecycle.proto"), which is what the committed code was generated with.
"${python}" -m grpc_tools.protoc \
    --proto_path=. \
    --python_out="${out_dir}" \
    --pyi_out="${out_dir}" \
    lifecycle.proto healthcheck.proto info.proto

# protoc's .pyi stubs use a bare `Mapping` (no type arguments), which
# `mypy --strict` rejects; that one error code is switched off in the stubs
# only, by mypy's inline configuration comment on their first line.
for stub in "${out_dir}"/lifecycle_pb2.pyi "${out_dir}"/healthcheck_pb2.pyi "${out_dir}"/info_pb2.pyi; do
    {
        echo '# mypy: disable-error-code="type-arg"'
        cat "${stub}"
    } > "${stub}.tmp"
    mv "${stub}.tmp" "${stub}"
done

echo "generated into ${out_dir}:"
ls -1 "${out_dir}"/*_pb2.py "${out_dir}"/*_pb2.pyi
