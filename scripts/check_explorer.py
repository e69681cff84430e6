"""The explorer in a real browser (see scripts/check-explorer.sh).

The database, built with the CLI: `backfill-plc` of a few accounts on a
PDS of ours on loopback (it answers describeServer with a contact, _health
and listRepos), `crawl-hosts --allow-loopback` of that PDS alone, then what
check-api builds (`replay` of the reference-PDS frames, `backfill-plc` of
the PLC export fixture and of a synthetic export), then `recluster`.
`instancemap serve` on it, and Debian's Chromium driven by Selenium:

- the search box finds an account by DID, by handle and by at:// URI, and
  leads a host name to its instance; the card shows the host, the instance
  and the contact; an unknown DID and a nonsense query show their errors;
- the instance page shows its hosts and a growth chart with one point per
  day of the API's getGrowth; paging the instance list reaches the last
  page with every instance seen once; the flows page draws its matrix;
- with scripts off the card and the instance page say the same; with them
  on the copy buttons appear and "/" focuses the search box;
- at phone width no page scrolls sideways; no page breaks its own
  Content-Security-Policy; axe-core finds no serious or critical
  accessibility violation on any page;
- screenshots at desktop and phone width go to target/explorer/.

Loopback only. Prints "N passed, M failed" last; non-zero on failure.
"""

import argparse
import http.server
import json
import os
import shutil
import socketserver
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_api  # noqa: E402  (the database builder and the server wrapper)

ROOT = check_api.ROOT
CONTACT = "abuse@loopback-pds.test"
KEY = check_api.KEY


class FakePds(http.server.BaseHTTPRequestHandler):
    """A PDS's public face: describeServer (with a contact), _health and
    listRepos of the accounts given it."""

    dids = []

    def do_GET(self):  # noqa: N802 - the standard library's name
        path = urllib.parse.urlparse(self.path).path
        if path == "/xrpc/com.atproto.server.describeServer":
            body = {"did": "did:web:loopback-pds.test", "availableUserDomains": [".loopback-pds.test"],
                    "inviteCodeRequired": True, "contact": {"email": CONTACT},
                    "links": {"privacyPolicy": "https://loopback-pds.test/privacy"}}
        elif path == "/xrpc/_health":
            body = {"version": "0.4.999-check"}
        elif path == "/xrpc/com.atproto.sync.listRepos":
            body = {"repos": [{"did": d, "head": "bafyreib2rxk3rh6kzwq", "rev": "3l3qo2vuowo2b", "active": True}
                              for d in self.dids]}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_):
        pass


def loopback_export(path, endpoint, n):
    """Legacy-form export lines (no seq, so the sequence-form exports
    loaded after it are not taken for already applied): n accounts on
    `endpoint`, the first of which moves there from a synthetic host."""
    dids = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            did = "did:plc:" + check_api.b32(f"loopback{i}", 24)
            dids.append(did)
            op = {"type": "plc_operation", "prev": None, "sig": "x",
                  "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": endpoint}},
                  "alsoKnownAs": [f"at://member{i}.loopback-pds.test"], "rotationKeys": [KEY],
                  "verificationMethods": {"atproto": KEY}}
            f.write(json.dumps({"did": did, "cid": "bafyrei" + check_api.b32(f"lb{i}", 52),
                                "createdAt": f"2024-06-{i + 1:02d}T00:00:00.000Z", "operation": op,
                                "nullified": False}) + "\n")
    return dids


def build_db(binary, work, accounts, endpoint):
    db = os.path.join(work, "db")
    quiet = ["env", "RUST_LOG=error"]
    lb = os.path.join(work, "plc-loopback.jsonl")
    dids = loopback_export(lb, endpoint, 6)
    FakePds.dids = dids  # listRepos names them at the crawl
    print(f"# {check_api.run(quiet + [binary, 'backfill-plc', '--db', db, '--file', lb], 'backfill-plc (loopback)')}")
    print(f"# {check_api.run(quiet + [binary, 'crawl-hosts', '--db', db, '--no-list-hosts', '--allow-loopback', '--no-contacts'], 'crawl-hosts')}")
    fx = check_api.FIXTURES
    print(f"# {check_api.run(quiet + [binary, 'replay', '--db', db, os.path.join(fx, 'reference-pds.frames')], 'replay')}")
    print(f"# {check_api.run(quiet + [binary, 'backfill-plc', '--db', db, '--file', os.path.join(fx, 'plc', 'export_seq_after0_count2.jsonl')], 'backfill-plc (fixture)')}")
    export = os.path.join(work, "plc-synthetic.jsonl")
    print(f"# synthetic PLC export: {check_api.synthetic_export(export, accounts)} lines")
    print(f"# {check_api.run(quiet + [binary, 'backfill-plc', '--db', db, '--file', export], 'backfill-plc (synthetic)')}")
    print(f"# {check_api.run(quiet + [binary, 'recluster', '--db', db], 'recluster')}")
    return db, dids


