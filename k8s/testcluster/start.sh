#!/usr/bin/env bash
# Starts a real Kubernetes cluster on this machine for kubefn's tests and for people: etcd,
# kube-apiserver (RBAC), kube-controller-manager and kube-scheduler; one real node (containerd,
# runc, the bridge CNI plugin, the kubelet, kube-proxy and kube-router's network policy controller
# in a network namespace of its own, see
# node.sh) whose images images.sh builds; and kwok, which plays further nodes and the pod
# lifecycle without containers (and serves port-forward and logs through its PortForward and
# Logs resources, and kubelet resource metrics from the pod annotations
# `kwok.x-k8s.io/usage-cpu` / `usage-memory`). metrics-server serves metrics.k8s.io from both
# through the aggregation layer. Prints the admin kubeconfig's path when /readyz answers and the
# nodes are Ready.
#
# kwok's nodes carry the taint kwok.x-k8s.io/node=fake:NoSchedule: only pods that tolerate it
# (tests that ask for them) land there; everything else runs on the real node.
#
#   start.sh [DIR]    DIR holds certificates, data, logs and the kubeconfig (default: a new
#                     temporary directory). Stop with stop.sh DIR.
# Environment:
#   KUBEFN_CLUSTER_NODES      how many kwok nodes (default 2)
#   KUBEFN_CLUSTER_NODE_SIZE  each kwok node's cpu, memory and pods (default "4 16Gi 110"; make
#                             bench's 1,000 instances use larger nodes)
#   KUBEFN_CLUSTER_OWNER_PID  stop the cluster when this process ends (the test harness's pid)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$("$here/build.sh")"
images="$("$here/images.sh")"
kube_router="$("$here/build-kube-router.sh")"
# shellcheck source=node.sh
source "$here/node.sh"
dir="${1:-$(mktemp -d "${TMPDIR:-/tmp}/kubefn-cluster.XXXXXX")}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
if [[ -s "$dir/pids" ]]; then
  echo "start.sh: $dir already holds a cluster; stop it first with $here/stop.sh $dir" >&2
  exit 1
fi
started=$(date +%s.%N)
nodes="${KUBEFN_CLUSTER_NODES:-2}"
read -r node_cpu node_memory node_pods <<< "${KUBEFN_CLUSTER_NODE_SIZE:-4 16Gi 110}"
pki="$dir/pki"; mkdir -p "$pki" "$dir/logs"
: > "$dir/pids"

