#!/usr/bin/env python3
"""Validate `helm template` output of helm/jobsphere-chat.

  validate_manifests.py --profile default|all-on RENDERED.yaml

1. Every built-in kind against the Kubernetes OpenAPI schemas bundled (offline) in the PyPI
   package kubernetes-validate, in strict mode (unknown fields are errors), for each Kubernetes
   version of the profile.
2. The Prometheus Operator kinds, which have no bundled schema: apiVersion/kind/metadata, the
   ServiceMonitor endpoint, and the PrometheusRule's groups (parsed, shaped like a rule file,
   equal to files/alerts.yml); the Grafana dashboard ConfigMap (label, JSON equal to the file).
3. What the chart promises (docs/operations.md, Metrics and the deployment brief): rollout strategy,
   probes, drain timing, security context, env names, selectors that match, and so on.

Prints `PASS name` / `FAIL name: why` lines (tests/deploy/check.sh counts them); exit 1 on any FAIL.
"""

import argparse
import functools
import json
import pathlib
import sys

import yaml

from checks import Checks

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "jobsphere-chat"

# Kubernetes versions to validate against: the chart's floor (kubeVersion >=1.27) and a current
# one. The all-on profile uses the kubelet sleep action for preStop, which needs 1.30.
VERSIONS = {"default": ["1.27.0", "1.33.0"], "all-on": ["1.30.0", "1.33.0"]}

CRD_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}

# docs/operations.md, Configuration, plus the settings the app accepts beyond it.
ENV_NAMES = {
    "CHAT_ADDR", "CHAT_METRICS_ADDR", "CHAT_DATA_DIR", "REDIS_URL", "MONGODB_URI", "MONGODB_DB",
    "JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "NODE_ID", "PRESENCE_TTL_SECS", "RATE_LIMIT_MESSAGES",
    "RATE_LIMIT_WINDOW_SECS", "CORS_ORIGINS", "OTEL_EXPORTER_OTLP_ENDPOINT", "RUST_LOG", "LOG_FORMAT",
    "CHAT_REDIS_PREFIX", "CHAT_SHUTDOWN_GRACE_SECS", "CHAT_DRAIN_DELAY_SECS", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "CHAT_DRAIN_CLOSE_WINDOW_SECS",
    "CHAT_TRUSTED_PROXIES", "CHAT_RATE_LIMITS", "CHAT_FANOUT", "CHAT_REDIS_CA_FILE", "CHAT_REDIS_CERT_FILE",
    "CHAT_REDIS_KEY_FILE", "JWT_ISSUER", "JWT_AUDIENCE", "JWT_LEEWAY_SECS",
    "CHAT_HEADER_READ_TIMEOUT_SECS", "CHAT_IDLE_TIMEOUT_SECS", "CHAT_MAX_CONNECTIONS",
}
# Set through extraEnv in tests/deploy/values-all-on.yaml.
EXTRA_ENV_NAMES = {"RUST_BACKTRACE", "SSL_CERT_FILE", "MONGODB_PASSWORD"}
SECRET_ENV = ("JWT_SECRET", "MONGODB_URI", "REDIS_URL")

EXPECTED_KINDS = {
    # No Ingress by default (it needs a host); the Pod is the `helm test` hook.
    "default": {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "Pod"},
    "all-on": {"ServiceAccount", "ConfigMap", "Service", "Deployment", "Ingress", "PodDisruptionBudget",
               "Secret", "HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule", "NetworkPolicy",
               "HTTPRoute", "Pod"},
}


