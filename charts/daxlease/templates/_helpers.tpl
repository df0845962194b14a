{{/* Names, labels and image references shared by the templates. */}}

{{- define "daxlease.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: the release name (contains "daxlease" or gets it). */}}
{{- define "daxlease.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "daxlease.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "daxlease.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: daxlease
{{- end -}}

{{/* selectorLabels COMPONENT: stable labels that select one component's pods. */}}
{{- define "daxlease.selectorLabels" -}}
app.kubernetes.io/name: {{ include "daxlease.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* image (dict "root" $ "image" .Values.image.X): registry/repository:tag. */}}
{{- define "daxlease.image" -}}
{{- $registry := .root.Values.global.imageRegistry -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* KUBERNETES_SERVICE_HOST/PORT when kubernetesAPI overrides the in-cluster service. */}}
{{- define "daxlease.apiEnv" -}}
{{- if .Values.kubernetesAPI.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.kubernetesAPI.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.kubernetesAPI.port | toString | quote }}
{{- end }}
{{- end -}}

{{- define "daxlease.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "daxlease.socketDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}

{{/* The host directory of the agent's socket, mounted at /run/daxlease by the agent and by
daxlease-csi (which binds the socket into shared volumes' published directories). */}}
{{- define "daxlease.agentRunDir" -}}
{{- printf "%s/run" (trimSuffix "/" .Values.node.stateDir) -}}
{{- end -}}

{{- define "daxlease.agentFabricSecret" -}}
{{- .Values.node.agent.fabricSecret.name | default (printf "%s-agent-fabric" (include "daxlease.fullname" .)) -}}
{{- end -}}

{{/* "true" when the operator serves the recall channel and the agents speak it: both are
installed and operator.channel.enabled (an agent on the channel answers nowhere else). */}}
{{- define "daxlease.channel" -}}
{{- if and .Values.operator.enabled .Values.node.agent.enabled .Values.operator.channel.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* NAMESPACE/NAME of the ConfigMap where the leader publishes its channel endpoint. */}}
{{- define "daxlease.channelRecord" -}}
{{- printf "%s/%s-operator-channel" .Release.Namespace (include "daxlease.fullname" .) -}}
{{- end -}}
