"""The protobuf field tables of the built-in kinds the simulator accepts as protobuf.

kubectl >= 1.31 sends create/update bodies of built-in types as
`application/vnd.kubernetes.protobuf`; `kube.protobuf` decodes them with these
tables instead of a protobuf runtime. Field numbers and names are copied from
the upstream `generated.proto` files (k8s.io/api core/v1, discovery/v1,
coordination/v1; k8s.io/apimachinery meta/v1, util/intstr, api/resource) of
Kubernetes 1.34/1.35; a number missing here is rejected, never guessed.

Each message is written as `"<number> <jsonName>[!] <type>; ..."` where type is
a scalar (string, bytes, bool, int32, int64, double, json), another message,
`[T]` (repeated), `{T}` (map<string, T>) or `&T` (an embedded struct whose
fields JSON inlines into the parent, e.g. LocalObjectReference in
ConfigMapKeySelector).

Go's generated marshaller writes non-pointer scalars even when zero, and the
JSON form drops them (`omitempty`). So a zero scalar is dropped unless its
name carries `!`: a pointer field (`*bool` etc., where an explicit zero is
data) or one without omitempty. Messages are always kept (`"status": {}`).
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

Label = Literal["one", "rep", "map", "inline"]

SCALARS: Final = frozenset({"string", "bytes", "bool", "int32", "int64", "double", "json"})


class Field(NamedTuple):
    name: str
    type: str
    label: Label
    keep_zero: bool


Message = dict[int, Field]

_LOR = "1 _ &LocalObjectReference"
_KEYSEL = f"{_LOR}; 2 key! string; 3 optional! bool"
_AFFINITY_TERMS = (
    "1 requiredDuringSchedulingIgnoredDuringExecution [PodAffinityTerm]; "
    "2 preferredDuringSchedulingIgnoredDuringExecution [WeightedPodAffinityTerm]"
)
_HANDLER = "1 exec ExecAction; 2 httpGet HTTPGetAction; 3 tcpSocket TCPSocketAction"
_STATE = "1 waiting ContainerStateWaiting; 2 running ContainerStateRunning; 3 terminated ContainerStateTerminated"

_SPECS: Final[dict[str, str]] = {
    # k8s.io/apimachinery: runtime, resource, intstr, meta/v1
    "TypeMeta": "1 apiVersion string; 2 kind string",
    "Quantity": "1 string! string",
    "IntOrString": "1 type! int64; 2 intVal! int32; 3 strVal! string",
    "Time": "1 seconds! int64; 2 nanos! int32",
    "MicroTime": "1 seconds! int64; 2 nanos! int32",
    "FieldsV1": "1 Raw! json",
    "ObjectMeta": (
        "1 name string; 2 generateName string; 3 namespace string; 4 selfLink string; "
        "5 uid string; 6 resourceVersion string; 7 generation int64; 8 creationTimestamp Time; "
        "9 deletionTimestamp Time; 10 deletionGracePeriodSeconds! int64; 11 labels {string}; "
        "12 annotations {string}; 13 ownerReferences [OwnerReference]; 14 finalizers [string]; "
        "17 managedFields [ManagedFieldsEntry]"
    ),
    "OwnerReference": (
        "1 kind! string; 3 name! string; 4 uid! string; 5 apiVersion! string; "
        "6 controller! bool; 7 blockOwnerDeletion! bool"
    ),
    "ManagedFieldsEntry": (
        "1 manager string; 2 operation string; 3 apiVersion string; 4 time Time; "
        "6 fieldsType string; 7 fieldsV1 FieldsV1; 8 subresource string"
    ),
    "LabelSelector": "1 matchLabels {string}; 2 matchExpressions [LabelSelectorRequirement]",
    "LabelSelectorRequirement": "1 key! string; 2 operator! string; 3 values [string]",
    "Condition": (
        "1 type! string; 2 status! string; 3 observedGeneration int64; "
        "4 lastTransitionTime Time; 5 reason! string; 6 message! string"
    ),
    "DeleteOptions": (
        "1 gracePeriodSeconds! int64; 2 preconditions Preconditions; 3 orphanDependents! bool; "
        "4 propagationPolicy! string; 5 dryRun [string]; "
        "6 ignoreStoreReadErrorWithClusterBreakingPotential! bool"
    ),
    "Preconditions": "1 uid! string; 2 resourceVersion! string",
    # k8s.io/api/core/v1: simple kinds
    "ConfigMap": "1 metadata ObjectMeta; 2 data {string}; 3 binaryData {bytes}; 4 immutable! bool",
    "Secret": (
        "1 metadata ObjectMeta; 2 data {bytes}; 3 type string; 4 stringData {string}; "
        "5 immutable! bool"
    ),
    "Namespace": "1 metadata ObjectMeta; 2 spec NamespaceSpec; 3 status NamespaceStatus",
    "NamespaceSpec": "1 finalizers [string]",
    "NamespaceStatus": "1 phase string; 2 conditions [NamespaceCondition]",
    "NamespaceCondition": (
        "1 type! string; 2 status! string; 4 lastTransitionTime Time; 5 reason string; "
        "6 message string"
    ),
    "ServiceAccount": (
        "1 metadata ObjectMeta; 2 secrets [ObjectReference]; "
        "3 imagePullSecrets [LocalObjectReference]; 4 automountServiceAccountToken! bool"
    ),
    "ObjectReference": (
        "1 kind string; 2 namespace string; 3 name string; 4 uid string; 5 apiVersion string; "
        "6 resourceVersion string; 7 fieldPath string"
    ),
    "LocalObjectReference": "1 name string",
    "TypedLocalObjectReference": "1 apiGroup! string; 2 kind! string; 3 name! string",
    "TypedObjectReference": "1 apiGroup! string; 2 kind! string; 3 name! string; 4 namespace! string",
    # Service
    "Service": "1 metadata ObjectMeta; 2 spec ServiceSpec; 3 status ServiceStatus",
    "ServiceSpec": (
        "1 ports [ServicePort]; 2 selector {string}; 3 clusterIP string; 4 type string; "
        "5 externalIPs [string]; 7 sessionAffinity string; 8 loadBalancerIP string; "
        "9 loadBalancerSourceRanges [string]; 10 externalName string; "
        "11 externalTrafficPolicy string; 12 healthCheckNodePort int32; "
        "13 publishNotReadyAddresses bool; 14 sessionAffinityConfig SessionAffinityConfig; "
        "17 ipFamilyPolicy! string; 18 clusterIPs [string]; 19 ipFamilies [string]; "
        "20 allocateLoadBalancerNodePorts! bool; 21 loadBalancerClass! string; "
        "22 internalTrafficPolicy! string; 23 trafficDistribution! string"
    ),
    "ServicePort": (
        "1 name string; 2 protocol string; 3 port! int32; 4 targetPort IntOrString; "
        "5 nodePort int32; 6 appProtocol! string"
    ),
    "SessionAffinityConfig": "1 clientIP ClientIPConfig",
    "ClientIPConfig": "1 timeoutSeconds! int32",
    "ServiceStatus": "1 loadBalancer LoadBalancerStatus; 2 conditions [Condition]",
    "LoadBalancerStatus": "1 ingress [LoadBalancerIngress]",
    "LoadBalancerIngress": "1 ip string; 2 hostname string; 3 ipMode! string; 4 ports [PortStatus]",
    "PortStatus": "1 port! int32; 2 protocol! string; 3 error! string",
    # Endpoints
    "Endpoints": "1 metadata ObjectMeta; 2 subsets [EndpointSubset]",
    "EndpointSubset": (
        "1 addresses [EndpointAddress]; 2 notReadyAddresses [EndpointAddress]; "
        "3 ports [EndpointPort]"
    ),
    "EndpointAddress": "1 ip! string; 2 targetRef ObjectReference; 3 hostname string; 4 nodeName! string",
    "EndpointPort": "1 name string; 2 port! int32; 3 protocol string; 4 appProtocol! string",
    # Node
    "Node": "1 metadata ObjectMeta; 2 spec NodeSpec; 3 status NodeStatus",
    "NodeSpec": (
        "1 podCIDR string; 2 externalID string; 3 providerID string; 4 unschedulable bool; "
        "5 taints [Taint]; 6 configSource NodeConfigSource; 7 podCIDRs [string]"
    ),
    "Taint": "1 key! string; 2 value string; 3 effect! string; 4 timeAdded Time",
    "NodeConfigSource": "2 configMap ConfigMapNodeConfigSource",
    "ConfigMapNodeConfigSource": (
        "1 namespace! string; 2 name! string; 3 uid string; 4 resourceVersion string; "
        "5 kubeletConfigKey! string"
    ),
    "NodeStatus": (
        "1 capacity {Quantity}; 2 allocatable {Quantity}; 3 phase string; "
        "4 conditions [NodeCondition]; 5 addresses [NodeAddress]; "
        "6 daemonEndpoints NodeDaemonEndpoints; 7 nodeInfo NodeSystemInfo; "
        "8 images [ContainerImage]; 9 volumesInUse [string]; 10 volumesAttached [AttachedVolume]; "
        "11 config NodeConfigStatus; 12 runtimeHandlers [NodeRuntimeHandler]; "
        "13 features NodeFeatures; 14 declaredFeatures [string]"
    ),
    "NodeCondition": (
        "1 type! string; 2 status! string; 3 lastHeartbeatTime Time; 4 lastTransitionTime Time; "
        "5 reason string; 6 message string"
    ),
    "NodeAddress": "1 type! string; 2 address! string",
    "NodeDaemonEndpoints": "1 kubeletEndpoint DaemonEndpoint",
    "DaemonEndpoint": "1 Port! int32",
    "NodeSystemInfo": (
        "1 machineID! string; 2 systemUUID! string; 3 bootID! string; 4 kernelVersion! string; "
        "5 osImage! string; 6 containerRuntimeVersion! string; 7 kubeletVersion! string; "
        "8 kubeProxyVersion! string; 9 operatingSystem! string; 10 architecture! string; "
        "11 swap NodeSwapStatus"
    ),
    "NodeSwapStatus": "1 capacity! int64",
    "ContainerImage": "1 names [string]; 2 sizeBytes int64",
    "AttachedVolume": "1 name! string; 2 devicePath! string",
    "NodeConfigStatus": (
        "1 assigned NodeConfigSource; 2 active NodeConfigSource; "
        "3 lastKnownGood NodeConfigSource; 4 error string"
    ),
    "NodeRuntimeHandler": "1 name string; 2 features NodeRuntimeHandlerFeatures",
    "NodeRuntimeHandlerFeatures": "1 recursiveReadOnlyMounts! bool; 2 userNamespaces! bool",
    "NodeFeatures": "1 supplementalGroupsPolicy! bool; 2 containerUlimits! bool",
    # Event (core/v1)
    "Event": (
        "1 metadata ObjectMeta; 2 involvedObject ObjectReference; 3 reason string; "
        "4 message string; 5 source EventSource; 6 firstTimestamp Time; 7 lastTimestamp Time; "
        "8 count int32; 9 type string; 10 eventTime MicroTime; 11 series EventSeries; "
        "12 action string; 13 related ObjectReference; 14 reportingComponent! string; "
        "15 reportingInstance! string"
    ),
    "EventSource": "1 component string; 2 host string",
    "EventSeries": "1 count int32; 2 lastObservedTime MicroTime",
    # Pod
    "Pod": "1 metadata ObjectMeta; 2 spec PodSpec; 3 status PodStatus",
    "PodSpec": (
        "1 volumes [Volume]; 2 containers [Container]; 3 restartPolicy string; "
        "4 terminationGracePeriodSeconds! int64; 5 activeDeadlineSeconds! int64; "
        "6 dnsPolicy string; 7 nodeSelector {string}; 8 serviceAccountName string; "
        "9 serviceAccount string; 10 nodeName string; 11 hostNetwork bool; 12 hostPID bool; "
        "13 hostIPC bool; 14 securityContext PodSecurityContext; "
        "15 imagePullSecrets [LocalObjectReference]; 16 hostname string; 17 subdomain string; "
        "18 affinity Affinity; 19 schedulerName string; 20 initContainers [Container]; "
        "21 automountServiceAccountToken! bool; 22 tolerations [Toleration]; "
        "23 hostAliases [HostAlias]; 24 priorityClassName string; 25 priority! int32; "
        "26 dnsConfig PodDNSConfig; 27 shareProcessNamespace! bool; "
        "28 readinessGates [PodReadinessGate]; 29 runtimeClassName! string; "
        "30 enableServiceLinks! bool; 31 preemptionPolicy! string; 32 overhead {Quantity}; "
        "33 topologySpreadConstraints [TopologySpreadConstraint]; "
        "34 ephemeralContainers [EphemeralContainer]; 35 setHostnameAsFQDN! bool; 36 os PodOS; "
        "37 hostUsers! bool; 38 schedulingGates [PodSchedulingGate]; "
        "39 resourceClaims [PodResourceClaim]; 40 resources ResourceRequirements; "
        "41 hostnameOverride! string; 42 workloadRef WorkloadReference"
    ),
    "Container": (
        "1 name! string; 2 image string; 3 command [string]; 4 args [string]; "
        "5 workingDir string; 6 ports [ContainerPort]; 7 env [EnvVar]; "
        "8 resources ResourceRequirements; 9 volumeMounts [VolumeMount]; 10 livenessProbe Probe; "
        "11 readinessProbe Probe; 12 lifecycle Lifecycle; 13 terminationMessagePath string; "
        "14 imagePullPolicy string; 15 securityContext SecurityContext; 16 stdin bool; "
        "17 stdinOnce bool; 18 tty bool; 19 envFrom [EnvFromSource]; "
        "20 terminationMessagePolicy string; 21 volumeDevices [VolumeDevice]; "
        "22 startupProbe Probe; 23 resizePolicy [ContainerResizePolicy]; "
        "24 restartPolicy! string; 25 restartPolicyRules [ContainerRestartRule]"
    ),
    "EphemeralContainer": "1 _ &Container; 2 targetContainerName string",
    "ContainerPort": (
        "1 name string; 2 hostPort int32; 3 containerPort! int32; 4 protocol string; 5 hostIP string"
    ),
    "EnvVar": "1 name! string; 2 value string; 3 valueFrom EnvVarSource",
    "EnvVarSource": (
        "1 fieldRef ObjectFieldSelector; 2 resourceFieldRef ResourceFieldSelector; "
        "3 configMapKeyRef ConfigMapKeySelector; 4 secretKeyRef SecretKeySelector; "
        "5 fileKeyRef FileKeySelector"
    ),
    "ObjectFieldSelector": "1 apiVersion string; 2 fieldPath! string",
    "ResourceFieldSelector": "1 containerName string; 2 resource! string; 3 divisor Quantity",
    "ConfigMapKeySelector": _KEYSEL,
    "SecretKeySelector": _KEYSEL,
    "FileKeySelector": "1 volumeName! string; 2 path! string; 3 key! string; 4 optional! bool",
    "EnvFromSource": "1 prefix string; 2 configMapRef ConfigMapEnvSource; 3 secretRef SecretEnvSource",
    "ConfigMapEnvSource": f"{_LOR}; 2 optional! bool",
    "SecretEnvSource": f"{_LOR}; 2 optional! bool",
    "ResourceRequirements": "1 limits {Quantity}; 2 requests {Quantity}; 3 claims [ResourceClaim]",
    "ResourceClaim": "1 name! string; 2 request string",
    "VolumeMount": (
        "1 name! string; 2 readOnly bool; 3 mountPath! string; 4 subPath string; "
        "5 mountPropagation! string; 6 subPathExpr string; 7 recursiveReadOnly! string"
    ),
    "VolumeDevice": "1 name! string; 2 devicePath! string",
    "Probe": (
        "1 _ &ProbeHandler; 2 initialDelaySeconds int32; 3 timeoutSeconds int32; "
        "4 periodSeconds int32; 5 successThreshold int32; 6 failureThreshold int32; "
        "7 terminationGracePeriodSeconds! int64"
    ),
    "ProbeHandler": f"{_HANDLER}; 4 grpc GRPCAction",
    "LifecycleHandler": f"{_HANDLER}; 4 sleep SleepAction",
    "ExecAction": "1 command [string]",
    "HTTPGetAction": (
        "1 path string; 2 port IntOrString; 3 host string; 4 scheme string; "
        "5 httpHeaders [HTTPHeader]"
    ),
    "HTTPHeader": "1 name! string; 2 value! string",
    "TCPSocketAction": "1 port IntOrString; 2 host string",
    "GRPCAction": "1 port! int32; 2 service! string",
    "SleepAction": "1 seconds! int64",
    "Lifecycle": "1 postStart LifecycleHandler; 2 preStop LifecycleHandler; 3 stopSignal! string",
    "SecurityContext": (
        "1 capabilities Capabilities; 2 privileged! bool; 3 seLinuxOptions SELinuxOptions; "
        "4 runAsUser! int64; 5 runAsNonRoot! bool; 6 readOnlyRootFilesystem! bool; "
        "7 allowPrivilegeEscalation! bool; 8 runAsGroup! int64; 9 procMount! string; "
        "10 windowsOptions WindowsSecurityContextOptions; 11 seccompProfile SeccompProfile; "
        "12 appArmorProfile AppArmorProfile; 13 ulimits [Ulimit]"
    ),
    "PodSecurityContext": (
        "1 seLinuxOptions SELinuxOptions; 2 runAsUser! int64; 3 runAsNonRoot! bool; "
        "4 supplementalGroups [int64]; 5 fsGroup! int64; 6 runAsGroup! int64; "
        "7 sysctls [Sysctl]; 8 windowsOptions WindowsSecurityContextOptions; "
        "9 fsGroupChangePolicy! string; 10 seccompProfile SeccompProfile; "
        "11 appArmorProfile AppArmorProfile; 12 supplementalGroupsPolicy! string; "
        "13 seLinuxChangePolicy! string"
    ),
    "Capabilities": "1 add [string]; 2 drop [string]",
    "SELinuxOptions": "1 user string; 2 role string; 3 type string; 4 level string",
    "WindowsSecurityContextOptions": (
        "1 gmsaCredentialSpecName! string; 2 gmsaCredentialSpec! string; "
        "3 runAsUserName! string; 4 hostProcess! bool"
    ),
    "SeccompProfile": "1 type! string; 2 localhostProfile! string",
    "AppArmorProfile": "1 type! string; 2 localhostProfile! string",
    "Ulimit": "1 name! string; 2 hard! int64; 3 soft! int64",
    "Sysctl": "1 name! string; 2 value! string",
    "ContainerResizePolicy": "1 resourceName! string; 2 restartPolicy! string",
    "ContainerRestartRule": "1 action! string; 2 exitCodes ContainerRestartRuleOnExitCodes",
    "ContainerRestartRuleOnExitCodes": "1 operator! string; 2 values [int32]",
    # Pod volumes: the in-tree cloud and legacy plugins are left out on purpose.
    "Volume": "1 name! string; 2 _ &VolumeSource",
    "VolumeSource": (
        "1 hostPath HostPathVolumeSource; 2 emptyDir EmptyDirVolumeSource; "
        "6 secret SecretVolumeSource; 7 nfs NFSVolumeSource; "
        "10 persistentVolumeClaim PersistentVolumeClaimVolumeSource; "
        "16 downwardAPI DownwardAPIVolumeSource; 19 configMap ConfigMapVolumeSource; "
        "26 projected ProjectedVolumeSource; 28 csi CSIVolumeSource; "
        "29 ephemeral EphemeralVolumeSource; 30 image ImageVolumeSource"
    ),
    "HostPathVolumeSource": "1 path! string; 2 type! string",
    "EmptyDirVolumeSource": "1 medium string; 2 sizeLimit Quantity",
    "SecretVolumeSource": (
        "1 secretName string; 2 items [KeyToPath]; 3 defaultMode! int32; 4 optional! bool"
    ),
    "ConfigMapVolumeSource": f"{_LOR}; 2 items [KeyToPath]; 3 defaultMode! int32; 4 optional! bool",
    "KeyToPath": "1 key! string; 2 path! string; 3 mode! int32",
    "NFSVolumeSource": "1 server! string; 2 path! string; 3 readOnly bool",
    "PersistentVolumeClaimVolumeSource": "1 claimName! string; 2 readOnly bool",
    "DownwardAPIVolumeSource": "1 items [DownwardAPIVolumeFile]; 2 defaultMode! int32",
    "DownwardAPIVolumeFile": (
        "1 path! string; 2 fieldRef ObjectFieldSelector; "
        "3 resourceFieldRef ResourceFieldSelector; 4 mode! int32"
    ),
    "ProjectedVolumeSource": "1 sources [VolumeProjection]; 2 defaultMode! int32",
    "VolumeProjection": (
        "1 secret SecretProjection; 2 downwardAPI DownwardAPIProjection; "
        "3 configMap ConfigMapProjection; 4 serviceAccountToken ServiceAccountTokenProjection; "
        "5 clusterTrustBundle ClusterTrustBundleProjection; 6 podCertificate PodCertificateProjection"
    ),
    "SecretProjection": f"{_LOR}; 2 items [KeyToPath]; 4 optional! bool",
    "ConfigMapProjection": f"{_LOR}; 2 items [KeyToPath]; 4 optional! bool",
    "DownwardAPIProjection": "1 items [DownwardAPIVolumeFile]",
    "ServiceAccountTokenProjection": "1 audience string; 2 expirationSeconds! int64; 3 path! string",
    "ClusterTrustBundleProjection": (
        "1 name! string; 2 signerName! string; 3 labelSelector LabelSelector; 4 path! string; "
        "5 optional! bool"
    ),
    "PodCertificateProjection": (
        "1 signerName string; 2 keyType string; 3 maxExpirationSeconds! int32; "
        "4 credentialBundlePath string; 5 keyPath string; 6 certificateChainPath string; "
        "7 userAnnotations {string}"
    ),
    "CSIVolumeSource": (
        "1 driver! string; 2 readOnly! bool; 3 fsType! string; 4 volumeAttributes {string}; "
        "5 nodePublishSecretRef LocalObjectReference"
    ),
    "EphemeralVolumeSource": "1 volumeClaimTemplate PersistentVolumeClaimTemplate",
    "PersistentVolumeClaimTemplate": "1 metadata ObjectMeta; 2 spec PersistentVolumeClaimSpec",
    "PersistentVolumeClaimSpec": (
        "1 accessModes [string]; 2 resources VolumeResourceRequirements; 3 volumeName string; "
        "4 selector LabelSelector; 5 storageClassName! string; 6 volumeMode! string; "
        "7 dataSource TypedLocalObjectReference; 8 dataSourceRef TypedObjectReference; "
        "9 volumeAttributesClassName! string"
    ),
    "VolumeResourceRequirements": "1 limits {Quantity}; 2 requests {Quantity}",
    "ImageVolumeSource": "1 reference string; 2 pullPolicy string",
    # Pod scheduling
    "Toleration": (
        "1 key string; 2 operator string; 3 value string; 4 effect string; "
        "5 tolerationSeconds! int64"
    ),
    "HostAlias": "1 ip! string; 2 hostnames [string]",
    "PodDNSConfig": "1 nameservers [string]; 2 searches [string]; 3 options [PodDNSConfigOption]",
    "PodDNSConfigOption": "1 name string; 2 value! string",
    "PodReadinessGate": "1 conditionType! string",
    "TopologySpreadConstraint": (
        "1 maxSkew! int32; 2 topologyKey! string; 3 whenUnsatisfiable! string; "
        "4 labelSelector LabelSelector; 5 minDomains! int32; 6 nodeAffinityPolicy! string; "
        "7 nodeTaintsPolicy! string; 8 matchLabelKeys [string]"
    ),
    "PodOS": "1 name! string",
    "PodSchedulingGate": "1 name! string",
    "PodResourceClaim": (
        "1 name! string; 3 resourceClaimName! string; 4 resourceClaimTemplateName! string"
    ),
    "WorkloadReference": "1 name! string; 2 podGroup! string; 3 podGroupReplicaKey string",
    "Affinity": (
        "1 nodeAffinity NodeAffinity; 2 podAffinity PodAffinity; 3 podAntiAffinity PodAntiAffinity"
    ),
    "NodeAffinity": (
        "1 requiredDuringSchedulingIgnoredDuringExecution NodeSelector; "
        "2 preferredDuringSchedulingIgnoredDuringExecution [PreferredSchedulingTerm]"
    ),
    "NodeSelector": "1 nodeSelectorTerms [NodeSelectorTerm]",
    "NodeSelectorTerm": (
        "1 matchExpressions [NodeSelectorRequirement]; 2 matchFields [NodeSelectorRequirement]"
    ),
    "NodeSelectorRequirement": "1 key! string; 2 operator! string; 3 values [string]",
    "PreferredSchedulingTerm": "1 weight! int32; 2 preference NodeSelectorTerm",
    "PodAffinity": _AFFINITY_TERMS,
    "PodAntiAffinity": _AFFINITY_TERMS,
    "PodAffinityTerm": (
        "1 labelSelector LabelSelector; 2 namespaces [string]; 3 topologyKey! string; "
        "4 namespaceSelector LabelSelector; 5 matchLabelKeys [string]; "
        "6 mismatchLabelKeys [string]"
    ),
    "WeightedPodAffinityTerm": "1 weight! int32; 2 podAffinityTerm PodAffinityTerm",
    # Pod status
    "PodStatus": (
        "1 phase string; 2 conditions [PodCondition]; 3 message string; 4 reason string; "
        "5 hostIP string; 6 podIP string; 7 startTime Time; "
        "8 containerStatuses [ContainerStatus]; 9 qosClass string; "
        "10 initContainerStatuses [ContainerStatus]; 11 nominatedNodeName string; "
        "12 podIPs [PodIP]; 13 ephemeralContainerStatuses [ContainerStatus]; 14 resize string; "
        "15 resourceClaimStatuses [PodResourceClaimStatus]; 16 hostIPs [HostIP]; "
        "17 observedGeneration int64; 19 allocatedResources {Quantity}; "
        "20 resources ResourceRequirements"
    ),
    "PodCondition": (
        "1 type! string; 2 status! string; 3 lastProbeTime Time; 4 lastTransitionTime Time; "
        "5 reason string; 6 message string; 7 observedGeneration int64"
    ),
    "PodIP": "1 ip! string",
    "HostIP": "1 ip! string",
    "PodResourceClaimStatus": "1 name! string; 2 resourceClaimName! string",
    "ContainerStatus": (
        "1 name! string; 2 state ContainerState; 3 lastState ContainerState; 4 ready! bool; "
        "5 restartCount! int32; 6 image! string; 7 imageID! string; 8 containerID string; "
        "9 started! bool; 10 allocatedResources {Quantity}; 11 resources ResourceRequirements; "
        "13 user ContainerUser; 14 allocatedResourcesStatus [ResourceStatus]; "
        "15 stopSignal! string"
    ),
    "ContainerState": _STATE,
    "ContainerStateWaiting": "1 reason string; 2 message string",
    "ContainerStateRunning": "1 startedAt Time",
    "ContainerStateTerminated": (
        "1 exitCode! int32; 2 signal int32; 3 reason string; 4 message string; "
        "5 startedAt Time; 6 finishedAt Time; 7 containerID string"
    ),
    "ContainerUser": "1 linux LinuxContainerUser",
    "LinuxContainerUser": "1 uid! int64; 2 gid! int64; 3 supplementalGroups [int64]",
    "ResourceStatus": "1 name! string; 2 resources [ResourceHealth]",
    "ResourceHealth": "1 resourceID! string; 2 health string; 6 message! string",
    # k8s.io/api/discovery/v1
    "discovery.EndpointSlice": (
        "1 metadata ObjectMeta; 2 endpoints [discovery.Endpoint]; "
        "3 ports [discovery.EndpointPort]; 4 addressType! string"
    ),
    "discovery.Endpoint": (
        "1 addresses [string]; 2 conditions discovery.EndpointConditions; 3 hostname! string; "
        "4 targetRef ObjectReference; 5 deprecatedTopology {string}; 6 nodeName! string; "
        "7 zone! string; 8 hints discovery.EndpointHints"
    ),
    "discovery.EndpointConditions": "1 ready! bool; 2 serving! bool; 3 terminating! bool",
    "discovery.EndpointHints": "1 forZones [discovery.ForZone]",
    "discovery.ForZone": "1 name! string",
    "discovery.EndpointPort": (
        "1 name! string; 2 protocol! string; 3 port! int32; 4 appProtocol! string"
    ),
    # k8s.io/api/coordination/v1
    "coordination.Lease": "1 metadata ObjectMeta; 2 spec coordination.LeaseSpec",
    "coordination.LeaseSpec": (
        "1 holderIdentity! string; 2 leaseDurationSeconds! int32; 3 acquireTime MicroTime; "
        "4 renewTime MicroTime; 5 leaseTransitions! int32; 6 strategy! string; "
        "7 preferredHolder! string"
    ),
}


def _parse(spec: str) -> Message:
    fields: Message = {}
    for item in spec.split(";"):
        number, name, typ = item.split()
        label: Label = "one"
        if typ.startswith("["):
            label, typ = "rep", typ[1:-1]
        elif typ.startswith("{"):
            label, typ = "map", typ[1:-1]
        elif typ.startswith("&"):
            label, typ = "inline", typ[1:]
        keep = name.endswith("!")
        fields[int(number)] = Field(name.rstrip("!"), typ, label, keep)
    return fields


SCHEMA: Final[dict[str, Message]] = {name: _parse(spec) for name, spec in _SPECS.items()}

# (apiVersion, kind) -> top-level message. DeleteOptions is registered in every
# group version, so its apiVersion is not checked (see `message_for`).
KINDS: Final[dict[tuple[str, str], str]] = {
    **{
        ("v1", kind): kind
        for kind in (
            "Namespace",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Service",
            "Endpoints",
            "Node",
            "Pod",
            "Event",
        )
    },
    ("discovery.k8s.io/v1", "EndpointSlice"): "discovery.EndpointSlice",
    ("coordination.k8s.io/v1", "Lease"): "coordination.Lease",
}


def message_for(api_version: str, kind: str) -> str | None:
    """The top-level message for a typeMeta, or None if this server cannot decode it."""
    if kind == "DeleteOptions":
        return "DeleteOptions"
    return KINDS.get((api_version, kind))