def one(docs, kind, pred=lambda d: True):
    found = [d for d in docs if d["kind"] == kind and pred(d)]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def k8s_validator():
    from kubernetes_validate import utils

    # The package re-reads (multi-MB) schema files on every call; cache them.
    utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)

    def validate(doc, version):
        try:
            utils.validate(doc, version, strict=True)
        except utils.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} at {path or '/'}: {e.message}")
        except utils.SchemaNotFoundError as e:
            raise AssertionError(e.message)

    return validate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", choices=sorted(VERSIONS), required=True)
    ap.add_argument("--namespace", default="jobsphere")
    ap.add_argument("--secret-name", default="jobsphere-chat", help="Secret the env must reference")
    ap.add_argument("rendered")
    args = ap.parse_args()
    profile = args.profile
    c = Checks()

    text = pathlib.Path(args.rendered).read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    kinds = {d["kind"] for d in docs}

    def c_kinds():
        want = EXPECTED_KINDS[profile]
        assert want <= kinds, f"missing kinds: {sorted(want - kinds)}"
        extra = kinds - want
        assert not extra, f"unexpected kinds: {sorted(extra)}"
        if profile == "default":
            assert "Secret" not in kinds, "defaults must not create a Secret (existingSecret)"

    c.check(f"{profile}: rendered kinds", c_kinds)

    def c_meta():
        seen = set()
        for d in docs:
            assert d.get("apiVersion") and d.get("kind"), f"missing apiVersion/kind: {d}"
            md = d.get("metadata") or {}
            assert md.get("name"), f"{d['kind']} without metadata.name"
            key = (d["kind"], md.get("namespace"), md["name"])
            assert key not in seen, f"duplicate {key}"
            seen.add(key)
            if d["kind"] not in CLUSTER_SCOPED:
                assert md.get("namespace"), f"{d['kind']}/{md['name']} has no namespace"
            labels = md.get("labels") or {}
            for label in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
                assert label in labels, f"{d['kind']}/{md['name']} lacks label {label}"

    c.check(f"{profile}: metadata of every object", c_meta)

    validate = k8s_validator()
    for version in VERSIONS[profile]:
        for d in docs:
            if d["kind"] in CRD_KINDS:
                continue
            c.check(f"{profile}: k8s {version} schema {d['kind']}/{d['metadata']['name']}",
                    functools.partial(validate, d, version))

    # ---- CRDs and monitoring content -------------------------------------------------------
    alerts_file = CHART / "files" / "alerts.yml"
    dashboard_file = CHART / "files" / "jobsphere-chat.json"

    for d in docs:
        if d["kind"] in CRD_KINDS:
            def c_crd(d=d):
                assert d["apiVersion"] == CRD_KINDS[d["kind"]], f"{d['kind']} apiVersion {d['apiVersion']}"
                assert isinstance(d.get("spec"), dict), "spec missing"
            c.check(f"{profile}: {d['kind']} apiVersion/kind/metadata", c_crd)

    if "ServiceMonitor" in kinds:
        def c_sm():
            sm = one(docs, "ServiceMonitor")
            svc = one(docs, "Service")
            ports = {p["name"] for p in svc["spec"]["ports"]}
            eps = sm["spec"]["endpoints"]
            assert eps and all(e["port"] in ports for e in eps), f"endpoint ports {eps} not in Service ports {ports}"
            assert eps[0]["port"] == "metrics" and eps[0].get("path", "/metrics") == "/metrics"
            assert matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]), "selector misses the Service"
            assert svc["metadata"]["namespace"] in sm["spec"]["namespaceSelector"]["matchNames"]
            # No forced job name: the Service name differs per release, so two releases in one
            # Prometheus stay apart (the rules select job + namespace).
            jobs = [r for r in eps[0].get("relabelings", []) if r.get("targetLabel") == "job"]
            assert not jobs, f"job relabelled to {jobs} although metrics.serviceMonitor.jobLabel is empty"
        c.check(f"{profile}: ServiceMonitor scrapes the metrics port, job = Service name", c_sm)

    if "PrometheusRule" in kinds:
        def c_rules():
            pr = one(docs, "PrometheusRule")
            groups = pr["spec"].get("groups")
            assert isinstance(groups, list), "spec.groups is not a list"
            names = set()
            for g in groups:
                assert isinstance(g.get("name"), str) and g["name"] not in names, f"bad/duplicate group name {g.get('name')}"
                names.add(g["name"])
                assert isinstance(g.get("rules"), list), f"group {g['name']} has no rules list"
                for r in g["rules"]:
                    assert ("alert" in r) != ("record" in r), f"rule needs exactly one of alert/record: {r}"
                    assert isinstance(r.get("expr"), (str, int, float)) and str(r["expr"]).strip(), f"rule without expr: {r}"
                    if "alert" in r:
                        assert "severity" in (r.get("labels") or {}), f"alert {r['alert']} has no severity"
            svc_name = one(docs, "Service")["metadata"]["name"]
            sel = f'job="{svc_name}",namespace="{args.namespace}"'
            text = json.dumps(pr["spec"])
            assert "__" not in text.replace("__name__", ""), "a placeholder was left in the rules"
            source = yaml.safe_load(alerts_file.read_text())
            src_alerts = [r["alert"] for g in source["groups"] for r in g["rules"] if "alert" in r]
            rules = {r.get("alert") or r.get("record"): r for g in groups for r in g["rules"]}
            for name, r in rules.items():
                assert sel in str(r["expr"]), f"{name}: expr not scoped to {sel}: {r['expr']}"
                if "alert" in r:
                    url = r["annotations"]["runbook_url"]
                    assert url.startswith("https://") and "/docs/runbooks/" in url, f"{name}: runbook_url {url}"
                    assert "runbook" not in r["annotations"], f"{name}: `runbook` instead of runbook_url"
            # all-on: thresholds, rule labels, disabled alerts and overrides from values.
            if profile == "all-on":
                assert "ChatNodeVersionMismatch" not in rules, "disabledAlerts not applied"
                assert set(src_alerts) - set(rules) == {"ChatNodeVersionMismatch"}, sorted(set(src_alerts) - set(rules))
                down = rules["ChatNodeDown"]
                assert down["labels"] == {"severity": "critical", "team": "chat", "pager": "true"}, down["labels"]
                assert down["for"] == "5m", down["for"]
                assert all(r["labels"].get("team") == "chat" for r in rules.values() if "alert" in r), "ruleLabels"
                assert "> 1.8" in rules["ChatCpuSaturated"]["expr"], rules["ChatCpuSaturated"]["expr"]
                assert "> 2147483648" in rules["ChatMemoryHigh"]["expr"], rules["ChatMemoryHigh"]["expr"]
                assert "(threshold 0.02)" in rules["ChatHttp5xxHigh"]["annotations"]["description"]
            else:
                assert set(src_alerts) == {r for r in rules if "alert" in rules[r]}, "alerts missing"
        c.check(f"{profile}: PrometheusRule = files/alerts.yml scoped to this release, values applied", c_rules)

    dashboards = [d for d in docs if d["kind"] == "ConfigMap"
                  and (d["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    if profile == "all-on":
        def c_dash():
            assert len(dashboards) == 1, f"expected one dashboard ConfigMap, found {len(dashboards)}"
            data = dashboards[0]["data"]
            assert list(data) == ["jobsphere-chat.json"], f"keys {list(data)}"
            got = json.loads(data["jobsphere-chat.json"])
            want = json.loads(dashboard_file.read_text())
            # Per release: its own uid (<= 40 characters, Grafana's limit) and title, and its
            # namespace and job preselected; nothing else may change.
            assert got["uid"] != want["uid"] and got["uid"].startswith("jobsphere-chat-") and len(got["uid"]) <= 40, got["uid"]
            assert got["title"] == f"{want['title']} ({args.namespace}/jobsphere-chat)", got["title"]
            cur = {v["name"]: v.get("current", {}).get("value") for v in got["templating"]["list"]}
            assert cur["namespace"] == args.namespace and cur["job"] == "jobsphere-chat", cur
            for d_ in (got, want):
                d_.pop("uid"), d_.pop("title")
                for v in d_["templating"]["list"]:
                    if v["name"] in ("namespace", "job"):
                        v.pop("current", None)
            assert got == want, "dashboard differs from files/jobsphere-chat.json beyond uid/title/defaults"
        c.check(f"{profile}: Grafana dashboard ConfigMap (label, per-release uid/title/defaults, JSON = file)", c_dash)
    else:
        def c_no_dash():
            assert not dashboards, "the dashboard ConfigMap is opt-in"
        c.check(f"{profile}: no dashboard ConfigMap by default", c_no_dash)

    # ---- the chart's promises ----------------------------------------------------------------
    dep = one(docs, "Deployment")
    test_pod = one(docs, "Pod")
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    ctr = next(x for x in spec["containers"] if x["name"] == "chat")
    cm = one(docs, "ConfigMap", lambda d: "CHAT_ADDR" in (d.get("data") or {}))
    svc = one(docs, "Service")

    def c_rollout():
        if profile == "default":
            assert dep["spec"].get("replicas") == 3, f"replicas {dep['spec'].get('replicas')}"
        else:
            assert "replicas" not in dep["spec"], "with the HPA the Deployment must not set replicas"
        st = dep["spec"]["strategy"]
        assert st["type"] == "RollingUpdate"
        assert st["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}, st["rollingUpdate"]
        assert matches(dep["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]), "selector misses pods"

    c.check(f"{profile}: Deployment rollout (3 replicas or HPA, maxUnavailable 0, maxSurge 1)", c_rollout)

    def c_probes():
        want = {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        for probe, path in want.items():
            p = ctr.get(probe)
            assert p, f"{probe} missing"
            assert p["httpGet"]["path"] == path and p["httpGet"]["port"] == "http", f"{probe}: {p['httpGet']}"
            assert p.get("timeoutSeconds", 1) >= 1

    c.check(f"{profile}: probes (startup+liveness /healthz, readiness /readyz)", c_probes)

    def c_drain():
        pre = ctr["lifecycle"]["preStop"]
        if "exec" in pre:
            cmd = pre["exec"]["command"]
            assert cmd[0] == "/bin/sleep" and len(cmd) == 2, f"preStop {cmd}"
            sleep = int(cmd[1])
        else:
            sleep = int(pre["sleep"]["seconds"])
        assert sleep > 0
        grace = int(cm["data"]["CHAT_SHUTDOWN_GRACE_SECS"])
        drain = int(cm["data"]["CHAT_DRAIN_DELAY_SECS"])
        assert grace > drain, "shutdown grace must exceed the drain delay"
        window = int(cm["data"]["CHAT_DRAIN_CLOSE_WINDOW_SECS"])
        assert grace > drain + window, "shutdown grace must exceed the drain delay + close window"
        tgps = spec["terminationGracePeriodSeconds"]
        assert tgps > sleep + grace, f"terminationGracePeriodSeconds {tgps} <= preStop {sleep} + grace {grace}"

    c.check(f"{profile}: preStop drain and terminationGracePeriodSeconds > preStop + shutdown grace", c_drain)

    def c_security():
        psc = spec["securityContext"]
        assert psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001, psc
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", psc
        sc = ctr["securityContext"]
        assert sc.get("readOnlyRootFilesystem") is True, sc
        assert sc.get("allowPrivilegeEscalation") is False, sc
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], sc
        assert not sc.get("privileged"), sc
        assert spec.get("automountServiceAccountToken") is False
        assert spec.get("enableServiceLinks") is False
        mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
        vols = {v["name"]: v for v in spec["volumes"]}
        for path in ("/data", "/tmp"):
            assert path in mounts and "emptyDir" in vols[mounts[path]], f"{path} must be an emptyDir mount"
        assert cm["data"]["CHAT_DATA_DIR"] == "/data"

    c.check(f"{profile}: non-root, read-only root fs, no capabilities, seccomp, emptyDir /data", c_security)

    def c_resources():
        res = ctr["resources"]
        assert res["requests"].get("cpu") and res["requests"].get("memory"), "cpu/memory requests (HPA needs cpu)"
        assert res["limits"].get("memory"), "memory limit"

    c.check(f"{profile}: resources", c_resources)

    def c_env():
        env = {e["name"]: e for e in ctr["env"]}
        names = set(env) | set(cm["data"])
        unknown = names - ENV_NAMES - (EXTRA_ENV_NAMES if profile == "all-on" else set())
        assert not unknown, f"env names not in docs/operations.md: {sorted(unknown)}"
        assert env["NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        secret_name = args.secret_name
        order = [e["name"] for e in ctr["env"]]
        if profile == "default":
            for name in SECRET_ENV:
                ref = env[name]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret_name, f"{name} from Secret {ref['name']}, want {secret_name}"
                assert ref["key"] == name
        else:
            # secret.refs, secret.urlTemplates and secretEnv (defined before its users: Kubernetes
            # expands $(VAR) only from earlier entries).
            assert env["JWT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == secret_name
            assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-chat", "key": "url"}, env["REDIS_URL"]
            assert "$(MONGODB_PASSWORD)" in env["MONGODB_URI"]["value"], env["MONGODB_URI"]
            assert env["MONGODB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mongo-chat", "key": "password"}
            assert order.index("MONGODB_PASSWORD") < order.index("MONGODB_URI"), order
            assert cm["data"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
            assert cm["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("https://")
        assert cm["data"]["CHAT_ADDR"] == "0.0.0.0:3000" and cm["data"]["CHAT_METRICS_ADDR"] == "0.0.0.0:9100"
        assert cm["data"]["LOG_FORMAT"] == "json"
        assert [f["configMapRef"]["name"] for f in ctr["envFrom"] if "configMapRef" in f][0] == cm["metadata"]["name"]
        ann = pod["metadata"]["annotations"]
        assert len(ann.get("checksum/config", "")) == 64, "checksum/config annotation"
        if profile == "all-on":
            assert len(ann.get("checksum/secret", "")) == 64, "checksum/secret annotation"
            sec = one(docs, "Secret")
            assert set(sec["stringData"]) == set(SECRET_ENV), sorted(sec["stringData"])
            assert cm["data"]["JWT_PUBLIC_KEY_FILE"].startswith("/"), "JWT_PUBLIC_KEY_FILE"
            mounts = [m["mountPath"] for m in ctr["volumeMounts"]]
            assert any(cm["data"]["JWT_PUBLIC_KEY_FILE"].startswith(m + "/") for m in mounts), "public key not mounted"

    c.check(f"{profile}: env (documented names, NODE_ID from pod name, secrets by secretKeyRef, config checksum)", c_env)

    def c_ports():
        cports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
        assert cports == {"http": 3000, "metrics": 9100}, cports
        sports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
        assert sports == {"http": (3000, "http"), "metrics": (9100, "metrics")}, sports
        assert matches(svc["spec"]["selector"], pod["metadata"]["labels"]), "Service selector misses pods"

    c.check(f"{profile}: Service http 3000 + metrics 9100 selecting the pods", c_ports)

    def c_spread():
        tsc = spec.get("topologySpreadConstraints") or []
        keys = {t["topologyKey"] for t in tsc}
        assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys, keys
        for t in tsc:
            assert matches(t["labelSelector"]["matchLabels"], pod["metadata"]["labels"])

    c.check(f"{profile}: topologySpreadConstraints over zones and nodes", c_spread)

    def c_ingress():
        ings = [d for d in docs if d["kind"] == "Ingress"]
        if profile == "default":
            assert not ings, "no Ingress by default (it must name a host)"
            return
        by_name = {i["metadata"]["name"]: i for i in ings}
        assert set(by_name) == {svc["metadata"]["name"], svc["metadata"]["name"] + "-socketio"}, sorted(by_name)
        api, sio = by_name[svc["metadata"]["name"]], by_name[svc["metadata"]["name"] + "-socketio"]
        for ing in ings:
            ann = ing["metadata"]["annotations"]
            for k in ("proxy-read-timeout", "proxy-send-timeout"):
                assert ann.get(f"nginx.ingress.kubernetes.io/{k}") == "3600", (ing["metadata"]["name"], k)
            assert ing["spec"]["rules"][0]["host"] == "chat.jobsphere.example"
            assert ing["spec"]["tls"][0]["hosts"] == [ing["spec"]["rules"][0]["host"]]
            for p in (p for r in ing["spec"]["rules"] for p in r["http"]["paths"]):
                assert p["backend"]["service"]["name"] == svc["metadata"]["name"]
                assert p["backend"]["service"]["port"]["name"] == "http"
        # Stickiness only where long-polling needs it, not persistent, cookie per release.
        assert not any("affinity" in k for k in api["metadata"]["annotations"]), "REST Ingress must not be sticky"
        a = sio["metadata"]["annotations"]
        assert a["nginx.ingress.kubernetes.io/affinity"] == "cookie"
        assert a["nginx.ingress.kubernetes.io/affinity-mode"] == "balanced"
        assert a["nginx.ingress.kubernetes.io/session-cookie-path"] == "/socket.io/"
        assert a["nginx.ingress.kubernetes.io/session-cookie-name"] == "jobsphere-chat-sio"
        assert [p["path"] for p in sio["spec"]["rules"][0]["http"]["paths"]] == ["/socket.io/"]

    c.check(f"{profile}: Ingress (off by default; REST and /socket.io/ apart, stickiness on /socket.io/ only)", c_ingress)

    def c_test_hook():
        ann = test_pod["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == "test", ann
        assert not matches(svc["spec"]["selector"], test_pod["metadata"]["labels"]), "the Service would route to the test Pod"
        t = test_pod["spec"]["containers"][0]
        assert t["image"] == ctr["image"], "the probe runs the chat image"
        args_ = t["args"]
        assert args_[0] == "probe" and args_[args_.index("--url") + 1] == \
            f"http://{svc['metadata']['name']}.{args.namespace}.svc:{svc['spec']['ports'][0]['port']}", args_
        tenv = {e["name"]: e for e in t.get("env", [])}
        denv = {e["name"]: e for e in ctr["env"]}
        assert tenv["JWT_SECRET"] == denv["JWT_SECRET"], "the probe signs with the nodes' JWT secret"
        assert test_pod["spec"]["restartPolicy"] == "Never"
        assert t["securityContext"].get("readOnlyRootFilesystem") is True

    c.check(f"{profile}: helm test Pod runs `probe` through the Service with the nodes' secret", c_test_hook)

    def c_escape_hatches():
        if profile != "all-on":
            assert not spec.get("initContainers") and len(spec["containers"]) == 1
            return
        assert [x["name"] for x in spec["initContainers"]] == ["wait-for-redis"]
        assert [x["name"] for x in spec["containers"]] == ["chat", "log-shipper"]
        vols = {v["name"] for v in spec["volumes"]}
        assert "private-ca" in vols, vols
        mounts = {m["name"]: m["mountPath"] for m in ctr["volumeMounts"]}
        assert mounts.get("private-ca") == "/etc/ssl/private-ca", mounts
        env = {e["name"]: e.get("value") for e in ctr["env"]}
        assert env.get("SSL_CERT_FILE", "").startswith("/etc/ssl/private-ca/")

    c.check(f"{profile}: extraVolumes/Mounts, initContainers, sidecars", c_escape_hatches)

    def c_pdb():
        pdb = one(docs, "PodDisruptionBudget")
        assert matches(pdb["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
        assert ("maxUnavailable" in pdb["spec"]) != ("minAvailable" in pdb["spec"])

    c.check(f"{profile}: PodDisruptionBudget selects the pods", c_pdb)

    if profile == "all-on":
        def c_hpa():
            hpa = one(docs, "HorizontalPodAutoscaler")
            assert hpa["apiVersion"] == "autoscaling/v2"
            ref = hpa["spec"]["scaleTargetRef"]
            assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
            m = hpa["spec"]["metrics"]
            assert [x["type"] for x in m] == ["Resource", "Resource", "Pods", "External"], m
            assert [x["resource"]["name"] for x in m[:2]] == ["cpu", "memory"]
            assert m[2]["pods"]["metric"]["name"] == "chat_socket_connections"
            assert m[2]["pods"]["target"] == {"type": "AverageValue", "averageValue": "1500"}
            assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        c.check(f"{profile}: HPA autoscaling/v2 on CPU, memory, connections per pod and custom metrics", c_hpa)

        def c_route():
            r = one(docs, "HTTPRoute")
            assert r["spec"]["hostnames"] == ["chat.jobsphere.example"]
            assert r["spec"]["parentRefs"][0]["name"] == "public"
            rules = r["spec"]["rules"]
            assert [x["matches"][0]["path"] for x in rules] == [
                {"type": "PathPrefix", "value": "/socket.io/"}, {"type": "PathPrefix", "value": "/"}]
            for x in rules:
                assert x["backendRefs"] == [{"name": svc["metadata"]["name"], "port": 3000}], x["backendRefs"]
            assert rules[0]["sessionPersistence"] == {"sessionName": "jobsphere-chat-sio", "type": "Cookie"}
            assert "sessionPersistence" not in rules[1], "REST must not be sticky"
        c.check(f"{profile}: HTTPRoute (Gateway API) with /socket.io/ session persistence", c_route)

        def c_netpol():
            np_ = one(docs, "NetworkPolicy")
            assert matches(np_["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"])
            cports = {p["name"] for p in ctr["ports"]}
            for rule in np_["spec"]["ingress"]:
                for p in rule["ports"]:
                    assert p["port"] in cports, f"NetworkPolicy port {p['port']} is no container port"
            assert "Egress" in np_["spec"]["policyTypes"]
            dns = np_["spec"]["egress"][0]["ports"]
            assert {p["port"] for p in dns} == {53}
        c.check(f"{profile}: NetworkPolicy matches pods and named ports", c_netpol)

    print(f"{profile}: {c.passed} passed, {c.failed} failed", file=sys.stderr)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
