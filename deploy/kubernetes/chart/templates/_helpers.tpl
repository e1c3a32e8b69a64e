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
