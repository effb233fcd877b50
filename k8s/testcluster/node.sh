# The test cluster's real node: containerd, runc, the bridge CNI plugin, the kubelet,
# kube-proxy (nftables) and kube-router's network policy controller (iptables and ipset; the
# bridge plugin enforces no NetworkPolicy), in a network namespace of the cluster's own joined to the host by a
# veth pair, and in a private mount namespace, so that pod sandboxes, shim sockets and volume
# mounts never touch the host's /run. Sourced by start.sh and stop.sh; the functions use
# start.sh's variables ($dir, $pki, $bin, $here) and its `launch` and `fail`.
#
# Addresses (N is a number from 0 to 199 that no other test cluster on this machine holds; it
# is taken by creating the network namespace kubefn-node-N, which fails if it exists):
#   10.250.N.1/30  the host side: the apiserver listens here, so the kubelet can reach it
#   10.250.N.2/30  the node (its InternalIP; node ports answer here)
#   10.251.N.0/24  the node's pods, on the bridge kfn0 inside the namespace (routed from the host)
#   10.252.N.0/24  the cluster's Services (routed from the host too: kube-proxy on the node
#                  answers for them, so a Service's ClusterIP works from this machine as well;
#                  10.252.N.1 is the apiserver's own `kubernetes` Service)

node_name=real-node

# Takes a network namespace and sets up the veth pair; sets node_index, host_ip, node_ip,
# pod_cidr, service_cidr, api_service_ip and node_netns, and records them in $dir/node/network for stop.sh.
node_network() {
  mkdir -p "$dir/node"
  local n
  for n in $(seq 0 199); do
    if ip netns add "kubefn-node-$n" 2>/dev/null; then
      node_index=$n
      break
    fi
  done
  [[ -n "${node_index:-}" ]] || fail "no free network namespace kubefn-node-0..199 (stale ones: ip netns list)"
  node_netns="kubefn-node-$node_index"
  host_ip="10.250.$node_index.1"; node_ip="10.250.$node_index.2"; pod_cidr="10.251.$node_index.0/24"
  # A /20 of Service addresses (4,094): a /24 ran out at 253 instances, each with a Service.
  local services="10.$((64 + node_index / 16)).$(((node_index % 16) * 16))"
  service_cidr="$services.0/20"; api_service_ip="$services.1"
  echo "$node_netns $node_index" > "$dir/node/network"
  local host_if="kfn-h$node_index" inside="nsenter --net=/run/netns/$node_netns"
  ip link add "$host_if" type veth peer name eth0 netns "$node_netns" || fail "cannot create the node's veth pair"
  ip addr add "$host_ip/30" dev "$host_if"
  ip link set "$host_if" up
  $inside ip link set lo up
  $inside ip addr add "$node_ip/30" dev eth0
  $inside ip link set eth0 up
  $inside ip route add default via "$host_ip"
  # The node routes between its pods and the host.
  $inside sysctl -qw net.ipv4.ip_forward=1
  ip route add "$pod_cidr" via "$node_ip"
  ip route add "$service_cidr" via "$node_ip"
}

# Writes the node's configuration and starts it; returns when the node is Ready.
node_start() {
  local images="$1" node="$dir/node"
  mkdir -p "$node/cni" "$node/logs"
  local cgroup_root="/kubefn-node-$node_index"
  local controller
  for controller in /sys/fs/cgroup/*/; do
    [[ -f "$controller/cgroup.procs" && "$controller" != */unified/ ]] && mkdir -p "$controller$cgroup_root"
  done

  # The kubelet's client certificate: the Node authorizer knows it by this name.
  openssl_quiet req -newkey rsa:2048 -nodes -subj "/O=system:nodes/CN=system:node:$node_name" \
    -keyout "$pki/node.key" -out "$pki/node.csr"
  openssl_quiet x509 -req -in "$pki/node.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -extfile "$pki/client.cnf" -out "$pki/node.crt"
  sed -e "s#$pki/admin.crt#$pki/node.crt#" -e "s#$pki/admin.key#$pki/node.key#" "$dir/kubeconfig" > "$node/kubelet.kubeconfig"

  cat > "$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
[grpc]
  address = "$node/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  # kubefn runs without CAP_SYS_RESOURCE: runc fails to lower a pod's oom_score_adj otherwise.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni"
TOML
  cat > "$node/cni/10-kubefn.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "kubefn-test",
  "plugins": [{
    "type": "bridge", "bridge": "kfn0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": "$node/cni-ipam",
      "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]
    }
  }]
}
CNI
  cat > "$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1, which the kubelet refuses unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
