"""Checks the Helm chart without a cluster or a helm binary (run by tests/helm.sh).

For each set of values below: `helm lint --strict` and `helm template` through Helm's own Go
SDK (helm-python-sdk binds it), every rendered manifest validated strictly against the
Kubernetes OpenAPI schemas of the oldest and newest versions kubernetes-validate ships (the
ServiceMonitor, a CRD, is skipped), then what each case is about asserted. Settings the chart
must refuse are rendered too and must fail with their message.
"""

import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "keyward"
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"helm: FAIL: {what}")


def render(values):
    lint = helm.lint(str(CHART), values, strict=True)
    for message in lint["messages"]:
        check(message["severity"] < 2, f"helm lint --strict {values}: {message}")
    check(not lint["errors"], f"helm lint --strict {values}: {lint['errors']}")
    chart = helm.Chart.load(str(CHART))
    try:
        files = chart.render(values, name="kw", namespace="keys", is_install=True)
    finally:
        chart.close()
    docs = {}
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    for (kind, name), doc in docs.items():
        if kind == "ServiceMonitor":
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                check(False, f"{kind}/{name} is not a valid {version} object: {err.message} at {list(err.path)}")
    return docs


def container(docs):
    return docs[("Deployment", "kw-keyward")]["spec"]["template"]["spec"]["containers"][0]


def env_names(c):
    return {e["name"]: e for e in c.get("env", [])}


def common(docs, case):
    c = container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"grpc": 50051, "http": 8080}, f"{case}: container ports {ports}")
    svc = {p["name"]: p["port"] for p in docs[("Service", "kw-keyward")]["spec"]["ports"]}
    check(svc == {"grpc": 50051, "http": 8080}, f"{case}: Service ports {svc}")
    check(c["readinessProbe"].get("grpc", {}).get("port") == 50051, f"{case}: readiness is not gRPC health")
    check(c["startupProbe"].get("grpc", {}).get("port") == 50051, f"{case}: startup is not gRPC health")
    cm = docs[("ConfigMap", "kw-keyward")]["data"]
    check(cm["KEYWARD_HTTP_ADDR"] == "0.0.0.0:8080", f"{case}: KEYWARD_HTTP_ADDR {cm.get('KEYWARD_HTTP_ADDR')}")
    check(cm["KEYWARD_DATA_DIR"] == "/data", f"{case}: KEYWARD_DATA_DIR")
    return c, cm


# 1. Defaults: SQLite on a claim, no Secret at all.
docs = render({})
c, cm = common(docs, "defaults")
check("KEYWARD_DATABASE_URL" not in env_names(c) and "KEYWARD_DATABASE_URL" not in cm, "defaults: a database URL is set")
check(("PersistentVolumeClaim", "kw-keyward-data") in docs, "defaults: no PersistentVolumeClaim for /data")
volume = docs[("Deployment", "kw-keyward")]["spec"]["template"]["spec"]["volumes"][0]
check(volume.get("persistentVolumeClaim", {}).get("claimName") == "kw-keyward-data", f"defaults: /data is {volume}")
check(docs[("Deployment", "kw-keyward")]["spec"].get("strategy", {}).get("type") == "Recreate", "defaults: not Recreate")
check(not any(kind == "Job" for kind, _ in docs), "defaults: a migration Job on SQLite")
check("OTEL_EXPORTER_OTLP_ENDPOINT" not in cm, "defaults: OTLP endpoint set")
check(cm["KEYWARD_WEBHOOK_ALLOW_HTTP"] == "false", "defaults: webhooks allow http")
check(not any(k.startswith("KEYWARD_JWT_") for k in cm), "defaults: JWT settings set")

# 2. SQLite with a Secret, on an emptyDir: secret keys optional, still no database URL.
docs = render({"existingSecret": "kw", "persistence": {"enabled": False}})
c, cm = common(docs, "sqlite+secret")
env = env_names(c)
check("KEYWARD_DATABASE_URL" not in env, "sqlite+secret: database-url read from the Secret")
check(env["KEYWARD_HASH_SECRET"]["valueFrom"]["secretKeyRef"].get("optional") is True, "sqlite+secret: hash-secret required")
check(env["KEYWARD_MASTER_KEY"]["valueFrom"]["secretKeyRef"].get("optional") is True, "sqlite+secret: master-key required")
check(not any(kind == "PersistentVolumeClaim" for kind, _ in docs), "sqlite+secret: a claim without persistence")
check("strategy" not in docs[("Deployment", "kw-keyward")]["spec"], "sqlite+secret: strategy set without a claim")

