#!/usr/bin/env bash
# A real (kind) cluster for the end-to-end test and for trying the deployment:
# creates the cluster (a control plane and a worker labelled type=worker),
# builds and loads the orchestrator and fake-model images, applies the
# manifests with a generated broker password, and prints what the end-to-end
# test needs. Needs docker, kind and kubectl on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${CLUSTER:-dots}"
MQTT_PASSWORD="${MQTT_PASSWORD:-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}"

for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || { echo "setup_kind_cluster: $tool is not installed" >&2; exit 1; }
done

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" \
    --config k8s_cluster_configuration/kind-cluster-config.yaml
kubectl config use-context "kind-$CLUSTER"

docker build -t model-services-orchestrator:local .
docker build -f simulation_components/fake_model/Dockerfile -t fake_model:0.0.1 .
kind load docker-image --name "$CLUSTER" model-services-orchestrator:local fake_model:0.0.1

kubectl apply -f k8s_cluster_configuration/namespace.yaml
# The broker's password file and the orchestrator's secret, made here rather than committed.
passwd_file="$(mktemp)"
docker run --rm --entrypoint sh eclipse-mosquitto:2.0.20 -c \
    "mosquitto_passwd -b -c /tmp/p dots '$MQTT_PASSWORD' >/dev/null && cat /tmp/p" > "$passwd_file"
kubectl -n dots create secret generic mosquitto-passwd --from-file=passwd="$passwd_file" \
    --dry-run=client -o yaml | kubectl apply -f -
kubectl -n dots create secret generic model-services-orchestrator-secrets \
    --from-literal=MQTT_PASSWORD="$MQTT_PASSWORD" --dry-run=client -o yaml | kubectl apply -f -
rm -f "$passwd_file"
kubectl apply -k k8s_cluster_configuration/
kubectl -n dots set image deployment/model-services-orchestrator \
    model-services-orchestrator=model-services-orchestrator:local
kubectl -n dots rollout status deployment/mosquitto --timeout=180s

cat <<INFO
Cluster "$CLUSTER" is ready. To run the end-to-end test against it:
  kubectl -n dots port-forward service/mosquitto 18830:1883 &
  MSO_E2E=1 MSO_E2E_MQTT_PORT=18830 MSO_E2E_MQTT_PASSWORD='$MQTT_PASSWORD' \\
      .venv/bin/python -m pytest test/e2e -v
INFO