fail() {
  echo "start.sh: $*" >&2
  for log in "$dir"/logs/*.log "$dir"/node/logs/*.log; do
    [[ -f "$log" ]] && { echo "--- last lines of $log" >&2; tail -n 15 "$log" >&2; }
  done
  "$here/stop.sh" "$dir" --keep >&2 || true
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

launch() { # name, command...: starts a component in the background, its output in logs/NAME.log
  local name="$1"; shift
  "$@" > "$dir/logs/$name.log" 2>&1 &
  echo "$! $name" >> "$dir/pids"
}

# --- the real node's network namespace and veth pair: the apiserver listens on the host side.
node_network

# --- certificates: one CA; a serving certificate for the apiserver's address; an admin client certificate;
# the service-account signing key pair.
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=kubefn-test-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
cat > "$pki/serving.cnf" <<CNF
[req]
distinguished_name = dn
[dn]
[ext]
subjectAltName = IP:127.0.0.1,IP:$host_ip,IP:$api_service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage = serverAuth,clientAuth
CNF
openssl_quiet req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$pki/serving.key" -out "$pki/serving.csr"
openssl_quiet x509 -req -in "$pki/serving.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 365 -extfile "$pki/serving.cnf" -extensions ext -out "$pki/serving.crt"
openssl_quiet req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kubefn-test-admin" -keyout "$pki/admin.key" -out "$pki/admin.csr"
printf 'extendedKeyUsage = clientAuth\n' > "$pki/client.cnf"
openssl_quiet x509 -req -in "$pki/admin.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 365 -extfile "$pki/client.cnf" -out "$pki/admin.crt"
# The aggregation layer's front proxy has a CA of its own (the apiserver refuses one shared
# with client certificates).
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=kubefn-test-front-proxy-ca" \
  -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt"
openssl_quiet req -newkey rsa:2048 -nodes -subj "/CN=front-proxy-client" -keyout "$pki/front-proxy-client.key" -out "$pki/front-proxy-client.csr"
openssl_quiet x509 -req -in "$pki/front-proxy-client.csr" -CA "$pki/front-proxy-ca.crt" -CAkey "$pki/front-proxy-ca.key" \
  -CAcreateserial -days 365 -extfile "$pki/client.cnf" -out "$pki/front-proxy-client.crt"
openssl_quiet genrsa -out "$pki/sa.key" 2048
openssl_quiet rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

etcd_port=$(free_port); etcd_peer_port=$(free_port); api_port=$(free_port)
cm_port=$(free_port); sched_port=$(free_port); kwok_port=$(free_port); metrics_port=$(free_port)
server="https://$host_ip:$api_port"

cat > "$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kubefn-test
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: kubefn-test
  context: {cluster: kubefn-test, user: admin}
current-context: kubefn-test
KC
kc="$dir/kubeconfig"

# --- the watchdog: a test harness that dies without stopping the cluster still gets it stopped.
if [[ -n "${KUBEFN_CLUSTER_OWNER_PID:-}" ]]; then
  owner="$KUBEFN_CLUSTER_OWNER_PID"
  nohup bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; '$here/stop.sh' '$dir'" \
    > "$dir/logs/watchdog.log" 2>&1 &
  echo "$! watchdog" >> "$dir/pids"
fi

# --- etcd (no fsync: the data is thrown away with the directory)
launch etcd "$bin/etcd" --name kubefn-test --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "kubefn-test=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync --log-level warn --listen-metrics-urls ""

# --- kube-apiserver
launch kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address "$host_ip" --advertise-address "$host_ip" --secure-port "$api_port" \
  --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --authorization-mode Node,RBAC \
  --service-cluster-ip-range "$service_cidr" --service-node-port-range 30000-32767 \
  --allow-privileged=true \
  --kubelet-preferred-address-types InternalIP \
  --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
  --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
  --profiling=false

# --- wait for etcd and the apiserver
ready=""
for _ in $(seq 1 600); do
  if curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$server/readyz" >/dev/null 2>&1; then
    ready=yes; break
  fi
  for p in $(awk '{print $1}' "$dir/pids"); do kill -0 "$p" 2>/dev/null || fail "a component exited while starting (pid $p)"; done
  sleep 0.1
done
[[ -n "$ready" ]] || fail "kube-apiserver was not ready after 60 s"

# --- kube-controller-manager (deployments, replica sets, HPA, service accounts and their tokens)
launch kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
  --bind-address 127.0.0.1 --secure-port "$cm_port" --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
  --horizontal-pod-autoscaler-sync-period 5s \
  --horizontal-pod-autoscaler-cpu-initialization-period 10s \
  --horizontal-pod-autoscaler-initial-readiness-delay 5s \
  --horizontal-pod-autoscaler-downscale-stabilization 15s \
  --profiling=false

# --- kube-scheduler
launch kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
  --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --profiling=false

# --- kwok: its stages (node heartbeat with leases, pods to Running and Ready) come from the
# pinned kwok module; its PortForward and Logs resources are CRDs the tests create.
kwok_src="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
[[ -d "$kwok_src/kustomize" ]] || fail "cannot find kwok's stages in the Go module cache (go list -m sigs.k8s.io/kwok)"
{
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$kwok_src/kustomize/stage/$f"; echo "---"
  done
  # The kubelet's /metrics/resource, with usage taken from pod annotations (default 1m / 1Mi).
  cat "$kwok_src/kustomize/metrics/resource/metrics-resource.yaml"; echo "---"
  cat "$kwok_src/kustomize/metrics/usage/usage-from-annotation.yaml"
} > "$dir/kwok.yaml"
crds=(portforwards clusterportforwards logs clusterlogs)
for crd in "${crds[@]}"; do
  "$bin/kubectl" --kubeconfig "$kc" apply --server-side -f "$kwok_src/kustomize/crd/bases/kwok.x-k8s.io_$crd.yaml" > /dev/null \
    || fail "cannot install kwok's $crd CRD"
done
"$bin/kubectl" --kubeconfig "$kc" wait --for condition=established --timeout 30s \
  $(printf 'crd/%s.kwok.x-k8s.io ' "${crds[@]}") > /dev/null || fail "kwok's CRDs were not established"

launch kwok "$bin/kwok" --kubeconfig "$kc" --config "$dir/kwok.yaml" \
  --manage-all-nodes=false --manage-nodes-with-label-selector type=kwok \
  --node-ip 127.0.0.1 --node-name localhost --node-port "$kwok_port" \
  --server-address "127.0.0.1:$kwok_port" \
  --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
  --cidr 10.244.0.0/16 --node-lease-duration-seconds 40 \
  --enable-crds PortForward,ClusterPortForward,Logs,ClusterLogs

# --- nodes, with a realistic capacity
for i in $(seq 0 $((nodes - 1))); do
  cat <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
    # Where metrics-server scrapes this node's resource metrics (kwok serves them per node).
    metrics.k8s.io/resource-metrics-path: /metrics/nodes/kwok-node-$i/metrics/resource
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/agent: ""
spec:
  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]
status:
  allocatable: {cpu: "$node_cpu", memory: $node_memory, pods: "$node_pods"}
  capacity: {cpu: "$node_cpu", memory: $node_memory, pods: "$node_pods"}
---
NODE
done > "$dir/nodes.yaml"
"$bin/kubectl" --kubeconfig "$kc" apply -f "$dir/nodes.yaml" > /dev/null || fail "cannot create the kwok nodes"
"$bin/kubectl" --kubeconfig "$kc" wait --for condition=Ready --timeout 60s node -l type=kwok > /dev/null \
  || fail "the kwok nodes did not become Ready"
# --- the real node
node_started=$(date +%s.%N)
node_start "$images"
node_seconds="$(python3 -c "import time; print(round(time.time() - $node_started, 1))")"
# --- metrics-server, reached by the aggregation layer through an ExternalName Service on loopback
launch metrics-server "$bin/metrics-server" \
  --bind-address 127.0.0.1 --secure-port "$metrics_port" \
  --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
  --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
  --kubelet-insecure-tls --kubelet-use-node-status-port --kubelet-preferred-address-types InternalIP \
  --metric-resolution 10s --kubelet-request-timeout 5s
"$bin/kubectl" --kubeconfig "$kc" apply -f - > /dev/null <<APISERVICE || fail "cannot register metrics.k8s.io"
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec: {type: ExternalName, externalName: localhost}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {name: metrics-server, namespace: kube-system, port: $metrics_port}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
APISERVICE

# Pods need the default service account of their namespace, which the controller makes.
for _ in $(seq 1 300); do
  "$bin/kubectl" --kubeconfig "$kc" get serviceaccount default -n default > /dev/null 2>&1 && break
  sleep 0.1
done

cat > "$dir/env" <<ENV
KUBECONFIG=$kc
KUBEFN_CLUSTER_DIR=$dir
KUBEFN_CLUSTER_BIN=$bin
ENV
# The real node's own cost: the resident memory of its daemons (before any pod runs), in MiB.
node_mib="$(awk '$2 ~ /^(containerd|kubelet|kube-proxy|kube-router)$/ {print $1}' "$dir/pids" \
  | xargs -I{} awk '/^VmRSS:/ {print $2}' /proc/{}/status 2>/dev/null | awk '{kib += $1} END {printf "%d", kib / 1024}')"
echo "cluster ready in $(python3 -c "import time; print(round(time.time() - $started, 1))") s" \
  "(the real node in $node_seconds s, its kubelet, containerd, kube-proxy and kube-router $node_mib MiB resident);" \
  "kubeconfig: $kc" >&2
echo "$kc"
