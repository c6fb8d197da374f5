# syntax=docker/dockerfile:1
#
# The model services orchestrator (MSO): one daemon per simulation orchestrator,
# configured only by environment variables (see .env.template). The container
# just starts the daemon, like the upstream image; in Kubernetes it uses the
# pod's service account (k8s_cluster_configuration/).
#
#   docker build -t model-services-orchestrator .
#
# The base image is pinned by version; pin it by digest too
# (python:3.11.13-slim-bookworm@sha256:...) where builds must be reproducible.
FROM python:3.11.13-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# A fixed numeric UID/GID, so that Kubernetes can check runAsNonRoot and the
# manifests can name it (runAsUser: 10001).
RUN groupadd --gid 10001 mso \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mso

WORKDIR /opt/model-services-orchestrator

# The pinned dependencies first, in their own layer: it is rebuilt only when
# requirements.txt changes, not on every change of the source.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# Then the package itself, without resolving anything again.
COPY pyproject.toml ./
COPY model_services_orchestrator ./model_services_orchestrator
RUN pip install --no-deps . \
    && pip check \
    && rm -rf build ./*.egg-info

USER 10001:10001

# HTTP_PORT: liveness (/healthz), readiness (/readyz) and metrics.
EXPOSE 8080

# SIGTERM (docker stop, pod deletion) makes the daemon flush and exit cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["model-services-orchestrator"]
