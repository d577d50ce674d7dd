{{/* The labels every object of the release carries. */}}
{{- define "portico.labels" -}}
app.kubernetes.io/part-of: portico
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The one image of controller and agent. */}}
{{- define "portico.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The agents' identity, as the API server names it (the admission policies match on it). */}}
{{- define "portico.agentUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:portico-agent
{{- end }}

{{/* The spec.loadBalancerClass Portico serves (portico.controller.annotations.LOAD_BALANCER_CLASS). */}}
{{- define "portico.loadBalancerClass" -}}
portico.io/lb
{{- end }}
