{{/*
Chart name, truncated to the 63 characters Kubernetes allows in names.
*/}}
{{- define "keyward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, with the chart name unless the release already contains it.
*/}}
{{- define "keyward.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "keyward.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "keyward.labels" -}}
helm.sh/chart: {{ include "keyward.chart" . }}
{{ include "keyward.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels (immutable on a Deployment: never add to them).
*/}}
{{- define "keyward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Container image.
*/}}
{{- define "keyward.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Name of the Secret with database-url, hash-secret, master-key and bootstrap-admin-key.
*/}}
{{- define "keyward.secretName" -}}
{{- required "existingSecret is required: the name of a Secret with keys database-url, hash-secret, master-key and (optionally) bootstrap-admin-key" .Values.existingSecret }}
{{- end }}

{{/*
Name of the migration Job: the full name, shortened so the suffix always fits in 63 characters.
*/}}
{{- define "keyward.migrateName" -}}
{{- printf "%s-migrate" (include "keyward.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
Labels of the migration Job and its pod. They leave out app.kubernetes.io/name on purpose, so
the Service, the PodDisruptionBudget and the Deployment's selector (name + instance) never match
the migration pod.
*/}}
{{- define "keyward.migrateLabels" -}}
helm.sh/chart: {{ include "keyward.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: migrate
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
