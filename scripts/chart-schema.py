#!/usr/bin/env python3
"""Writes the chart's values.schema.json: the chart's own values, and
`policy` validated by toolgate's policy schema (from `toolgate schema`,
read on stdin), so that an inline policy is checked at `helm install`.

    toolgate schema | scripts/chart-schema.py > charts/toolgate/values.schema.json

The tests regenerate it and fail if the committed file differs.
"""
import json
import sys

policy = json.load(sys.stdin)
definitions = policy.pop("definitions")
for key in ("$schema", "title"):
    policy.pop(key, None)
# The chart fills in upstream.url (sidecar: loopback; standalone: standalone.upstreamUrl).
policy["required"] = [r for r in policy["required"] if r not in ("upstream", "virtual_servers")]
# A sidecar's upstream.url is the chart's (loopback): timeouts may be set alone.
definitions["Upstream"]["required"] = [r for r in definitions["Upstream"].get("required", []) if r != "url"]
policy["description"] = "The toolgate policy file, inline (docs/policy.md); the chart fills in upstream.url, listen.tls, listen.drain and transport.allowed_hosts"

string = {"type": "string"}
obj = {"type": "object"}
boolean = {"type": "boolean"}
port = {"type": "integer", "minimum": 1, "maximum": 65535}
objects = {"type": "array", "items": obj}
def closed(properties, required=(), **extra):
    out = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = list(required)
    out.update(extra)
    return out

values = closed(
    {
        "mode": {"enum": ["sidecar", "standalone"], "description": "sidecar: the MCP server runs in the pod; standalone: in front of an existing Service"},
        "image": closed({"repository": {"type": "string", "minLength": 1}, "tag": string, "digest": {"type": "string", "pattern": "^(sha256:[0-9a-f]{64})?$"}, "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}, ["repository"]),
        "imagePullSecrets": objects,
        "nameOverride": string,
        "fullnameOverride": string,
        "policy": {"$ref": "#/definitions/InlinePolicy"},
        "existingPolicyConfigMap": string,
        "sidecar": closed({
            "container": obj, "name": string, "image": string,
            "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            "command": {"type": "array", "items": string}, "args": {"type": "array", "items": string},
            "env": objects, "envFrom": objects, "volumeMounts": objects, "port": port, "path": {"type": "string", "pattern": "^/"},
            "resources": obj, "securityContext": obj, "tmp": boolean,
            "livenessProbe": obj, "readinessProbe": obj,
        }),
        "standalone": closed({
            "upstreamUrl": {"type": "string", "pattern": "^(https?://.+)?$", "description": "http:// or https:// URL of the upstream MCP endpoint"},
            "upstreamTls": closed({"secretName": string, "caKey": string, "certKey": string, "keyKey": string},
                                  allOf=[{"if": {"properties": {a: {"minLength": 1}}, "required": [a]},
                                          "then": {"properties": {b: {"minLength": 1, "description": "certKey and keyKey go together"}}, "required": [b]}}
                                         for a, b in (("certKey", "keyKey"), ("keyKey", "certKey"))]),
        }),
        "tls": closed({
            "enabled": boolean, "secretName": string,
            "clientCertificates": {"enum": ["", "required", "optional"]},
            "clientCaSecretName": string, "clientCaKey": string,
        }),
        "secretMounts": {"type": "array", "items": closed({"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}, "secretName": {"type": "string", "minLength": 1}, "mountPath": {"type": "string", "pattern": "^/"}}, ["name", "secretName", "mountPath"])},
        "ports": closed({"proxy": port, "admin": port}, ["proxy", "admin"]),
        "drainSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "preStopSleepSeconds": {"type": "integer", "minimum": 0, "maximum": 300},
        "replicaCount": {"type": "integer", "minimum": 0},
        "service": closed({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}, "port": port, "annotations": obj, "sessionAffinity": {"enum": ["", "None", "ClientIP"]}}),
        "resources": obj,
        "securityContext": obj,
        "podSecurityContext": obj,
        "metrics": closed({"annotations": boolean, "serviceMonitor": closed({"enabled": boolean, "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}, "labels": obj})}),
        "networkPolicy": closed({"enabled": boolean, "from": objects, "metricsFrom": objects}),
        "podDisruptionBudget": closed({"enabled": boolean, "minAvailable": {"type": ["integer", "string"]}}),
        "autoscaling": closed({"enabled": boolean, "minReplicas": {"type": "integer", "minimum": 1}, "maxReplicas": {"type": "integer", "minimum": 1}, "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100}}),
        "podAnnotations": obj, "podLabels": obj, "nodeSelector": obj, "tolerations": objects,
        "affinity": obj, "topologySpreadConstraints": objects, "extraVolumes": objects,
        "global": obj,
    },
    ["mode", "image", "ports"],
    allOf=[
        {"if": {"properties": {"mode": {"const": "standalone"}}}, "then": {"anyOf": [
            {"properties": {"standalone": {"properties": {"upstreamUrl": {"minLength": 1}}, "required": ["upstreamUrl"]}}, "required": ["standalone"]},
            {"properties": {"policy": {"properties": {"upstream": {"required": ["url"]}}, "required": ["upstream"]}}},
            {"properties": {"existingPolicyConfigMap": {"minLength": 1}}, "required": ["existingPolicyConfigMap"]},
        ]}},
        {"if": {"properties": {"tls": {"properties": {"enabled": {"const": True}}, "required": ["enabled"]}}, "required": ["tls"]},
         "then": {"properties": {"tls": {"properties": {"secretName": {"minLength": 1}}, "required": ["secretName"]}}}},
        {"if": {"properties": {"tls": {"properties": {"clientCertificates": {"enum": ["required", "optional"]}}, "required": ["clientCertificates"]}}, "required": ["tls"]},
         "then": {"properties": {"tls": {"properties": {"clientCaSecretName": {"minLength": 1}}, "required": ["clientCaSecretName"]}}}},
    ],
)
values["$schema"] = "http://json-schema.org/draft-07/schema#"
values["title"] = "toolgate chart values"
definitions["InlinePolicy"] = policy
values["definitions"] = definitions
json.dump(values, sys.stdout, indent=2, sort_keys=True)
sys.stdout.write("\n")
