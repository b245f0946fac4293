{{/* Names and labels. */}}
{{- define "toolgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "toolgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "toolgate.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "toolgate.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "toolgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "toolgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "toolgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "toolgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end -}}

{{- define "toolgate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/* Where the chart mounts what toolgate reads. */}}
{{- define "toolgate.policyDir" -}}/etc/toolgate/policy{{- end -}}
{{- define "toolgate.tlsDir" -}}/etc/toolgate/tls{{- end -}}
{{- define "toolgate.clientCaDir" -}}/etc/toolgate/client-ca{{- end -}}
{{- define "toolgate.upstreamTlsDir" -}}/etc/toolgate/upstream-tls{{- end -}}

{{/*
The policy file: .Values.policy with what the deployment decides filled
in. Settings toolgate reads only at start (listen) come from values whose
changes restart the pod (see toolgate.restartChecksum).
*/}}
{{- define "toolgate.policy" -}}
{{- $policy := deepCopy .Values.policy -}}
{{- if not (hasKey $policy "virtual_servers") -}}
{{- /* Nothing is allowed until you say so. */ -}}
{{- $_ := set $policy "virtual_servers" (dict "default" (dict "tools" (dict "allow" list))) -}}
{{- end -}}
{{- $listen := dict -}}
{{- if hasKey $policy "listen" }}{{ $listen = get $policy "listen" }}{{ end -}}
{{- $_ := set $listen "drain" (printf "%ds" (int .Values.drainSeconds)) -}}
{{- if .Values.tls.enabled -}}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" (include "toolgate.tlsDir" .)) "key_file" (printf "%s/tls.key" (include "toolgate.tlsDir" .)) -}}
{{- if .Values.tls.clientCertificates -}}
{{- $_ := set $tls "client_ca_file" (printf "%s/%s" (include "toolgate.clientCaDir" .) .Values.tls.clientCaKey) -}}
{{- $_ := set $tls "client_certificates" .Values.tls.clientCertificates -}}
{{- end -}}
{{- $_ := set $listen "tls" $tls -}}
{{- end -}}
{{- $_ := set $policy "listen" $listen -}}
{{- $upstream := dict -}}
{{- if hasKey $policy "upstream" }}{{ $upstream = get $policy "upstream" }}{{ end -}}
{{- if not (hasKey $upstream "url") -}}
{{- if eq .Values.mode "sidecar" -}}
{{- $_ := set $upstream "url" (printf "http://127.0.0.1:%d%s" (int .Values.sidecar.port) .Values.sidecar.path) -}}
{{- else -}}
{{- $_ := set $upstream "url" (required "standalone mode needs standalone.upstreamUrl (or policy.upstream.url)" .Values.standalone.upstreamUrl) -}}
{{- end -}}
{{- end -}}
{{- $ut := .Values.standalone.upstreamTls -}}
{{- if and (eq .Values.mode "standalone") $ut.secretName -}}
{{- $tls := dict -}}
{{- if $ut.caKey -}}
{{- $_ := set $tls "ca_file" (printf "%s/%s" (include "toolgate.upstreamTlsDir" .) $ut.caKey) -}}
{{- end -}}
{{- if $ut.certKey -}}
{{- $_ := set $tls "cert_file" (printf "%s/%s" (include "toolgate.upstreamTlsDir" .) $ut.certKey) -}}
{{- $_ := set $tls "key_file" (printf "%s/%s" (include "toolgate.upstreamTlsDir" .) $ut.keyKey) -}}
{{- end -}}
{{- $_ := set $upstream "tls" $tls -}}
{{- end -}}
{{- $_ := set $policy "upstream" $upstream -}}
{{- $transport := dict -}}
{{- if hasKey $policy "transport" }}{{ $transport = get $policy "transport" }}{{ end -}}
{{- /* The Service's own names (and localhost, for port-forward) are always served. */ -}}
{{- $name := include "toolgate.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) "localhost" "127.0.0.1" -}}
{{- if hasKey $transport "allowed_hosts" -}}
{{- $hosts = concat (get $transport "allowed_hosts") $hosts | uniq -}}
{{- end -}}
{{- $_ := set $transport "allowed_hosts" $hosts -}}
{{- $_ := set $policy "transport" $transport -}}
{{- toYaml $policy -}}
{{- end -}}

{{/* What only a restart applies: ports, policy.listen, the drain period, TLS on or off. */}}
{{- define "toolgate.restartChecksum" -}}
{{- list .Values.ports .Values.drainSeconds .Values.tls.enabled (get .Values.policy "listen") | toJson | sha256sum -}}
{{- end -}}

{{/* Settings that render but could never run. */}}
{{- define "toolgate.validate" -}}
{{- if eq (int .Values.ports.proxy) (int .Values.ports.admin) -}}
{{- fail "ports.proxy and ports.admin must differ" -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") (has (int .Values.sidecar.port) (list (int .Values.ports.proxy) (int .Values.ports.admin))) -}}
{{- fail (printf "sidecar.port %d is one of toolgate's ports (ports.proxy, ports.admin): move one of them" (int .Values.sidecar.port)) -}}
{{- end -}}
{{- $identity := get .Values.policy "identity" | default dict -}}
{{- if and (hasKey $identity "mtls") (not (and .Values.tls.enabled .Values.tls.clientCertificates)) -}}
{{- fail "policy.identity.mtls needs tls.enabled, tls.clientCertificates (required or optional) and tls.clientCaSecretName" -}}
{{- end -}}
{{- if and .Values.tls.clientCertificates (not .Values.tls.enabled) -}}
{{- fail "tls.clientCertificates needs tls.enabled" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (or .Values.metrics.annotations .Values.metrics.serviceMonitor.enabled) (empty .Values.networkPolicy.metricsFrom) -}}
{{- fail "networkPolicy.enabled with metrics on needs networkPolicy.metricsFrom (who may scrape the admin port, e.g. the monitoring namespace), or metrics.annotations: false" -}}
{{- end -}}
{{- end -}}
