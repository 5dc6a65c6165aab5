{{/* Name of the chart, or nameOverride. */}}
{{- define "kadapt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects, at most 63 characters (a DNS label). */}}
{{- define "kadapt.fullname" -}}
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

{{- define "kadapt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kadapt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kadapt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kadapt.labels" -}}
helm.sh/chart: {{ include "kadapt.chart" . }}
{{ include "kadapt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kadapt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kadapt.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kadapt.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion .Values.image.variant) }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{- define "kadapt.secretName" -}}
{{- .Values.secret.existingSecret | default (include "kadapt.fullname" .) }}
{{- end }}

{{- define "kadapt.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "kadapt.fullname" .)) }}
{{- end }}

{{- define "kadapt.workerHost" -}}
{{- printf "%s-worker" (include "kadapt.fullname" .) }}
{{- end }}

{{/* Access modes of the data volume: shared when the worker writes adapters the API reads. */}}
{{- define "kadapt.accessModes" -}}
{{- if .Values.persistence.accessModes }}
{{- toYaml .Values.persistence.accessModes }}
{{- else if .Values.worker.enabled }}
- ReadWriteMany
{{- else }}
- ReadWriteOnce
{{- end }}
{{- end }}

{{/* True (non-empty) when the API may run more than one pod or beside the worker on one volume. */}}
{{- define "kadapt.sharedStores" -}}
{{- if and (or .Values.secret.catalogUrl .Values.secret.existingSecret) .Values.chroma.url }}true{{ end }}
{{- end }}

{{/* Refuse combinations that would corrupt the embedded stores. */}}
{{- define "kadapt.validate" -}}
{{- if and .Values.worker.enabled (not (include "kadapt.sharedStores" .)) }}
{{- fail "worker.enabled needs a PostgreSQL catalog (secret.catalogUrl or secret.existingSecret) and a Chroma server (chroma.url): the embedded SQLite catalog and Chroma cannot be shared between pods" }}
{{- end }}
{{- if and (gt (int .Values.api.replicaCount) 1) (not (include "kadapt.sharedStores" .)) }}
{{- fail "api.replicaCount > 1 needs a PostgreSQL catalog (secret.catalogUrl or secret.existingSecret) and a Chroma server (chroma.url)" }}
{{- end }}
{{- if not (has .Values.image.variant (list "cpu" "cuda")) }}
{{- fail "image.variant must be cpu or cuda" }}
{{- end }}
{{- end }}

{{/* Volumes both pods mount. */}}
{{- define "kadapt.volumes" -}}
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "kadapt.claimName" . }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kadapt.volumeMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/kadapt
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment both pods read: the ConfigMap, then the Secret. */}}
{{- define "kadapt.envFrom" -}}
- configMapRef:
    name: {{ include "kadapt.fullname" . }}
- secretRef:
    name: {{ include "kadapt.secretName" . }}
{{- end }}

{{/* Roll the pods when their settings change. */}}
{{- define "kadapt.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
