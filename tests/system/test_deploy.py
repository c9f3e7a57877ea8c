"""The deployment kit (deploy/): the files parse and say what the runbook needs, and a real
Prometheus scraping a real ``stress-runner serve`` accepts every dashboard query and alert
rule, gets data for the dashboard, and fires the breach alert."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml

from helpers import ROOT, book, free_port, position, require, start_serve

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "stress-runner.json"
RULES = DEPLOY / "prometheus" / "stress-runner.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "stress-runner.rules.test.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
K8S = DEPLOY / "k8s"
RUNBOOK_PANELS = ("Hourly Stress Breach Count", "Stress Test Runtime", "Symbols Tested per Run",
                  "Time Since Last Stress Test")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "${__rate_interval}": "1m", "$__interval": "15s",
                     "${__interval}": "15s", "$__range": "1h", "${__range}": "1h"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, Grafana's variables replaced by values."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every object in deploy/k8s by kind."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            objects[doc["kind"]] = doc
    return objects


# -- the files ---------------------------------------------------------------------------------

def test_every_deploy_file_parses():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml", ".json"))
    assert len(files) >= 9
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert all(doc for doc in yaml.safe_load_all(path.read_text())), path


def test_dashboard_has_the_runbook_panels_and_a_datasource_variable():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 39
    titles = [panel["title"] for panel in board["panels"]]
    assert set(RUNBOOK_PANELS) <= set(titles) and len(titles) == len(set(titles))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
    by_title = {panel["title"]: panel for panel in board["panels"]}
    for title, columns in (("Breach History", {"time", "value", "threshold"}),
                           ("Latest Run per Symbol", {"loss", "headroom"})):
        panel = by_title[title]
        assert panel["type"] == "table"
        assert all(t["format"] == "table" and t["instant"] for t in panel["targets"])
        organize = panel["transformations"][-1]["options"]["renameByName"]
        assert set(organize.values()) == columns
    steps = by_title["Time Since Last Stress Test"]["fieldConfig"]["defaults"]["thresholds"]
    assert {"color": "red", "value": 7200} in steps["steps"]
    runtime = by_title["Stress Test Runtime"]["fieldConfig"]["defaults"]
    assert {"color": "red", "value": 0.05} in runtime["thresholds"]["steps"]
    assert runtime["custom"]["thresholdsStyle"]["mode"] != "off"


def test_every_rule_is_annotated_and_unit_tested_both_ways():
    alerts = rules()
    urls = {rule["annotations"]["runbook_url"] for rule in alerts}
    assert len(urls) == 1 and urls.pop().startswith("https://")
    for rule in alerts:
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule
        assert rule["labels"]["severity"] in ("critical", "warning"), rule
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert cases == {rule["alert"]: {True, False} for rule in alerts}


def test_check_script_routes_every_alert_and_pages_breaches_once():
    """Every alert of the rules has a routing case in check.sh, critical ones page through
    Alertmanager except StressBreach and StressRunFailed, which the runner pages itself."""
    cases = {name: receiver for receiver, name in re.findall(
        r"^route (\S+) alertname=(\S+)", (DEPLOY / "check.sh").read_text(), re.M)}
    expected = {rule["alert"]: "pagerduty" if rule["labels"]["severity"] == "critical"
                else "team-channel" for rule in rules()}
    expected["StressBreach"] = expected["StressRunFailed"] = "team-channel"
    expected["StressKillSwitchUnconfirmed"] = "team-channel"  # the runner pages it itself
    assert {name: cases.get(name) for name in expected} == expected
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert {r["name"] for r in config["receivers"]} == {"pagerduty", "team-channel"}
    assert "routing_key" not in ALERTMANAGER.read_text().replace("routing_key_file", "")


def test_every_alert_names_its_runner_and_scenario():
    for rule in rules():
        expr = " ".join(rule["expr"].split())
        if rule["alert"] == "StressRunnerAbsent":  # no runner: nothing to name
            assert expr.startswith("absent(")
            continue
        groupings = re.findall(r"by \(([^)]*)\)", expr)
        assert groupings, rule["alert"]
        for grouping in groupings:
            assert {"job", "instance"} <= {g.strip() for g in grouping.split(",")}, rule["alert"]
        if "scenario" in expr or "breach" in expr:
            assert all("scenario" in g for g in groupings if "le" not in g), rule["alert"]


def test_k8s_deployment_is_one_hardened_replica_with_its_store_on_a_volume():
    objects = k8s_objects()
    deployment = objects["Deployment"]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:3] == ["serve", "--host", "0.0.0.0"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(container["resources"])
    annotations = deployment["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])

    env = {e["name"]: e for e in container["env"]}
    db_dir = str(PurePosixPath(env["STRESS_DB"]["value"]).parent)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts[db_dir]]["persistentVolumeClaim"]["claimName"]
    assert claim == objects["PersistentVolumeClaim"]["metadata"]["name"]

    configmap = objects["ConfigMap"]
    assert pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == \
        configmap["metadata"]["name"]
    assert set(configmap["data"]) == {"STRESS_ENABLED", "MARKET_HOURS_ONLY",
                                      "STRESS_MAX_SYMBOLS", "STRESS_MAX_RUNTIME_MS",
                                      "PD_EVENTS_URL", "STRESS_ALLOWED_HOSTS"}
    assert configmap["data"]["STRESS_ALLOWED_HOSTS"].split(",")[0] == \
        objects["Service"]["metadata"]["name"]
    example = objects["Secret"]
    for name in ("PD_ROUTING_KEY", "STRESS_API_TOKEN"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "stress-runner-secrets" and ref["key"] in example["stringData"]
        assert example["stringData"][ref["key"]].startswith("EXAMPLE-")
    # the example can be applied with the rest without replacing the real Secret
    assert example["metadata"]["name"] != "stress-runner-secrets"
    service = objects["Service"]["spec"]
    assert service["selector"].items() <= deployment["template"]["metadata"]["labels"].items()


def test_every_image_tag_is_the_packages_version():
    """The image the manifests run and the build commands tag (deploy files, our runbook) is
    the release being deployed."""
    from stress_plugin.version import __version__

    files = [DEPLOY / "Dockerfile", *DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"),
             ROOT / "docs" / "runbook.md"]
    tags = {(p.relative_to(ROOT).as_posix(), tag) for p in files
            for tag in re.findall(r"stress-runner:([\w.+-]+)", p.read_text())}
    assert {f for f, _ in tags} >= {"deploy/Dockerfile", "deploy/k8s/deployment.yaml",
                                    "deploy/k8s-ha/deployment.yaml", "docs/runbook.md"}
    assert {tag for _, tag in tags} == {__version__}, sorted(tags)


def test_dockerfile_installs_the_three_distributions_as_a_non_root_user():
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.count("\nFROM python:3.11-slim") == 1
    # with psycopg, so one image serves SQLite (one replica) and PostgreSQL (several)
    assert "pip install ./hookspecs ./scenario_packs/flash_crash '.[postgresql]'" in text
    assert re.search(r"^USER 10001", text, re.M)
    assert 'ENTRYPOINT ["stress-runner"]' in text
    assert 'CMD ["serve", "--host", "0.0.0.0"]' in text


def test_check_script_passes():
    require("promtool", "prometheus")
    require("amtool", "prometheus-alertmanager")
    assert os.access(DEPLOY / "check.sh", os.X_OK)
    out = subprocess.run([str(DEPLOY / "check.sh")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# -- a real Prometheus on a real service ---------------------------------------------------------

class Prometheus:
    """A throwaway Prometheus scraping one target every second and loading the rules."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "stress-runner",
                                "static_configs": [{"targets": [target]}]}],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log = (tmp_path / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_path}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def api(self, path: str, **params: str) -> Any:
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        body = reply.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), (expr, data)
        return data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]

    def wait(self, what: str, check: Any, timeout: float = 20) -> Any:
        """Poll ``check()`` until it is truthy; the Prometheus log on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if result := check():
                    return result
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.25)
        self.log.flush()
        log = Path(self.log.name).read_text()
        raise AssertionError(f"Prometheus: {what} not seen in {timeout} s\n{log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """``stress-runner serve`` on a breaching two-symbol book, no token (loopback POSTs)."""
    book_path = tmp_path / "book.yaml"
    book_path.write_text(yaml.safe_dump(book(
        position(quantity=6, var=3000), position("M2K", quantity=1, price=2300.0, spread=0.1))))
    port = free_port()
    proc = start_serve(port, {"STRESS_DB": str(tmp_path / "stress.db")}, book_path)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def scrapes(prometheus: Prometheus) -> int:
    result = prometheus.query('count_over_time(stress_runner_up{job="stress-runner"}[1m])')
    return int(float(result[0]["value"][1])) if result else 0


@pytest.mark.skipif(not Path(PROMETHEUS).exists(),
                    reason="Prometheus is not installed (Debian: apt-get install -y prometheus); "
                           "CI installs it")
def test_a_real_prometheus_runs_every_dashboard_query_and_rule(service: str, tmp_path: Path):
    base = f"http://{service}"
    first = httpx.post(f"{base}/api/v1/stress/run", timeout=30).json()
    assert first["breach_count"] == 2 and first["symbols_tested"] == 2

    exposed = {line.split("{")[0].split(" ")[0]
               for line in httpx.get(f"{base}/metrics").text.splitlines()
               if line and not line.startswith("#")}
    used = set()
    for expr in [expr for _, expr in panel_queries()] + [rule["expr"] for rule in rules()]:
        used |= set(re.findall(r"\bstress_[a-z_]+", expr))
    # every series is declared at start (labelled counters at 0), so none is missing
    assert used - exposed == set()

    prometheus = Prometheus(tmp_path, service)
    try:
        prometheus.wait("the target up", lambda: prometheus.query(
            'up{job="stress-runner"} == 1'))
        prometheus.wait("three scrapes", lambda: scrapes(prometheus) >= 3)
        # a second run while Prometheus watches, so rates and increases are not zero
        httpx.post(f"{base}/api/v1/stress/run", json={"symbols": ["MES"]}, timeout=30)
        seen = scrapes(prometheus)
        prometheus.wait("two more scrapes", lambda: scrapes(prometheus) >= seen + 2)

        for title, expr in panel_queries():
            assert prometheus.query(expr), f"panel {title!r}: no data for {expr}"
        for rule in rules():
            prometheus.query(rule["expr"])  # valid PromQL: status success, data or not

        def value(expr: str) -> float:
            return float(prometheus.query(expr)[0]["value"][1])

        by_title = {title: expr for title, expr in panel_queries()}
        assert value(by_title["Hourly Stress Breach Count"]) == 4  # MES, PORTFOLIO twice
        assert 0 <= value(by_title["Time Since Last Stress Test"]) < 60
        assert value("max(stress_symbols_tested)") == 1
        assert value("max(stress_halted)") == 1
        assert value("min(stress_headroom_ratio)") < 1
        p99 = 'histogram_quantile(0.99, sum by (le) (rate(stress_runtime_seconds_bucket[1h])))'
        assert 0 < value(p99) <= 0.1  # a number, not NaN: the second run is in the window

        def groups_ok() -> bool:
            groups = prometheus.api("rules")["groups"]
            loaded = [r for g in groups for r in g["rules"]]
            return len(loaded) == len(rules()) and all(r["health"] == "ok" for r in loaded)

        prometheus.wait("every rule evaluated with health ok", groups_ok)

        def firing(name: str) -> list[dict[str, Any]]:
            return [a for a in prometheus.api("alerts")["alerts"]
                    if a["labels"]["alertname"] == name and a["state"] == "firing"]

        (breach,) = prometheus.wait("StressBreach firing", lambda: firing("StressBreach"))
        assert breach["labels"]["scenario"] == "flash_crash_lite"
        assert breach["labels"]["instance"] == service
        history = prometheus.query(by_title["Breach History"])
        assert {(r["metric"]["symbol"], r["metric"]["limit"]) for r in history} == {
            ("MES", "max_drawdown_pct"), ("PORTFOLIO", "max_drawdown_pct")}
        assert not firing("StressRunnerDown") and not firing("StressRunMissing")
    finally:
        prometheus.stop()


# -- a real Alertmanager with the shipped routes and inhibit rules -------------------------------

class Receiver:
    """An HTTP server standing in for PagerDuty and the team channel: webhook bodies by path."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[tuple[str, dict[str, Any]]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, path: str) -> set[tuple[str, str]]:
        return {(a["labels"]["alertname"], a["labels"].get("instance", ""))
                for p, body in self.received if p == path for a in body["alerts"]}


