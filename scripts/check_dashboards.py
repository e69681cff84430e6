"""Checks the Grafana dashboards against a real Prometheus scraping a real
instancemap fed with recorded frames (see scripts/check-dashboards.sh).

Checks, each counted once:
- structure: each dashboard file parses, has a stable uid, unique panel ids,
  the DS_PROMETHEUS datasource variable, and every panel and target uses it;
- names: every metric name in every query is in NAMES (src/metrics.rs);
- variables: every query variable (label_values) finds a value;
- queries: every target of every panel, variables substituted, is valid
  PromQL, returns at least one series, and every {{label}} of its legend
  is on each series returned;
- labels: no label value scraped from instancemap looks like a DID, handle
  or hostname.
Python standard library only; loopback only.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_relay  # noqa: E402

SCRAPE_SECONDS = 1
# Grafana's $__rate_interval is max($__interval + scrape, 4 * scrape).
SUBST = {"__rate_interval": f"{4 * SCRAPE_SECONDS}s", "__interval": f"{SCRAPE_SECONDS}s", "__range": "1m"}
DS_VAR = "DS_PROMETHEUS"
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "atan2", "inf", "nan", "start", "end"}


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


def catalogue(metrics_rs):
    """NAMES and the histogram names, read from src/metrics.rs."""
    src = open(metrics_rs, encoding="utf-8").read()
    m = re.search(r"pub const NAMES: &\[&str\] = &\[(.*?)\];", src, re.S)
    if not m:
        sys.exit(f"{metrics_rs}: no `pub const NAMES` found")
    body = re.sub(r"//[^\n]*", "", m.group(1))
    names = set(re.findall(r'"([^"]+)"', body))
    hist = set(re.findall(r'histogram\(\s*"([^"]+)"', src)) | set(re.findall(r'HistogramOpts::new\(\s*"([^"]+)"', src))
    return names, hist


def metric_names(expr):
    """The metric names a PromQL expression selects (a lexical reading:
    strings, label matchers, ranges and grouping clauses are removed, then
    identifiers that are not functions or keywords remain)."""
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = []
    tok = re.compile(r"(\d+(?:ms|[smhdwy])\b)|(\d*\.?\d+(?:[eE][+-]?\d+)?)|([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
    for m in tok.finditer(e):
        ident, call = m.group(3), m.group(4)
        if ident and not call and ident.lower() not in KEYWORDS:
            names.append(ident)
    return names


def name_known(name, names, hist):
    if name in names:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in hist and name[: -len(suffix)] in names:
            return True
    return False


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, {"error": body.decode(errors="replace")}


def prom_query(base, expr):
    return http_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def wait_for(what, pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.25)
    print(f"timed out waiting for {what}", file=sys.stderr)
    return False


def substitute(expr, values):
    def rep(m):
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", rep, expr)


def check_structure(res, path, dash, uids):
    problems = []
    uid = dash.get("uid")
    if not uid or uid in uids:
        problems.append(f"uid {uid!r} missing or not unique")
    uids.add(uid)
    if dash.get("id") is not None:
        problems.append("id must be null for import and provisioning")
    names = [v.get("name") for v in dash.get("templating", {}).get("list", [])]
    if DS_VAR not in names:
        problems.append(f"no {DS_VAR} datasource variable")
    ids = set()
    for p in all_panels(dash.get("panels", [])):
        if p.get("id") in ids:
            problems.append(f"panel id {p.get('id')} repeated")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            problems.append(f"panel {p.get('id')} has no gridPos")
        if p.get("type") == "row":
            continue
        for obj in [p] + p.get("targets", []):
            ds = obj.get("datasource", {})
            if ds.get("uid") != "${" + DS_VAR + "}":
                problems.append(f"panel {p.get('id')} datasource {ds!r} is not ${{{DS_VAR}}}")
        if not p.get("targets"):
            problems.append(f"panel {p.get('id')} has no targets")
        for t in p.get("targets", []):
            if not t.get("expr") or not t.get("refId"):
                problems.append(f"panel {p.get('id')} target without expr or refId")
    res.check(not problems, f"structure {path}", "; ".join(problems))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="instancemap binary")
    ap.add_argument("--prometheus", default="prometheus")
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--scrapes", type=int, default=6, help="scrapes to wait for after catching up")
    args = ap.parse_args()
    root = args.root
    res = Results()

    names, hist = catalogue(os.path.join(root, "src/metrics.rs"))
    ddir = os.path.join(root, "dashboards")
    files = sorted(f for f in os.listdir(ddir) if f.endswith(".json"))
    dashboards = []
    uids = set()
    for f in files:
        try:
            d = json.load(open(os.path.join(ddir, f), encoding="utf-8"))
        except ValueError as e:
            res.check(False, f"structure {f}", f"invalid JSON: {e}")
            continue
        check_structure(res, f, d, uids)
        dashboards.append((f, d))
    res.check(len(dashboards) >= 2, "dashboards found", f"only {len(dashboards)} in {ddir}")

    targets = []
    for f, d in dashboards:
        for p in all_panels(d.get("panels", [])):
            for t in p.get("targets", []):
                if t.get("expr"):
                    targets.append((f, p, t))

    used = set()
    for f, p, t in targets:
        found = metric_names(substitute(t["expr"], SUBST))
        unknown = [n for n in found if not name_known(n, names, hist)]
        used.update(found)
        res.check(bool(found) and not unknown, f"names {f} #{p['id']} {p['title']!r} {t['refId']}",
                  f"not in NAMES: {unknown}" if unknown else "no metric name found")
    for f, d in dashboards:
        for v in d["templating"]["list"]:
            if v.get("type") == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                found = metric_names(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", q))
                unknown = [n for n in found if not name_known(n, names, hist)]
                res.check(not unknown, f"names {f} variable ${v['name']}", f"not in NAMES: {unknown}")
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in hist else n
             for n in used}
    unused = sorted(names - bases)
    if unused:
        print(f"note: names no dashboard uses: {', '.join(unused)}")

    tmp = tempfile.mkdtemp(prefix="check-dashboards.")
    procs = []
    try:
        frames = [os.path.join(root, "tests/fixtures/reference-pds.frames"),
                  os.path.join(root, "tests/fixtures/jetstream/frames.bin")]
        relay = fake_relay.start(frames)
        relay_port = relay.server_address[1]
        im_port, prom_port = free_port(), free_port()
        im = f"127.0.0.1:{im_port}"
        prom = f"http://127.0.0.1:{prom_port}"

        with open(os.path.join(tmp, "prometheus.yml"), "w") as c:
            c.write(f"global:\n  scrape_interval: {SCRAPE_SECONDS}s\n  evaluation_interval: {SCRAPE_SECONDS}s\n"
                    f"scrape_configs:\n  - job_name: instancemap\n    static_configs:\n"
                    f"      - targets: ['{im}']\n")
        plog = open(os.path.join(tmp, "prometheus.log"), "w")
        procs.append(("prometheus", subprocess.Popen(
            [args.prometheus, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=plog, stderr=subprocess.STDOUT)))
        ilog = open(os.path.join(tmp, "instancemap.log"), "w")
        procs.append(("instancemap", subprocess.Popen(
            [args.bin, "run", "--relay", f"ws://127.0.0.1:{relay_port}", "--db", f"{tmp}/db", "--listen", im,
             "--no-plc", "--no-resolve", "--no-crawl",
             # the network gauges come with a database (the generated test ones)
             "--mmdb", "tests/fixtures/mmdb/test-asn.mmdb", "--mmdb", "tests/fixtures/mmdb/test-country.mmdb"],
            stdout=ilog, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})))

        def health():
            _, h = http_json(f"http://{im}/healthz", timeout=2)
            return h

        last = {}

        def caught_up():
            h = health()
            ok = h.get("connected") and h["cursor"] > 0 and h["cursor_committed"] == h["cursor"] == last.get("c")
            last["c"] = h["cursor"]
            return ok and relay.connections >= 1

        ok = wait_for("instancemap to apply the frames", caught_up, 120)
        res.check(ok, "instancemap applied the recorded frames",
                  f"see {tmp}/instancemap.log; last /healthz {last}")
        for path in ["/healthz", "/healthz", "/metrics", "/nope"]:
            try:
                urllib.request.urlopen(f"http://{im}{path}", timeout=2).read()
            except (urllib.error.URLError, OSError):
                pass
        ready = wait_for("Prometheus", lambda: urllib.request.urlopen(f"{prom}/-/ready", timeout=2).status == 200, 60)
        res.check(ready, "prometheus ready", f"see {tmp}/prometheus.log")
        t0 = time.time()

        def scraped():
            _, r = prom_query(prom, f'count_over_time(up{{job="instancemap"}}[{int(time.time() - t0) + 1}s])')
            v = r.get("data", {}).get("result", [])
            return bool(v) and int(v[0]["value"][1]) >= args.scrapes

        ok = wait_for(f"{args.scrapes} scrapes", scraped, 60)
        _, up = prom_query(prom, 'up{job="instancemap"}')
        upv = up.get("data", {}).get("result", [])
        res.check(ok and upv and upv[0]["value"][1] == "1", f"prometheus scraped instancemap {args.scrapes} times",
                  f"up = {upv}")

        for f, d in dashboards:
            values = dict(SUBST)
            values[DS_VAR] = "prometheus"
            for v in d["templating"]["list"]:
                if v.get("type") == "custom":
                    values[v["name"]] = v.get("current", {}).get("value") or v["options"][0]["value"]
                elif v.get("type") == "query":
                    q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                    m = re.match(r"^label_values\((.*),\s*(\w+)\)$", substitute(q, values))
                    got = []
                    if m:
                        st, r = http_json(f"{prom}/api/v1/series?" + urllib.parse.urlencode({"match[]": m.group(1)}))
                        got = sorted({s[m.group(2)] for s in r.get("data", []) if m.group(2) in s})
                    res.check(bool(got), f"variable {f} ${v['name']}", f"{q!r} found no value")
                    values[v["name"]] = got[0] if got else ""
            for ff, p, t in targets:
                if ff != f:
                    continue
                expr = substitute(t["expr"], values)
                what = f"query {f} #{p['id']} {p['title']!r} {t['refId']}"
                left = re.findall(r"\$\{?\w+", expr)
                if left:
                    res.check(False, what, f"unknown variables {left}")
                    continue
                st, r = prom_query(prom, expr)
                if r.get("status") != "success":
                    res.check(False, what, f"HTTP {st}: {r.get('error')} in {expr}")
                    continue
                series = r["data"]["result"]
                if not series:
                    res.check(False, what, f"no series for {expr}")
                    continue
                legend = re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", ""))
                missing = sorted({lb for s in series for lb in legend if lb not in s["metric"]})
                res.check(not missing, what, f"legend labels {missing} not on the series of {expr}")

        _, r = prom_query(prom, '{job="instancemap"}')
        bad = set()
        host = re.compile(r"^(?=.*[a-z])[a-z0-9-]+(\.[a-z0-9-]+)+\.?$", re.I)
        for s in r.get("data", {}).get("result", []):
            for k, v in s["metric"].items():
                if k in ("job", "instance", "__name__"):
                    continue
                if v.startswith("did:") or host.match(v):
                    bad.add(f"{s['metric']['__name__']}{{{k}={v!r}}}")
        n = len(r.get("data", {}).get("result", []))
        res.check(n > 0 and not bad, f"labels: no DID, handle or hostname in the {n} series scraped",
                  ", ".join(sorted(bad)) or "no series")
    finally:
        for name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if res.failed == 0:
            subprocess.run(["rm", "-rf", tmp])
        else:
            print(f"logs kept in {tmp}")
    print(f"{res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