def api(base, method, **params):
    q = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{base}/xrpc/dev.instancemap.{method}?{q}", timeout=30) as r:
        return json.load(r)


def fetch(base, path):
    """(status, body) without a browser: the HTML as a client with scripts off gets it."""
    try:
        with urllib.request.urlopen(base + path, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def browser(width, height, scripts=True):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    # the closed network: no background connections, no first-run pages
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--window-size={width},{height}", "--hide-scrollbars"]:
        o.add_argument(a)
    o.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}")
    if not scripts:
        o.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=o, service=Service("/usr/bin/chromedriver"))


def search(d, base, q):
    from selenium.webdriver.common.by import By
    d.get(base + "/")
    box = d.find_element(By.ID, "q")
    box.clear()
    box.send_keys(q)
    box.submit()
    return d


def text(d):
    from selenium.webdriver.common.by import By
    return d.find_element(By.TAG_NAME, "body").text


def h1(d):
    from selenium.webdriver.common.by import By
    return d.find_element(By.TAG_NAME, "h1").text


def axe(d, axe_js):
    d.execute_script(axe_js)
    res = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations), e => done(String(e)));")
    if isinstance(res, str):
        return [{"id": "axe-failed", "impact": "critical", "help": res, "nodes": []}]
    return [v for v in res if v.get("impact") in ("serious", "critical")]


def full_shot(d, path):
    """A screenshot of the whole page, not only the window."""
    import base64
    m = d.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = m.get("cssContentSize") or m["contentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
    shot = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))