containerRuntimeEndpoint: unix://$node/containerd.sock
address: $node_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
podLogsDir: $node/pod-logs
failSwapOn: false
oomScoreAdj: 0
registerNode: true
rotateCertificates: false
serializeImagePulls: false
# The images are imported, not pulled: never collect them, and never evict for a full disk
# on a shared machine ("0%" is no threshold at all). A 1% threshold was 2.5 GB of a 252 GB
# disk: a CI run's own builds took the machine below it, the node reported DiskPressure and
# evicted kubefn's pod in the middle of kubefn_in_cluster.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%", imagefs.inodesFree: "0%"}
nodeStatusUpdateFrequency: 4s
YAML
  cat > "$node/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $dir/kubeconfig}
hostnameOverride: $node_name
clusterCIDR: $pod_cidr
# This process may not raise nf_conntrack_max or the conntrack timeouts: leave them alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML

  launch node nsenter --net="/run/netns/$node_netns" -- \
    unshare --mount --propagation private -- bash "$here/node.sh" inside "$dir" "$bin" "$images" "$kube_router" "$service_cidr"
  local ready=""
  for _ in $(seq 1 900); do
    if "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get node "$node_name" \
         -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; then
      ready=yes; break
    fi
    kill -0 "$(awk '$2 == "node" {print $1}' "$dir/pids")" 2>/dev/null || fail "the real node exited while starting"
    sleep 0.1
  done
  [[ -n "$ready" ]] || fail "the real node was not Ready after 90 s"
}

# Inside the node's namespaces: private /run directories, then containerd (with the images
# imported), the kubelet and kube-proxy; each recorded in $dir/pids for stop.sh.
node_inside() {
  local dir="$1" bin="$2" images="$3" kube_router="$4" service_cidr="$5" node="$1/node"
  local node_name node_ip
  node_name=real-node
  node_ip="$(ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)"
  mount -t tmpfs -o mode=0755 tmpfs /run/netns
  mkdir -p /run/containerd && mount -t tmpfs -o mode=0711 tmpfs /run/containerd
  containerd --config "$node/containerd.toml" > "$node/logs/containerd.log" 2>&1 &
  echo "$! containerd" >> "$dir/pids"
  for _ in $(seq 1 300); do [[ -S "$node/containerd.sock" ]] && break; sleep 0.1; done
  local archive
  for archive in "$images"/*.tar; do
    ctr --address "$node/containerd.sock" -n k8s.io images import --no-unpack "$archive" > /dev/null \
      || { echo "node.sh: cannot import $archive" >&2; exit 1; }
  done
  "$bin/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$node/kubelet.kubeconfig" \
    --root-dir "$node/kubelet" --cert-dir "$node/kubelet-pki" \
    --hostname-override "$node_name" --node-ip "$node_ip" \
    --node-labels "type=real,kubernetes.io/hostname=$node_name" > "$node/logs/kubelet.log" 2>&1 &
  echo "$! kubelet" >> "$dir/pids"
  "$bin/kube-proxy" --config "$node/kube-proxy.yaml" > "$node/logs/kube-proxy.log" 2>&1 &
  echo "$! kube-proxy" >> "$dir/pids"
  # Only the firewall: pods keep the bridge plugin's network and kube-proxy's Services. It
  # exits if its Node does not exist yet, so it starts once the kubelet has registered it.
  (
    for _ in $(seq 1 900); do
      "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get node "$node_name" > /dev/null 2>&1 && break
      sleep 0.1
    done
    exec "$kube_router" --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
      --kubeconfig "$dir/kubeconfig" --hostname-override "$node_name" \
      --service-cluster-ip-range "$service_cidr" --service-node-port-range 30000-32767 \
      --health-port 0 --metrics-port 0
  ) > "$node/logs/kube-router.log" 2>&1 &
  echo "$! kube-router" >> "$dir/pids"
  wait
}

# Stops what the node left behind once its processes are gone: the pods' processes and
# containerd's shims, the node's cgroups, and its network namespace (the veth pair and the
# route go with it).
node_stop() {
  local dir="$1"
  [[ -f "$dir/node/network" ]] || return 0
  local netns index
  read -r netns index < "$dir/node/network"
  pkill -9 -f "containerd-shim-runc-v2 .*-address $dir/node/containerd.sock" 2>/dev/null || true
  local cgroups=() controller
  for controller in /sys/fs/cgroup/*/; do
    [[ -d "$controller/kubefn-node-$index" ]] && cgroups+=("$controller/kubefn-node-$index")
  done
  if (( ${#cgroups[@]} )); then
    local procs
    for _ in 1 2 3 4 5; do
      procs="$(find "${cgroups[@]}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
      [[ -z "$procs" ]] && break
      kill -9 $procs 2>/dev/null || true
      sleep 0.2
    done
    # Deepest first: a cgroup is removed once its children are.
    find "${cgroups[@]}" -depth -type d -exec rmdir {} + 2>/dev/null || true
  fi
  ip netns del "$netns" 2>/dev/null || true
  rm -f "$dir/node/network"
}

if [[ "${1:-}" == inside ]]; then
  shift
  node_inside "$@"
fi
