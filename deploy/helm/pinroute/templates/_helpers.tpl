{{/*
Names and labels.
*/}}
{{- define "pinroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pinroute.fullname" -}}
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

{{- define "pinroute.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pinroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pinroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pinroute.labels" -}}
helm.sh/chart: {{ include "pinroute.chart" . }}
{{ include "pinroute.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: skypilot
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "pinroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pinroute.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pinroute.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/* Secret holding the cookie key, chart-made or existing. */}}
{{- define "pinroute.cookieSecretName" -}}
{{- if .Values.cookieKey.existingSecret -}}
{{- .Values.cookieKey.existingSecret -}}
{{- else -}}
{{- printf "%s-cookie-key" (include "pinroute.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
config.server.grace_period in whole seconds ("90s", "2m", "1h", or a bare
number of seconds); fails on other forms unless terminationGracePeriodSeconds
is set, in which case it prints 0 and the check is skipped.
*/}}
{{- define "pinroute.graceSeconds" -}}
{{- $g := dig "server" "grace_period" "30s" (.Values.config | default dict) | toString | trim -}}
{{- if regexMatch "^[0-9]+$" $g -}}
{{- $g -}}
{{- else if regexMatch "^[0-9]+s$" $g -}}
{{- trimSuffix "s" $g -}}
{{- else if regexMatch "^[0-9]+m$" $g -}}
{{- mul (trimSuffix "m" $g | int) 60 -}}
{{- else if regexMatch "^[0-9]+h$" $g -}}
{{- mul (trimSuffix "h" $g | int) 3600 -}}
{{- else if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- fail (printf "config.server.grace_period %q: the chart derives terminationGracePeriodSeconds only from whole seconds, minutes or hours (\"90s\", \"2m\"); use one of those or set terminationGracePeriodSeconds" $g) -}}
{{- else -}}
0
{{- end -}}
{{- end -}}

{{/* Seconds the preStop hook waits (0 without a hook). */}}
{{- define "pinroute.preStopSeconds" -}}
{{- if eq (toString .Values.preStop.mode) "none" -}}0{{- else -}}{{ .Values.preStop.seconds | int }}{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: explicit, or preStop + grace_period + 15. An
explicit value must leave pinroute its whole drain (preStop + grace + 5 s of
pingora's final shutdown).
*/}}
{{- define "pinroute.terminationGracePeriodSeconds" -}}
{{- $grace := include "pinroute.graceSeconds" . | int -}}
{{- $pre := include "pinroute.preStopSeconds" . | int -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $pre $grace 15 -}}
{{- else -}}
{{- $t := .Values.terminationGracePeriodSeconds | int -}}
{{- if and (gt $grace 0) (le $t (add $pre $grace 5)) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than preStop.seconds + grace_period + 5 = %d, or the kubelet kills pinroute while it drains" $t (add $pre $grace 5)) -}}
{{- end -}}
{{- $t -}}
{{- end -}}
{{- end -}}

{{/*
One TOML value from a Helm value: strings are JSON-quoted (a valid TOML basic
string), whole numbers print without a fraction (Helm reads numbers from YAML
as float64), lists become inline arrays.
*/}}
{{- define "pinroute.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (float64 (int64 $v)) (float64 $v) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) -}}
{{- $v -}}
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v -}}{{- if $i }}, {{ end -}}{{- include "pinroute.tomlValue" $e -}}{{- end -}}]
{{- else -}}
{{- fail (printf "cannot write %v (%s) as a TOML value" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/*
"key = value" lines of a map's scalar and list entries (nil entries are left
out); the dict is {"map": ..., "owned": [keys the chart sets], "where": "config.x"}.
*/}}
{{- define "pinroute.tomlPairs" -}}
{{- $where := .where -}}
{{- $owned := .owned | default list -}}
{{- range $k, $v := .map -}}
{{- if has $k $owned -}}
{{- fail (printf "%s.%s is set by the chart; remove it from the values (see the comments in values.yaml)" $where $k) -}}
{{- end -}}
{{- if and (not (kindIs "invalid" $v)) (not (kindIs "map" $v)) }}
{{ $k }} = {{ include "pinroute.tomlValue" $v }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The routes, normalised: kubernetes.namespace defaults to the release namespace. */}}
{{- define "pinroute.routes" -}}
{{- $routes := list -}}
{{- range $i, $r := (.Values.config | default dict).routes | default list -}}
{{- $route := deepCopy $r -}}
{{- if kindIs "map" $route.kubernetes -}}
{{- $k := $route.kubernetes -}}
{{- if not $k.namespace -}}
{{- $_ := set $k "namespace" $.Release.Namespace -}}
{{- end -}}
{{- $_ := set $route "kubernetes" $k -}}
{{- end -}}
{{- $routes = append $routes $route -}}
{{- end -}}
{{- toJson $routes -}}
{{- end -}}

{{/* Namespaces whose pods some file route watches (JSON list). */}}
{{- define "pinroute.watchedNamespaces" -}}
{{- $ns := list -}}
{{- range $r := include "pinroute.routes" . | fromJsonArray -}}
{{- if $r.kubernetes -}}
{{- $ns = append $ns $r.kubernetes.namespace -}}
{{- end -}}
{{- end -}}
{{- toJson ($ns | uniq) -}}
{{- end -}}

{{/*
The Ingress-controller settings, checked and with their defaults filled in
(JSON; {} when the mode is off): namespace ("" = all), adoptNamespaces.
*/}}
{{- define "pinroute.ingress" -}}
{{- $ic := .Values.ingressController | default dict -}}
{{- if not $ic.enabled -}}
{}
{{- else -}}
{{- if and $ic.watchAllNamespaces $ic.watchNamespace -}}
{{- fail (printf "ingressController: watchNamespace %q and watchAllNamespaces: true contradict each other; keep one" $ic.watchNamespace) -}}
{{- end -}}
{{- if and $ic.watchAllNamespaces .Values.rbac.create (not .Values.rbac.clusterWide) -}}
{{- fail "ingressController.watchAllNamespaces watches Ingresses, Services and Secrets in every namespace, which a namespaced Role cannot grant: set rbac.clusterWide=true (a ClusterRole that reads every Secret), or watch one namespace (ingressController.watchNamespace, default the release namespace)" -}}
{{- end -}}
{{- $ns := ternary "" ($ic.watchNamespace | default .Release.Namespace) (eq $ic.watchAllNamespaces true) -}}
{{- $adoptNs := list -}}
{{- if $ic.adoptClasses -}}
{{- $adoptNs = $ic.adoptNamespaces | default (list .Release.Namespace) -}}
{{- if $ns -}}
{{- range $a := $adoptNs -}}
{{- if ne $a $ns -}}
{{- fail (printf "ingressController.adoptNamespaces: %q is not watched (pinroute watches namespace %q only): set watchNamespace to it, watchAllNamespaces, or drop it" $a $ns) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "namespace" $ns "adoptNamespaces" $adoptNs) -}}
{{- end -}}
{{- end -}}

{{/* The [server] table with [server.tls]: pinroute applies it only at start (no reload). */}}
{{- define "pinroute.config.server" -}}
{{- $config := .Values.config | default dict -}}
[server]
listen = [{{ printf "%s:%d" .Values.bindAddress (.Values.ports.http | int) | toJson }}]
admin = {{ printf "%s:%d" .Values.bindAddress (.Values.ports.admin | int) | toJson }}
upgrade_sock = "/tmp/pinroute_upgrade.sock"
pid_file = "/tmp/pinroute.pid"
{{- include "pinroute.tomlPairs" (dict "map" ($config.server | default dict) "owned" (list "listen" "admin" "upgrade_sock" "pid_file" "tls") "where" "config.server") }}
{{- if .Values.tls.enabled }}
{{- if and (not .Values.ingressController.enabled) (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled without ingressController needs tls.existingSecret (a kubernetes.io/tls Secret with tls.crt and tls.key): file routes have no Ingress spec.tls to take a certificate from" }}
{{- end }}

[server.tls]
listen = [{{ printf "%s:%d" .Values.bindAddress (.Values.ports.https | int) | toJson }}]
{{- if .Values.tls.existingSecret }}
cert_file = "/etc/pinroute/tls.crt"
key_file = "/etc/pinroute/tls.key"
{{- end }}
redirect_http = {{ ternary "true" "false" (eq .Values.tls.redirectHttp true) }}
{{- end }}
{{- end -}}

{{/* The [ingress] table (empty when the mode is off): read at start only, too. */}}
{{- define "pinroute.config.ingress" -}}
{{- $ic := .Values.ingressController -}}
{{- if $ic.enabled -}}
{{- $ing := include "pinroute.ingress" . | fromJson -}}
[ingress]
class = {{ .Values.ingressClass.name | toJson }}
{{- if $ing.namespace }}
namespace = {{ $ing.namespace | toJson }}
{{- end }}
{{- if $ic.adoptClasses }}
adopt_classes = {{ include "pinroute.tomlValue" $ic.adoptClasses }}
adopt_namespaces = {{ include "pinroute.tomlValue" $ing.adoptNamespaces }}
{{- end }}
ready_label = {{ $ic.readyLabel | toJson }}
{{- with $ic.statusAddress }}
status_address = {{ . | toJson }}
{{- end }}
{{- end -}}
{{- end -}}

{{/*
What rolls the pods when it changes: with configReload only what pinroute
cannot reload ([server] with [server.tls], [ingress], or a whole
configOverride); else the whole file.
*/}}
{{- define "pinroute.config.restartChecksum" -}}
{{- if and .Values.configReload (not .Values.configOverride) -}}
{{- print (include "pinroute.config.server" .) (include "pinroute.config.ingress" .) | sha256sum -}}
{{- else -}}
{{- include "pinroute.config" . | sha256sum -}}
{{- end -}}
{{- end -}}

{{/* pinroute.toml */}}
{{- define "pinroute.config" -}}
{{- if .Values.configOverride -}}
{{- .Values.configOverride -}}
{{- else -}}
{{- $config := .Values.config | default dict -}}
# Rendered by the pinroute Helm chart from .Values.config; edit the values,
# not this ConfigMap. Keys: pinroute README, "Configuration".
{{ include "pinroute.config.server" . }}

[cookie]
{{- if eq .Values.cookieKey.mountAs "file" }}
key_file = "/etc/pinroute/cookie.key"
{{- end }}
{{- include "pinroute.tomlPairs" (dict "map" ($config.cookie | default dict) "owned" (list "key_file") "where" "config.cookie") }}
{{- with include "pinroute.config.ingress" . }}

{{ . }}
{{- end }}
{{- $routes := include "pinroute.routes" . | fromJsonArray }}
{{- if and (not $routes) (not .Values.ingressController.enabled) }}
{{- fail "config.routes is empty and ingressController.enabled is false: pinroute needs at least one [[route]] in the file-routes mode (see the commented example under config.routes in values.yaml), or turn ingressController on" }}
{{- end }}
{{- range $i, $r := $routes }}

[[route]]
{{- include "pinroute.tomlPairs" (dict "map" $r "where" (printf "config.routes[%d]" $i)) }}
{{- range $name, $table := $r }}
{{- if kindIs "map" $table }}
[route.{{ $name }}]
{{- include "pinroute.tomlPairs" (dict "map" $table "where" (printf "config.routes[%d].%s" $i $name)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{ end -}}
