# The model services orchestrator (MSO): one daemon per simulation orchestrator,
# configured only by environment variables (see .env.template). The container
# just starts the daemon, like the upstream image; in Kubernetes it uses the
# pod's service account (k8s_cluster_configuration/).
#
#   docker build -t model-services-orchestrator:0.1.0 .     (or ci/build_image.sh)
#
# Two stages from one base: `builder` installs the pinned requirements and the
# package into the virtualenv /opt/venv; the final stage copies that virtualenv
# alone. The virtualenv is made without pip and filled by the base's pip from
# outside (pip --python), so it never holds pip, setuptools or wheel; the final
# stage also removes them, and ensurepip, from the base's own Python.
#
# The base is pinned by digest: the OCI image index (all platforms) of
# python:3.11.16-slim-bookworm as its publisher recorded it on 2026-09-01. The
# tag stays beside it for people; the digest is what is pulled, so a rebuild of
# the tag upstream changes nothing here. The machines this project is developed
# and tested on reach no image registry: ci/build_image.sh pulls this digest
# first wherever a builder and the registry are there. To move to a newer base,
# resolve the tag's index digest again:
#   docker buildx imagetools inspect python:3.11-slim-bookworm
# and change it here and in org.opencontainers.image.base.digest below.
FROM docker.io/library/python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f AS base

# ------------------------------------------------------------------ builder
FROM base AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv --without-pip /opt/venv

WORKDIR /src

# The pinned dependencies first, in their own layer: it is rebuilt only when
# requirements.txt changes, not on every change of the source.
COPY requirements.txt ./
RUN pip --python /opt/venv/bin/python install -r requirements.txt

# Then the package itself, without resolving anything again. Its build
# backend (setuptools) lives in pip's isolated build environment, not in /opt/venv.
COPY pyproject.toml README.md LICENSE ./
COPY model_services_orchestrator ./model_services_orchestrator
RUN pip --python /opt/venv/bin/python install --no-deps . \
    && pip --python /opt/venv/bin/python check

# ------------------------------------------------------------------ runtime
FROM base AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=https://github.com/dots-energy/model-services-orchestrator

LABEL org.opencontainers.image.title="model-services-orchestrator" \
      org.opencontainers.image.description="Runs the models of DOTS co-simulations as Kubernetes pods and reports their lifecycle over MQTT." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.16-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f"

ENV PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

# No installer or build tool at run time: the base's pip, setuptools and wheel
# go, and so does ensurepip, which could bring pip back. A fixed numeric
# UID/GID, so that Kubernetes can check runAsNonRoot and the manifests can name
# it (runAsUser: 10001).
RUN python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel \
    && rm -rf /usr/local/lib/python3.11/ensurepip /usr/local/bin/pip* \
    && groupadd --gid 10001 mso \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mso

COPY --from=builder /opt/venv /opt/venv
COPY LICENSE /usr/share/doc/model-services-orchestrator/LICENSE

USER 10001:10001

# HTTP_PORT: liveness (/healthz), readiness (/readyz) and metrics.
EXPOSE 8080

# For docker and compose (Kubernetes uses the Deployment's probes instead): the
# event loop answers /healthz. The standard library only, as slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8080'), timeout=4)"]

# SIGTERM (docker stop, pod deletion) makes the daemon flush and exit cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["model-services-orchestrator"]