def test_a_real_alertmanager_pages_once_per_incident(tmp_path: Path):
    """The shipped routes and inhibit rules, with each receiver swapped for a webhook to a
    local server and the group waits shortened: a breach, a failed run or an unconfirmed
    KILL_SWITCH (which the runner pages itself) reaches the team channel only, a
    down runner pages once for itself and not for its missing runs or stuck deliveries,
    another runner's missing runs still page, stuck deliveries page once per runner and sink,
    and the breach hides the halt it caused."""
    binary = require("prometheus-alertmanager", "prometheus-alertmanager")
    receiver = Receiver()
    config = yaml.safe_load(ALERTMANAGER.read_text())
    config["receivers"] = [{"name": r["name"], "webhook_configs": [
        {"url": f"{receiver.url}/{r['name']}", "send_resolved": False}]}
        for r in config["receivers"]]
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s")
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen([binary, f"--config.file={path}", f"--storage.path={tmp_path / 'am'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/api/v2"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/status", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "alertmanager down"
            time.sleep(0.2)

        def alert(name: str, severity: str, instance: str, **labels: str) -> dict[str, Any]:
            return {"labels": {"alertname": name, "severity": severity, "job": "stress-runner",
                               "instance": instance, "service": "stress-runner", **labels},
                    "annotations": {"summary": name}}

        sent = httpx.post(f"{base}/alerts", json=[
            alert("StressBreach", "critical", "pod:8000", scenario="flash_crash_lite"),
            alert("StressRunFailed", "critical", "pod4:8000", scenario="flash_crash_lite",
                  reason="book_unavailable"),
            alert("StressTradingHalted", "warning", "pod:8000"),
            alert("StressRunnerDown", "critical", "pod2:8000"),
            alert("StressRunMissing", "critical", "pod2:8000"),
            alert("StressRunMissing", "critical", "pod3:8000"),
            # stuck deliveries: one page per runner and sink; a down runner's are inhibited
            alert("StressKillSwitchUnconfirmed", "critical", "pod6:8000"),
            alert("StressAlertsStuckInOutbox", "critical", "pod5:8000", sink="pagerduty"),
            alert("StressAlertsStuckInOutbox", "critical", "pod5:8000", sink="webhook"),
            alert("StressAlertsStuckInOutbox", "critical", "pod2:8000", sink="pagerduty"),
        ], timeout=5)
        assert sent.status_code == 200, sent.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
                len(receiver.alerts("/pagerduty")) < 3 or not receiver.alerts("/team-channel")):
            time.sleep(0.2)
        time.sleep(3)  # a few more group intervals: anything wrongly let through shows up
        assert receiver.alerts("/pagerduty") == {("StressRunnerDown", "pod2:8000"),
                                                 ("StressRunMissing", "pod3:8000"),
                                                 ("StressAlertsStuckInOutbox", "pod5:8000")}
        stuck = [body for path, body in receiver.received if path == "/pagerduty"
                 and body["groupLabels"].get("alertname") == "StressAlertsStuckInOutbox"]
        assert sorted(body["groupLabels"]["sink"] for body in stuck) == ["pagerduty", "webhook"]
        assert all(len(body["alerts"]) == 1 for body in stuck)
        assert receiver.alerts("/team-channel") == {("StressBreach", "pod:8000"),
                                                    ("StressRunFailed", "pod4:8000"),
                                                    ("StressKillSwitchUnconfirmed", "pod6:8000")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        receiver.server.shutdown()


def test_k8s_ha_variant_is_two_replicas_on_postgresql_with_no_volume():
    objects = {doc["kind"]: doc for path in sorted((DEPLOY / "k8s-ha").glob("*.yaml"))
               for doc in yaml.safe_load_all(path.read_text())}
    deployment = objects["Deployment"]["spec"]
    assert deployment["replicas"] == 2 and deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    labels = deployment["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STRESS_DB"]["valueFrom"]["secretKeyRef"] == {"name": "stress-runner-secrets",
                                                             "key": "STRESS_DB"}
    assert env["STRESS_REPLICAS"]["value"] == str(deployment["replicas"])
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] == 1 and pdb["selector"]["matchLabels"].items() <= labels.items()
    example = objects["Secret"]
    assert example["metadata"]["name"] != "stress-runner-secrets"
    assert "EXAMPLE-" in example["stringData"]["STRESS_DB"]
    single = k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"] == single["securityContext"]
