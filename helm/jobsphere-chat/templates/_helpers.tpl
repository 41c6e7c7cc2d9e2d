{{/*
Names, labels and small shared pieces of the jobsphere-chat chart.
*/}}

{{/* Chart name, possibly overridden. */}}
{{- define "jobsphere-chat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release name, plus the chart name unless the release name contains it. */}}
{{- define "jobsphere-chat.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "jobsphere-chat.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the chat pods. Never change them: Deployment selectors are immutable. */}}
{{- define "jobsphere-chat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jobsphere-chat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "jobsphere-chat.labels" -}}
helm.sh/chart: {{ include "jobsphere-chat.chart" . }}
{{ include "jobsphere-chat.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | toString | trunc 63 | quote }}
app.kubernetes.io/component: chat
app.kubernetes.io/part-of: jobsphere
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "jobsphere-chat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "jobsphere-chat.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "jobsphere-chat.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when tokens are verified with a public key instead of the HS256 secret. */}}
{{- define "jobsphere-chat.usesPublicKey" -}}
{{- if or .Values.jwtPublicKey.pem .Values.jwtPublicKey.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{/* Name of the Secret with JWT_SECRET / MONGODB_URI / REDIS_URL; fails when there is none. */}}
{{- define "jobsphere-chat.secretName" -}}
{{- if .Values.secret.create -}}
{{- include "jobsphere-chat.fullname" . -}}
{{- else if .Values.secret.existingSecret -}}
{{- .Values.secret.existingSecret -}}
{{- else -}}
{{- fail "jobsphere-chat: no credentials. Set secret.existingSecret to a Secret with JWT_SECRET, MONGODB_URI and REDIS_URL, or secret.create=true with secret.jwtSecret, secret.mongodbUri and secret.redisUrl." -}}
{{- end -}}
{{- end -}}

{{/* Mount path of the JWT public key. */}}
{{- define "jobsphere-chat.publicKeyDir" -}}/etc/jobsphere-chat/jwt{{- end -}}

{{/* Render-time checks of value combinations the schema cannot express. */}}
{{- define "jobsphere-chat.validate" -}}
{{- $needed := add .Values.drain.preStopSleepSeconds .Values.config.shutdownGraceSecs -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "jobsphere-chat: terminationGracePeriodSeconds (%d) must exceed drain.preStopSleepSeconds + config.shutdownGraceSecs (%d), or pods are killed mid-drain." (int .Values.terminationGracePeriodSeconds) (int $needed)) -}}
{{- end -}}
{{- if le (int .Values.config.shutdownGraceSecs) (int .Values.config.drainDelaySecs) -}}
{{- fail "jobsphere-chat: config.shutdownGraceSecs must exceed config.drainDelaySecs." -}}
{{- end -}}
{{- if le (int .Values.config.shutdownGraceSecs) (int (add .Values.config.drainDelaySecs .Values.config.drainCloseWindowSecs)) -}}
{{- fail "jobsphere-chat: config.shutdownGraceSecs must exceed config.drainDelaySecs + config.drainCloseWindowSecs." -}}
{{- end -}}
{{- if and .Values.jwtPublicKey.pem .Values.jwtPublicKey.existingConfigMap -}}
{{- fail "jobsphere-chat: set jwtPublicKey.pem or jwtPublicKey.existingConfigMap, not both." -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "jobsphere-chat: autoscaling.minReplicas must not exceed autoscaling.maxReplicas." -}}
{{- end -}}
{{- end -}}

{{/* The `job` label of the scraped series: serviceMonitor.jobLabel, else the Service name. */}}
{{- define "jobsphere-chat.jobLabel" -}}
{{- .Values.metrics.serviceMonitor.jobLabel | default (include "jobsphere-chat.fullname" .) -}}
{{- end -}}

{{/* PromQL matchers of this release's series, used in every rule. */}}
{{- define "jobsphere-chat.ruleSelector" -}}
{{- if .Values.metrics.prometheusRule.selector -}}
{{- .Values.metrics.prometheusRule.selector -}}
{{- else -}}
{{- printf "job=%q,namespace=%q" (include "jobsphere-chat.jobLabel" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Name of the long-polling affinity cookie. */}}
{{- define "jobsphere-chat.cookieName" -}}
{{- .Values.ingress.nginx.cookieName | default (printf "%s-sio" (include "jobsphere-chat.fullname" .)) -}}
{{- end -}}

{{/*
The credential variables (secretEnv, then JWT_SECRET, MONGODB_URI, REDIS_URL), each from
secret.urlTemplates, secret.refs or the chart's Secret. Shared by the Deployment and the test Pod.
Arg: dict "root" $ "only" (list of names to render).
*/}}
{{- define "jobsphere-chat.credentialEnv" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- range $v.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}
{{- $defaults := dict "JWT_SECRET" $v.secret.keys.jwtSecret "MONGODB_URI" $v.secret.keys.mongodbUri "REDIS_URL" $v.secret.keys.redisUrl -}}
{{- range $name := .only }}
{{- if hasKey $v.secret.urlTemplates $name }}
- name: {{ $name }}
  value: {{ get $v.secret.urlTemplates $name | quote }}
{{- else if hasKey $v.secret.refs $name }}
{{- $ref := get $v.secret.refs $name }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- else }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "jobsphere-chat.secretName" $root }}
      key: {{ get $defaults $name }}
      {{- if and (eq $name "JWT_SECRET") (include "jobsphere-chat.usesPublicKey" $root) }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- end -}}
