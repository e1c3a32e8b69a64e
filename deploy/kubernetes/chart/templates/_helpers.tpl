{{- define "idepool.name" -}}{{ .Release.Name }}{{- end -}}
{{- define "idepool.labels" -}}
app.kubernetes.io/name: idepool
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "idepool.selector" -}}
app.kubernetes.io/name: idepool
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "idepool.agentURL" -}}
{{- .Values.agentURL | default (printf "http://%s.%s.svc:%v" (include "idepool.name" .) .Release.Namespace .Values.service.port) -}}
{{- end -}}
{{- define "idepool.traefikClass" -}}
{{- .Values.traefik.ingressClass | default (printf "%s-traefik" (include "idepool.name" .)) -}}
{{- end -}}
{{- define "idepool.traefikSelector" -}}
app.kubernetes.io/name: traefik
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "idepool.traefikRouting" -}}
{{- if or .Values.traefik.enabled (eq (toString (.Values.config.ROUTER | default "")) "traefik") }}true{{ end -}}
{{- end -}}
