"""Validates deploy/ offline (see scripts/check-deploy.sh for the tools).

Each check is counted; prints "N passed, M failed" and exits non-zero on a
failure. What each check covers is in deploy/README.md.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, why=""):
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed += 1
            print(f"FAIL  {what}: {why}")
        return ok

    def run(self, what, argv, quiet_ok=False, **kw):
        """Runs a tool: passes on exit 0 (and no output when quiet_ok)."""
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
        except subprocess.TimeoutExpired:
            return self.check(False, what, "timed out")
        out = (p.stdout + p.stderr).strip()
        ok = p.returncode == 0 and (not quiet_ok or not out)
        return self.check(ok, what, f"exit {p.returncode}: {out}")


def rel(p):
    return os.path.relpath(p, ROOT)


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def dockerfile():
    """(user uid, volume paths, COPY sources, exposed ports) of deploy/Dockerfile."""
    text = open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8").read()
    text = re.sub(r"\\\n", " ", text)
    user = re.findall(r"^USER\s+(\d+)", text, re.M)
    vols = re.findall(r'^VOLUME\s+\[?\s*"?([^"\]\s]+)', text, re.M)
    copies = []
    for line in re.findall(r"^COPY\s+(.*)$", text, re.M):
        if "--from=" in line:
            continue
        copies += line.split()[:-1]
    ports = re.findall(r"^EXPOSE\s+(\d+)", text, re.M)
    return (user[-1] if user else None), vols, copies, ports


def port_of(addr):
    return addr.rsplit(":", 1)[-1]


def check_yaml_syntax(res):
    files = []
    for d in (DEPLOY, os.path.join(ROOT, "dashboards")):
        for dirpath, _, names in os.walk(d):
            files += [os.path.join(dirpath, n) for n in names if n.endswith((".yml", ".yaml"))]
    for f in sorted(files):
        try:
            docs = load_yaml(f)
            res.check(bool(docs), f"yaml {rel(f)}", "empty")
        except yaml.YAMLError as e:
            res.check(False, f"yaml {rel(f)}", str(e))


def check_dockerfile(res, hadolint):
    uid, vols, copies, ports = dockerfile()
    # DL3008 (pin apt package versions) is ignored: Debian replaces point
    # releases, so pinned versions stop resolving.
    res.run("hadolint deploy/Dockerfile", [hadolint, "--ignore", "DL3008", os.path.join(DEPLOY, "Dockerfile")])
    missing = [c for c in copies if not os.path.exists(os.path.join(ROOT, c.rstrip("/")))]
    res.check(not missing, "Dockerfile COPY sources exist in the repository", f"missing: {missing}")
    ignore = open(os.path.join(DEPLOY, "Dockerfile.dockerignore"), encoding="utf-8").read().split("\n")
    kept = [line[1:].rstrip("/").split("/")[0] for line in ignore if line.startswith("!")]
    lost = [c for c in copies if c.rstrip("/").split("/")[0] not in kept]
    res.check(not lost, "Dockerfile COPY sources are not excluded by Dockerfile.dockerignore", f"excluded: {lost}")
    res.check(uid is not None and uid != "0", "Dockerfile runs as a non-root numeric USER", f"USER {uid}")
    res.check(vols == ["/var/lib/instancemap"], "Dockerfile VOLUME is /var/lib/instancemap", f"{vols}")


def check_compose(res, cjs):
    path = os.path.join(DEPLOY, "docker-compose.yml")
    res.run("compose file against the compose-spec schema (check-jsonschema, vendored)",
            [cjs, "--builtin-schema", "vendor.compose-spec", path])
    c = load_yaml(path)[0]
    svc = c["services"]
    problems = []
    for name, s in svc.items():
        b = s.get("build")
        if b:
            ctx = os.path.normpath(os.path.join(DEPLOY, b["context"]))
            if not os.path.exists(os.path.join(ctx, b["dockerfile"])):
                problems.append(f"{name}: build {b} has no Dockerfile")
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith((".", "/")) and not os.path.exists(os.path.normpath(os.path.join(DEPLOY, src))):
                problems.append(f"{name}: bind mount source {src} does not exist")
    res.check(not problems, "compose build contexts and bind-mount sources exist", "; ".join(problems))

    im = svc["instancemap"]
    _, vols, _, ports = dockerfile()
    targets = [v.split(":")[1] for v in im.get("volumes", [])]
    listen = im.get("environment", {}).get("INSTANCEMAP_LISTEN", "")
    prom = load_yaml(os.path.join(DEPLOY, "prometheus.yml"))[0]
    scrape = [t for j in prom["scrape_configs"] if j["job_name"] == "instancemap"
              for sc in j.get("static_configs", []) for t in sc["targets"]]
    ok = (set(vols) <= set(targets) and listen.startswith("0.0.0.0:") and
          scrape == [f"instancemap:{port_of(listen)}"] and ports == [port_of(listen)])
    res.check(ok, "compose: database volume, listen address, EXPOSE and Prometheus target agree",
              f"volumes {targets} vs VOLUME {vols}; listen {listen!r}; EXPOSE {ports}; scrape {scrape}")

    provider = load_yaml(os.path.join(ROOT, "dashboards/provisioning.yml"))[0]
    path_in = provider["providers"][0]["options"]["path"]
    gv = svc["grafana"].get("volumes", [])
    dash = [v.split(":")[1] for v in gv if v.split(":")[0] == "../dashboards"]
    prov = [v.split(":")[1] for v in gv if v.split(":")[0] == "../dashboards/provisioning.yml"]
    ds = [v.split(":")[1] for v in gv if v.split(":")[0] == "./grafana/datasources.yml"]
    ok = (dash == [path_in] and len(prov) == 1 and prov[0].startswith("/etc/grafana/provisioning/dashboards/")
          and len(ds) == 1 and ds[0].startswith("/etc/grafana/provisioning/datasources/"))
    res.check(ok, "compose: Grafana mounts the dashboards where provisioning.yml loads them",
              f"dashboards at {dash}, provider path {path_in!r}, provider {prov}, datasources {ds}")
    dsy = load_yaml(os.path.join(DEPLOY, "grafana/datasources.yml"))[0]
    d0 = dsy["datasources"][0]
    res.check(dsy.get("apiVersion") == 1 and d0["type"] == "prometheus" and
              d0["url"] == "http://prometheus:9090" and "prometheus" in svc,
              "Grafana data source points at the compose Prometheus", f"{d0}")


def check_prometheus(res, promtool):
    res.run("promtool check config deploy/prometheus.yml", [promtool, "check", "config",
                                                          os.path.join(DEPLOY, "prometheus.yml")])


def strict_extra_fields(given, dumped, path=""):
    """Keys in `given` that the model dropped (unknown fields)."""
    out = []
    if isinstance(given, dict):
        for k, v in given.items():
            if not isinstance(dumped, dict) or k not in dumped:
                out.append(f"{path}.{k}")
            else:
                out += strict_extra_fields(v, dumped[k], f"{path}.{k}")
    elif isinstance(given, list) and isinstance(dumped, list):
        for i, (g, d) in enumerate(zip(given, dumped)):
            out += strict_extra_fields(g, d, f"{path}[{i}]")
    return out


def check_kubernetes(res, kv, kubectl):
    kdir = os.path.join(DEPLOY, "kubernetes")
    kust = load_yaml(os.path.join(kdir, "kustomization.yaml"))[0]
    files = [os.path.join(kdir, f) for f in kust["resources"]]
    res.check(all(os.path.exists(f) for f in files), "kustomization resources exist", f"{kust['resources']}")
    res.run("kubernetes-validate --strict (kustomization resources, built-in Kubernetes schemas)",
            [kv, "--strict", "--quiet", *files])
    if kubectl:
        res.run("kubectl kustomize deploy/kubernetes builds", [kubectl, "kustomize", kdir])
    docs = {}
    for f in sorted(os.listdir(kdir)):
        if f.endswith(".yaml") and f != "kustomization.yaml":
            for d in load_yaml(os.path.join(kdir, f)):
                docs[d["kind"]] = d
    sm = docs.get("ServiceMonitor")
    if sm is not None:
        try:
            from cloudcoil.models.prometheus_operator import v1 as po

            obj = po.ServiceMonitor.model_validate(sm)
            extra = strict_extra_fields(sm, obj.model_dump(by_alias=True, exclude_none=True))
            res.check(not extra, "ServiceMonitor against the Prometheus Operator models (cloudcoil)",
                      f"unknown fields {extra}")
        except Exception as e:  # a validation error names the field
            res.check(False, "ServiceMonitor against the Prometheus Operator models (cloudcoil)", str(e))

    sts, svc = docs["StatefulSet"], docs["Service"]
    pod = sts["spec"]["template"]
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    uid, vols, _, _ = dockerfile()
    problems = []
    if sts["spec"]["replicas"] != 1:
        problems.append("replicas must be 1 (one writer per database)")
    if str(pod["spec"]["securityContext"].get("runAsUser")) != uid:
        problems.append(f"runAsUser {pod['spec']['securityContext'].get('runAsUser')} vs Dockerfile USER {uid}")
    claims = {v["metadata"]["name"] for v in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    if not any(mounts.get(n) in vols for n in claims):
        problems.append(f"no claimed volume mounted at {vols}")
    if not env.get("INSTANCEMAP_DB", "").startswith(vols[0] + "/"):
        problems.append(f"INSTANCEMAP_DB {env.get('INSTANCEMAP_DB')} not under {vols}")
    port = port_of(env.get("INSTANCEMAP_LISTEN", ""))
    named = {p["name"]: str(p["containerPort"]) for p in c.get("ports", [])}
    if named.get("http") != port:
        problems.append(f"container port http {named.get('http')} vs INSTANCEMAP_LISTEN port {port}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        g = c.get(probe, {}).get("httpGet", {})
        if g.get("path") != "/healthz" or g.get("port") not in ("http", int(port or 0)):
            problems.append(f"{probe} is not GET /healthz on the http port")
    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/port") != port or ann.get("prometheus.io/path") != "/metrics":
        problems.append(f"scrape annotations {ann}")
    labels = pod["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
        problems.append("Service selector does not match the pod labels")
    if sts["spec"]["serviceName"] != svc["metadata"]["name"]:
        problems.append("StatefulSet serviceName is not the Service")
    if sm is not None:
        if any(svc["metadata"]["labels"].get(k) != v for k, v in sm["spec"]["selector"]["matchLabels"].items()):
            problems.append("ServiceMonitor selector does not match the Service labels")
        if {e["port"] for e in sm["spec"]["endpoints"]} - {p["name"] for p in svc["spec"]["ports"]}:
            problems.append("ServiceMonitor endpoint port is not a Service port name")
    res.check(not problems, "kubernetes: image user, volume, port, probes, selectors and annotations agree",
              "; ".join(problems))


def check_systemd(res, analyze, binary):
    unit = os.path.join(DEPLOY, "instancemap.service")
    text = open(unit, encoding="utf-8").read()
    tmp = tempfile.mkdtemp(prefix="check-deploy.")
    try:
        # verify wants ExecStart's binary to exist: point it at the one built.
        copy = os.path.join(tmp, "instancemap.service")
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text.replace("/usr/local/bin/instancemap", binary))
        res.run("systemd-analyze verify deploy/instancemap.service (no warnings)", [analyze, "verify", copy],
                quiet_ok=True)
        res.run("systemd-analyze security --offline: exposure at most 2.0",
                [analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", copy])
    finally:
        shutil.rmtree(tmp)
    need = ["NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=instancemap", "DynamicUser=yes",
            "ExecStart=/usr/local/bin/instancemap run"]
    missing = [n for n in need if n not in text.splitlines()]
    env_db = re.search(r"^Environment=INSTANCEMAP_DB=/var/lib/instancemap/", text, re.M)
    res.check(not missing and env_db, "systemd unit: sandboxing and state directory settings present",
              f"missing {missing}" + ("" if env_db else "; INSTANCEMAP_DB not under the StateDirectory"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="a built instancemap (for systemd-analyze verify)")
    args = ap.parse_args()
    res = Results()
    tools = {t: shutil.which(t) for t in ("hadolint", "check-jsonschema", "kubernetes-validate", "promtool",
                                          "systemd-analyze", "kubectl")}
    for t, p in tools.items():
        if t != "kubectl":
            res.check(p is not None, f"tool {t} found", "not installed")
    check_yaml_syntax(res)
    if tools["hadolint"]:
        check_dockerfile(res, tools["hadolint"])
    if tools["check-jsonschema"]:
        check_compose(res, tools["check-jsonschema"])
    if tools["promtool"]:
        check_prometheus(res, tools["promtool"])
    if tools["kubernetes-validate"]:
        check_kubernetes(res, tools["kubernetes-validate"], tools["kubectl"])
    if tools["systemd-analyze"]:
        check_systemd(res, tools["systemd-analyze"], os.path.abspath(args.bin))
    print(f"{res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
