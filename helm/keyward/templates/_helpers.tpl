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
"true" when the database is the embedded SQLite, "" on PostgreSQL; fails on anything else.
*/}}
{{- define "keyward.sqlite" -}}
{{- $type := .Values.database.type }}
{{- if eq $type "sqlite" }}true
{{- else if ne $type "postgres" }}
{{- fail (printf "database.type must be sqlite or postgres, not %q" $type) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret with database-url, hash-secret, master-key and bootstrap-admin-key: required
on PostgreSQL, "" (none) allowed on SQLite.
*/}}
{{- define "keyward.secretName" -}}
{{- if include "keyward.sqlite" . }}
{{- .Values.existingSecret }}
{{- else }}
{{- required "existingSecret is required when database.type is postgres: the name of a Secret with keys database-url, hash-secret, master-key and (optionally) bootstrap-admin-key" .Values.existingSecret }}
{{- end }}
{{- end }}

{{/*
The env entries read from the Secret. On PostgreSQL database-url, hash-secret and master-key
are required keys; on SQLite database-url is not read (the database is /data/keyward.db) and
the other keys are optional (the server generates the hash secret and master key into /data).
*/}}
{{- define "keyward.secretEnv" -}}
{{- $secret := include "keyward.secretName" . }}
{{- $sqlite := include "keyward.sqlite" . }}
{{- if $secret }}
{{- if not $sqlite }}
- name: KEYWARD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: database-url
{{- end }}
- name: KEYWARD_HASH_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: hash-secret
      {{- if $sqlite }}
      optional: true
      {{- end }}
- name: KEYWARD_MASTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: master-key
      {{- if $sqlite }}
      optional: true
      {{- end }}
- name: KEYWARD_BOOTSTRAP_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: bootstrap-admin-key
      optional: true
{{- end }}
{{- end }}

{{/*
The claim of /data: persistence.existingClaim, or the one the chart creates.
*/}}
{{- define "keyward.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "keyward.fullname" . | trunc 58 | trimSuffix "-")) }}
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
