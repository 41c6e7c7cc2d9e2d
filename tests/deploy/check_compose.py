#!/usr/bin/env python3
"""Static checks of deploy/compose.yaml (no Docker engine needed).

  check_compose.py [--prometheus-config-out FILE]

- YAML syntax (PyYAML), then the Compose specification (the `compose-spec` package: a
  spec-compliant parser, after `${VAR:-default}` interpolation the way Compose does it);
- the cluster is wired as documented: three chat nodes built from deploy/Dockerfile with unique
  NODE_IDs and one JWT secret, env names from docs/operations.md, stop_grace_period above the app's
  shutdown grace, bind-mounted files that exist, nginx upstreams = the chat services, Prometheus
  scraping every node's :9100 as job jobsphere-chat with deploy/prometheus/alerts.yml, Grafana
  provisioning that parses and points at the mounted dashboard.

--prometheus-config-out writes the inline Prometheus config with its rule file pointed at the
repository's deploy/prometheus/alerts.yml, for `promtool check config`.
Prints `PASS name` / `FAIL name: why`; exit 1 on any failure.
"""

import argparse
import pathlib
import re
import sys

import yaml

from checks import Checks

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"

ENV_NAMES = {
    "CHAT_ADDR", "CHAT_METRICS_ADDR", "CHAT_DATA_DIR", "REDIS_URL", "MONGODB_URI", "MONGODB_DB",
    "JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "NODE_ID", "PRESENCE_TTL_SECS", "RATE_LIMIT_MESSAGES",
    "RATE_LIMIT_WINDOW_SECS", "CORS_ORIGINS", "OTEL_EXPORTER_OTLP_ENDPOINT", "RUST_LOG", "LOG_FORMAT",
    "CHAT_REDIS_PREFIX", "CHAT_SHUTDOWN_GRACE_SECS", "CHAT_DRAIN_DELAY_SECS",
}
CHAT_NODES = ["chat1", "chat2", "chat3"]

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text):
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}; unset variables (this check sets none)."""
    text = text.replace("$$", "\0")

    def sub(m):
        op, arg = m.group(2), m.group(3)
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise ValueError(f"required variable {m.group(1)}: {arg}")
        return ""

    return INTERPOLATION.sub(sub, text).replace("\0", "$")


def seconds(duration):
    m = re.fullmatch(r"(\d+)s", str(duration))
    assert m, f"duration {duration!r} not in seconds"
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus-config-out")
    args = ap.parse_args()
    c = Checks("compose")
    raw = COMPOSE.read_text()
    state = {}

    def c_yaml():
        state["doc"] = yaml.safe_load(raw)
        assert isinstance(state["doc"], dict) and "services" in state["doc"]

    c.check("YAML syntax", c_yaml)
    if "doc" not in state:
        return 1
    doc = state["doc"]
    services = doc["services"]

    def c_spec():
        from compose_spec import PyOptions

        project = PyOptions(apply_merge=True).from_yaml(interpolate(raw))
        project.validate()
        want = set(CHAT_NODES) | {"nginx", "redis", "mongo", "prometheus", "grafana"}
        assert set(project.service_names()) == want, sorted(project.service_names())

    c.check("Compose specification (compose-spec parser, references resolved)", c_spec)

    def c_nodes():
        ids, secrets = set(), set()
        for name in CHAT_NODES:
            s = services[name]
            assert s["build"]["dockerfile"] == "deploy/Dockerfile", s["build"]
            assert (DEPLOY / s["build"]["context"] / s["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
            env = s["environment"]
            unknown = set(env) - ENV_NAMES
            assert not unknown, f"{name}: env names not in docs/operations.md: {sorted(unknown)}"
            ids.add(env["NODE_ID"])
            secrets.add(env["JWT_SECRET"])
            assert env["REDIS_URL"].startswith("redis://redis:") and env["MONGODB_URI"].startswith("mongodb://mongo:")
            grace = int(env.get("CHAT_SHUTDOWN_GRACE_SECS", 20))
            assert seconds(s["stop_grace_period"]) > grace, f"{name}: stop_grace_period <= {grace}s"
            assert s.get("read_only") is True and "/data" in s.get("tmpfs", []), f"{name}: read-only with tmpfs /data"
            deps = s["depends_on"]
            assert deps["redis"]["condition"] == deps["mongo"]["condition"] == "service_healthy"
            assert "/readyz" in " ".join(s["healthcheck"]["test"]), f"{name}: healthcheck must ask /readyz"
        assert ids == set(CHAT_NODES), f"NODE_IDs {sorted(ids)}"
        assert len(secrets) == 1, "all nodes must share one JWT_SECRET"

    c.check("three chat nodes from deploy/Dockerfile, unique NODE_ID, shared secret, drain grace", c_nodes)

    def c_mounts():
        for name, s in services.items():
            for v in s.get("volumes", []):
                src = v.split(":")[0]
                if src.startswith("."):
                    assert (DEPLOY / src).exists(), f"{name}: bind source {src} does not exist"

    c.check("bind-mounted files exist", c_mounts)

    def c_nginx():
        s = services["nginx"]
        assert "./nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in s["volumes"]
        conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
        ups = re.findall(r"^\s*server\s+([^\s{;]+)[^{;\n]*;", conf, re.M)
        assert ups == [f"{n}:3000" for n in CHAT_NODES], f"upstreams {ups}"
        assert any(p.endswith(":80") for p in s["ports"]) and re.search(r"^\s*listen 80;", conf, re.M)

    c.check("nginx balances over chat1-3:3000", c_nginx)

    def c_prometheus():
        s = services["prometheus"]
        target = next(x["target"] for x in s["configs"] if x["source"] == "prometheus-config")
        assert f"--config.file={target}" in s["command"]
        prom = yaml.safe_load(doc["configs"]["prometheus-config"]["content"])
        rule_files = prom["rule_files"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in s["volumes"] if v.startswith(".")}
        assert rule_files == ["/etc/prometheus/alerts.yml"] and mounts[rule_files[0]] == "./prometheus/alerts.yml"
        jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
        assert "jobsphere-chat" in jobs, "job jobsphere-chat (alerts select job=\"jobsphere-chat\")"
        targets = [t for sc in jobs["jobsphere-chat"]["static_configs"] for t in sc["targets"]]
        assert targets == [f"{n}:9100" for n in CHAT_NODES], targets
        if args.prometheus_config_out:
            prom["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
            pathlib.Path(args.prometheus_config_out).write_text(yaml.safe_dump(prom, sort_keys=False))

    c.check("Prometheus scrapes chat1-3:9100 as jobsphere-chat with prometheus/alerts.yml", c_prometheus)

    def c_grafana():
        s = services["grafana"]
        mounts = {v.split(":")[0]: v.split(":")[1] for v in s["volumes"] if v.startswith(".")}
        assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
        dash_target = mounts["./grafana/jobsphere-chat.json"]
        prov = DEPLOY / "grafana" / "provisioning"
        ds = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())
        (src,) = ds["datasources"]
        assert src["type"] == "prometheus" and src["url"] == "http://prometheus:9090" and src["isDefault"] is True
        dp = yaml.safe_load((prov / "dashboards" / "jobsphere-chat.yaml").read_text())
        (provider,) = dp["providers"]
        assert provider["type"] == "file"
        assert dash_target.startswith(provider["options"]["path"].rstrip("/") + "/"), \
            f"dashboard mounted at {dash_target}, provider reads {provider['options']['path']}"

    c.check("Grafana provisioning (Prometheus datasource, dashboard provider path)", c_grafana)

    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