def csp_errors(d):
    try:
        logs = d.get_log("browser")
    except Exception:  # noqa: BLE001 - a driver without logs: nothing to say
        return []
    return [e["message"] for e in logs if "Content Security Policy" in e.get("message", "")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--axe", required=True, help="axe.min.js")
    ap.add_argument("--accounts", type=int, default=3000)
    ap.add_argument("--shots", default=os.path.join(ROOT, "target", "explorer"))
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    r = check_api.Results()
    work = tempfile.mkdtemp(prefix="check-explorer-")
    os.makedirs(a.shots, exist_ok=True)
    with open(a.axe, encoding="utf-8") as f:
        axe_js = f.read()
    pds = socketserver.ThreadingTCPServer(("127.0.0.1", 0), FakePds)
    pds.daemon_threads = True
    endpoint = f"http://127.0.0.1:{pds.server_address[1]}"
    threading.Thread(target=pds.serve_forever, daemon=True).start()
    srv, drivers = None, []
    try:
        db, dids = build_db(a.bin, work, a.accounts, endpoint)
        srv = check_api.Server(a.bin, db, work)
        base = srv.base
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        d = browser(1280, 1000)
        drivers.append(d)

        # the network at a glance
        d.get(base + "/")
        r.check(h1(d) == "The network at a glance", "/ is the network at a glance", h1(d))
        bars = d.find_elements(By.CSS_SELECTOR, "svg.bars rect.bar")
        r.check(len(bars) == 10, "/ draws the 10 largest instances", len(bars))
        r.check(len(d.find_elements(By.CSS_SELECTOR, "svg.lorenz polyline.curve")) == 1, "/ draws a Lorenz curve")
        summary = api(base, "getSummary")
        top1 = check_api_pct(summary["concentration"]["instances"]["top1_share"])
        r.check(top1 in text(d), "/ states the largest instance's share as getSummary does", top1)
        r.check("last operation loaded" in text(d), "/ says how fresh the PLC load is", text(d)[-400:])

        # the card, by DID, by handle, by at:// URI
        did = dids[0]
        card = search(d, base, did)
        body = text(card)
        r.check(h1(d) == "Who is responsible for member0.loopback-pds.test", "search by DID shows the card", h1(d))
        r.check(endpoint in body, "the card names the account's host", endpoint)
        lookup = api(base, "lookup", subject=did)
        inst_name = lookup["instance"]["name"]
        r.check(inst_name in body, "the card names the account's instance", inst_name)
        r.check(CONTACT in body, "the card shows the host's contact", CONTACT)
        links = [e.get_attribute("href") for e in d.find_elements(By.CSS_SELECTOR, "a[href^='mailto:']")]
        r.check(f"mailto:{CONTACT}" in links, "the contact is a mail link", links)
        copy = d.find_elements(By.CSS_SELECTOR, "button.copy")
        r.check(copy and all(b.is_displayed() for b in copy), "with scripts on the copy buttons show", len(copy))
        full_shot(d, os.path.join(a.shots, "card-desktop.png"))
        search(d, base, "member0.loopback-pds.test")
        r.check(did in text(d), "search by handle finds the same account", h1(d))
        search(d, base, f"at://{did}/app.bsky.feed.post/3l3qo2vuowo2b")
        r.check(did in text(d) and "app.bsky.feed.post/3l3qo2vuowo2b" in text(d),
                "search by at:// URI finds the account and names the record", h1(d))
        # a host leads to its instance
        search(d, base, endpoint.removeprefix("http://"))
        r.check(d.current_url.startswith(base + "/instance/inst_"), "search by host leads to its instance", d.current_url)
        # errors in words
        search(d, base, "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz")
        r.check(h1(d) == "This account is not known", "an unknown DID says so", h1(d))
        full_shot(d, os.path.join(a.shots, "unknown-desktop.png"))
        search(d, base, "not a subject at all")
        r.check(h1(d) == "That cannot be looked up", "a query that is no subject says so", h1(d))

        # the instance page: hosts and growth
        big = api(base, "listInstances", limit=1)["instances"][0]
        d.get(f"{base}/instance/{big['id']}")
        r.check(h1(d) == big["name"], "the instance page is titled with its name", h1(d))
        hosts = api(base, "listHosts", instance=big["id"])["hosts"]
        shown = {e.text for e in d.find_elements(By.CSS_SELECTOR, "section[aria-labelledby=hosts] tbody td:first-child")}
        r.check(shown == {h["host"] for h in hosts}, "the instance page lists its hosts", f"{len(shown)} of {len(hosts)}")
        days, cursor = [], None
        while True:
            g = api(base, "getGrowth", id=big["id"], limit=1000, **({"cursor": cursor} if cursor else {}))
            days += g["days"]
            cursor = g.get("cursor")
            if not cursor:
                break
        points = d.find_elements(By.CSS_SELECTOR, "svg.growth circle.point")
        r.check(len(points) == len(days) > 1, "the growth chart has a point per day of getGrowth", f"{len(points)} vs {len(days)}")
        full_shot(d, os.path.join(a.shots, "instance-desktop.png"))

        # the list, paged to the end
        total = api(base, "listInstances", limit=1)["total"]
        d.get(base + "/instances?limit=10")
        seen, pages = [], 0
        while True:
            pages += 1
            seen += [e.text for e in d.find_elements(By.CSS_SELECTOR, "table.list tbody td:nth-child(2)")]
            nxt = d.find_elements(By.CSS_SELECTOR, "nav.pager a[rel=next]")
            if not nxt or pages > 100:
                break
            nxt[0].click()
        r.check(len(seen) == total and pages == (total + 9) // 10,
                "paging the instance list reaches the last page, every instance once",
                f"{len(seen)} rows of {total} on {pages} pages")
        d.get(base + "/instances")
        full_shot(d, os.path.join(a.shots, "instances-desktop.png"))
        d.get(base + "/instances?sort=growth&hasDeclaration=false")
        r.check("30-day growth ↓" in text(d), "the list sorts by growth")

        # flows
        d.get(base + "/flows?from=2024-01-01")
        cells = d.find_elements(By.CSS_SELECTOR, "svg.heatmap rect.cell")
        r.check(len(cells) > 4, "the flows page draws its matrix", len(cells))
        full_shot(d, os.path.join(a.shots, "flows-desktop.png"))

        # the keyboard: "/" focuses the search box
        d.get(base + "/instances")
        d.find_element(By.TAG_NAME, "body").send_keys("/")
        r.check(d.switch_to.active_element.get_attribute("id") == "q", "'/' focuses the search box")
        d.get(base + "/")
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        r.check("skip" in (d.switch_to.active_element.get_attribute("class") or ""), "the first Tab reaches the skip link")

        # screenshots, CSP and accessibility, page by page
        pages_to_check = {"home": "/", "card": "/?" + urllib.parse.urlencode({"q": did}),
                          "instance": f"/instance/{big['id']}", "instances": "/instances",
                          "flows": "/flows?from=2024-01-01", "unknown": "/?q=did:plc:zzzzzzzzzzzzzzzzzzzzzzzz"}
        d.get(base + "/")
        full_shot(d, os.path.join(a.shots, "home-desktop.png"))
        for name, path in pages_to_check.items():
            d.get(base + path)
            bad = csp_errors(d)
            r.check(not bad, f"{name}: no Content-Security-Policy violation", bad[:2])
            v = axe(d, axe_js)
            r.check(not v, f"{name}: axe-core finds no serious or critical violation",
                    [(x["id"], x["impact"], x["help"], [n.get("target") for n in x["nodes"][:3]]) for x in v])
        # the dark scheme: the same checks of contrast
        d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                          {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        for name in ["home", "card", "instance"]:
            d.get(base + pages_to_check[name])
            v = axe(d, axe_js)
            r.check(not v, f"{name} in the dark scheme: axe-core finds no serious or critical violation",
                    [(x["id"], x["impact"], x["help"], [n.get("target") for n in x["nodes"][:3]]) for x in v])
            full_shot(d, os.path.join(a.shots, f"{name}-dark.png"))
        phone = browser(390, 844)
        drivers.append(phone)
        # a window is at least 500 px wide headless: the phone's viewport
        # is emulated (390 CSS px, as a common phone's)
        phone.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                              {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        for name, path in pages_to_check.items():
            phone.get(base + path)
            wide = phone.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            r.check(wide[1] == 390 and wide[0] <= wide[1] + 1, f"{name}: nothing scrolls sideways at phone width (390 px)", wide)
            full_shot(phone, os.path.join(a.shots, f"{name}-phone.png"))

        # scripts off: the card and the instance page are whole
        off = browser(1280, 1000, scripts=False)
        drivers.append(off)
        off.get(base + "/?" + urllib.parse.urlencode({"q": did}))
        body = text(off)
        r.check(endpoint in body and CONTACT in body and inst_name in body,
                "with scripts off the card shows host, instance and contact")
        r.check(not any(b.is_displayed() for b in off.find_elements(By.CSS_SELECTOR, "button.copy")),
                "with scripts off no copy button that cannot work is shown")
        off.get(f"{base}/instance/{big['id']}")
        r.check(len(off.find_elements(By.CSS_SELECTOR, "svg.growth circle.point")) == len(days),
                "with scripts off the instance page draws its growth chart")
        s, html = fetch(base, "/?q=did:plc:zzzzzzzzzzzzzzzzzzzzzzzz")
        r.check(s == 404 and "This account is not known" in html, "an unknown DID is a 404 page in words", s)
        r.check(srv.proc.poll() is None, "serve still running after the browser checks")
        with open(srv.log.name, encoding="utf-8") as f:
            log = f.read()
        r.check(f"the explorer is at {base}/" in log, "serve prints the explorer's address", log[-300:])
    except (Exception, SystemExit) as e:  # noqa: BLE001 - counted, then the total is printed
        r.check(False, "check-explorer ran to the end", repr(e))
    finally:
        for d in drivers:
            try:
                d.quit()
            except Exception:  # noqa: BLE001
                pass
        if srv:
            srv.stop()
        pds.shutdown()
        if a.keep or r.failed:
            print(f"# work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"# screenshots: {a.shots}")
    print(f"{r.passed} passed, {r.failed} failed")
    sys.exit(1 if r.failed else 0)


def check_api_pct(x):
    """A share as the explorer writes it."""
    if 0 < x < 0.001:
        return "<0.1%"
    return f"{x * 100:.1f}%"


if __name__ == "__main__":
    main()