# 3. PostgreSQL, scaled out, everything on.
docs = render({
    "database": {"type": "postgres"},
    "existingSecret": "kw",
    "persistence": {"enabled": False},
    "replicaCount": 3,
    "metrics": {"serviceMonitor": {"enabled": True}},
    "otel": {"endpoint": "http://otel-collector.observability:4317", "resourceAttributes": "deployment.environment=test"},
    "webhooks": {"allowHttp": True, "retrySchedule": "1s,10s", "concurrency": 4},
    "jwt": {"jwks": "https://idp.example.invalid/.well-known/jwks.json", "issuer": "https://idp.example.invalid/",
            "audience": "keyward", "tokenUse": "id,access"},
    "config": {"corsAllowedOrigins": "https://console.example.invalid"},
})
c, cm = common(docs, "postgres")
env = env_names(c)
check(env["KEYWARD_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "kw", "key": "database-url"},
      "postgres: database-url not a required Secret key")
check("optional" not in env["KEYWARD_HASH_SECRET"]["valueFrom"]["secretKeyRef"], "postgres: hash-secret optional")
check(("Job", "kw-keyward-migrate") in docs, "postgres: no migration Job")
check(("PodDisruptionBudget", "kw-keyward") in docs, "postgres: no PodDisruptionBudget at 3 replicas")
sm = docs.get(("ServiceMonitor", "kw-keyward"))
check(sm is not None and sm["spec"]["endpoints"][0]["port"] == "http", "postgres: ServiceMonitor missing or not on http")
check(cm.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://otel-collector.observability:4317", "postgres: OTLP endpoint")
check(cm.get("OTEL_SERVICE_NAME") == "kw-keyward", f"postgres: OTEL_SERVICE_NAME {cm.get('OTEL_SERVICE_NAME')}")
check(cm.get("OTEL_RESOURCE_ATTRIBUTES") == "deployment.environment=test", "postgres: OTEL_RESOURCE_ATTRIBUTES")
check(cm["KEYWARD_WEBHOOK_ALLOW_HTTP"] == "true" and cm["KEYWARD_WEBHOOK_RETRY_SCHEDULE"] == "1s,10s"
      and cm["KEYWARD_WEBHOOK_CONCURRENCY"] == "4", "postgres: webhook settings")
check(cm.get("KEYWARD_JWT_TOKEN_USE") == "id,access" and cm.get("KEYWARD_JWT_AUDIENCE") == "keyward"
      and "KEYWARD_JWT_OWNER_CLAIM" not in cm, "postgres: JWT settings")
check(cm["KEYWARD_CORS_ALLOWED_ORIGINS"] == "https://console.example.invalid", "postgres: CORS")

# 4. The edge: routes ConfigMap mounted, its own port and Service; or on the main ports.
docs = render({"edge": {"enabled": True, "routes": "[[routes]]\npath = \"/v1/*\"\nscopes = [\"read\"]\n"}})
c, cm = container(docs), docs[("ConfigMap", "kw-keyward")]["data"]
routes = docs.get(("ConfigMap", "kw-keyward-edge-routes"))
check(routes is not None and 'path = "/v1/*"' in routes["data"]["routes.toml"], f"edge: routes ConfigMap {routes}")
check(cm.get("KEYWARD_EDGE_ROUTES") == "/etc/keyward/edge/routes.toml", "edge: KEYWARD_EDGE_ROUTES")
check(cm.get("KEYWARD_EDGE_ADDR") == "0.0.0.0:9191", f"edge: KEYWARD_EDGE_ADDR {cm.get('KEYWARD_EDGE_ADDR')}")
check({p["name"]: p["containerPort"] for p in c["ports"]}.get("edge") == 9191, "edge: no container port")
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
check(mounts.get("edge-routes") == "/etc/keyward/edge", f"edge: mounts {mounts}")
edge_svc = docs.get(("Service", "kw-keyward-edge"))
check(edge_svc is not None and edge_svc["spec"]["ports"][0]["targetPort"] == "edge", f"edge: Service {edge_svc}")
docs = render({"edge": {"enabled": True, "port": 0, "existingRoutesConfigMap": "my-routes"}})
cm = docs[("ConfigMap", "kw-keyward")]["data"]
check("KEYWARD_EDGE_ADDR" not in cm and ("Service", "kw-keyward-edge") not in docs, "edge on main ports: own listener")
check(("ConfigMap", "kw-keyward-edge-routes") not in docs, "edge with an existing ConfigMap: one rendered")
volumes = {v["name"]: v for v in docs[("Deployment", "kw-keyward")]["spec"]["template"]["spec"]["volumes"]}
check(volumes["edge-routes"]["configMap"]["name"] == "my-routes", "edge: existing ConfigMap not mounted")
check("KEYWARD_EDGE_ROUTES" not in render({})[("ConfigMap", "kw-keyward")]["data"], "defaults: the edge is on")

# 5. What the chart refuses.
for values, message in [
    ({"database": {"type": "postgres"}}, "existingSecret is required"),
    ({"replicaCount": 2}, "runs one replica"),
    ({"autoscaling": {"enabled": True}}, "runs one replica"),
    ({"database": {"type": "mysql"}}, "must be sqlite or postgres"),
]:
    chart = helm.Chart.load(str(CHART))
    try:
        chart.render(values, name="kw", namespace="keys", is_install=True)
        check(False, f"{values} rendered; expected a failure with {message!r}")
    except helm.HelmError as err:
        check(message in str(err), f"{values} failed with {err}, not {message!r}")
    finally:
        chart.close()

if failures:
    sys.exit(f"helm: {len(failures)} failure(s)")
print(f"helm: chart lints strictly, renders and validates against Kubernetes {', '.join(KUBE_VERSIONS)}")
