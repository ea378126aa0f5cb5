{{/* Chart name, truncated to a DNS label. */}}
{{- define "greenllm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name; the release name alone when it already contains the chart name.
Suffixes ("-operator", "-agent-metrics") are added to it, so it stays well under 63 characters.
*/}}
{{- define "greenllm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "greenllm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "greenllm.labels" -}}
helm.sh/chart: {{ include "greenllm.chart" . }}
app.kubernetes.io/name: {{ include "greenllm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: greenllm
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component ("operator" or "agent"): stable across upgrades. */}}
{{- define "greenllm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "greenllm.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "greenllm.componentLabels" -}}
{{ include "greenllm.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "greenllm.operator.fullname" -}}
{{- printf "%s-operator" (include "greenllm.fullname" .) -}}
{{- end -}}

{{- define "greenllm.agent.fullname" -}}
{{- printf "%s-agent" (include "greenllm.fullname" .) -}}
{{- end -}}

{{- define "greenllm.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "greenllm.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "greenllm.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (include "greenllm.agent.fullname" .) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest pins the image. */}}
{{- define "greenllm.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Pod-level hardening shared by both components (the agent overrides the user, see agent-daemonset). */}}
{{- define "greenllm.seccomp" -}}
seccompProfile:
  type: RuntimeDefault
{{- end -}}
