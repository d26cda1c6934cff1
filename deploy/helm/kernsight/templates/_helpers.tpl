{{- define "kernsight.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kernsight.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kernsight.labels" -}}
{{ include "kernsight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kernsight.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kernsight.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Scrape relabelings shared by the ServiceMonitor and the PodMonitor: the rules and the
dashboard select job="kernsight" and group by node. */}}
{{- define "kernsight.relabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
- targetLabel: job
  replacement: kernsight
{{- end -}}

{{- define "kernsight.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "kernsight.fullname" .)) .Values.web.tls.secretName -}}
{{- end -}}

{{- define "kernsight.clientSecretName" -}}
{{- default (printf "%s-client" (include "kernsight.fullname" .)) .Values.web.tls.clientSecretName -}}
{{- end -}}

{{/* Whether the agent verifies client certificates against the Secret's ca.crt. */}}
{{- define "kernsight.verifiesClients" -}}
{{- if has .Values.web.tls.clientAuthType (list "RequireAndVerifyClientCert" "VerifyClientCertIfGiven") -}}true{{- end -}}
{{- end -}}

{{/* Refuses settings that leave the metrics port open. */}}
{{- define "kernsight.checkWeb" -}}
{{- if not (has .Values.web.mode (list "tls" "proxy")) -}}
{{- fail (printf "web.mode must be tls or proxy, not %q" .Values.web.mode) -}}
{{- end -}}
{{- if and (eq .Values.web.mode "tls") (ne .Values.web.tls.clientAuthType "RequireAndVerifyClientCert") (not .Values.web.basicAuthUsers) -}}
{{- fail "web.mode=tls authenticates scrapers with clientAuthType RequireAndVerifyClientCert or with basicAuthUsers: set one" -}}
{{- end -}}
{{- end -}}

{{/* The scrape endpoint settings of the ServiceMonitor and the PodMonitor for the mode. */}}
{{- define "kernsight.scrapeAuth" -}}
scheme: https
{{- if eq .Values.web.mode "tls" }}
tlsConfig:
  # The agent's certificate names the Service: Prometheus dials node addresses.
  serverName: {{ include "kernsight.fullname" . }}.{{ .Release.Namespace }}.svc
  ca:
    secret:
      name: {{ include "kernsight.tlsSecretName" . }}
      key: ca.crt
  {{- if eq .Values.web.tls.clientAuthType "RequireAndVerifyClientCert" }}
  cert:
    secret:
      name: {{ include "kernsight.clientSecretName" . }}
      key: tls.crt
  keySecret:
    name: {{ include "kernsight.clientSecretName" . }}
    key: tls.key
  {{- end }}
{{- with .Values.web.basicAuthSecretName }}
basicAuth:
  username:
    name: {{ . }}
    key: username
  password:
    name: {{ . }}
    key: password
{{- end }}
{{- else }}
# kube-rbac-proxy checks the scraper's service account token (TokenReview) and its right to GET
# /metrics (SubjectAccessReview); it serves a self-signed certificate, as in kube-prometheus.
bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
tlsConfig:
  insecureSkipVerify: true
{{- end }}
{{- end -}}
