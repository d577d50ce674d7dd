"""The dashboard in a real headless Chromium (Debian's, through its chromedriver, driven by Selenium), served by
`portico dashboard` with the lab's kubeconfig and the lab's Prometheus: the overview lists the lab's VIPs with their
states, a VIP's page shows its backends with their health, and a backend falling sick changes that page without a
reload. Each page's screenshot goes to docs/ (the README shows the overview)."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeDriver
from selenium.webdriver.remote.webdriver import WebDriver

from portico.dev import prometheus
from tests.e2e.conftest import PORTICO, Lab, wait_for
from tests.e2e.manifests import documents, echo_deployment, lb_service
from tests.e2e.test_health import signal_pod

NS = "dash-e2e"
PORT = 9481
URL = f"http://127.0.0.1:{PORT}/"
DOCS = Path(__file__).parents[2] / "docs"
SETUP = textwrap.dedent(f"""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: dash}}
    spec: {{addresses: [198.18.0.184/30], autoAssign: false}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: L2Advertisement
    metadata: {{name: dash}}
    spec: {{ipPools: [dash]}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: TrafficPolicy
    metadata: {{name: web, namespace: {NS}}}
    spec:
      targetRefs: [{{kind: Service, name: web}}]
      healthCheck: {{type: HTTP, interval: 500ms, timeout: 250ms, http: {{path: /healthz}}}}
    """) + documents(echo_deployment("web", NS, replicas=2),
                     lb_service("web", NS, "web", {"portico.io/ip-pool": "dash"}),
                     lb_service("stray", NS, "web", {"portico.io/load-balancer-ips": "198.18.202.1"}))


@pytest.fixture(scope="module")
def dashboard(lab: Lab) -> Iterator[str]:
    lab.kubectl("create", "namespace", NS)
    lab.kubectl("apply", "-f", "-", stdin=SETUP)
    server = subprocess.Popen([PORTICO, "dashboard", "--port", str(PORT), "--prometheus", prometheus.url()],
                              env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _answers(URL), 30, "the dashboard serving")
        yield URL
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        lab.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=60s")
        lab.kubectl("delete", "l2advertisement,ippool", "dash", "--ignore-not-found")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=ChromeDriver(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def cell(driver: WebDriver, css: str) -> str | None:
    """The text of the first element matching `css`, read in the page in one step (the page redraws itself
    whenever the cluster changes: an element found first and read after may be gone)."""
    text = driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                                 css)
    return None if text is None else str(text)


def test_the_overview_lists_the_lab_vips_with_their_states(dashboard: str, browser: WebDriver) -> None:
    browser.get(dashboard + "#/")
    wait_for(lambda: cell(browser, f'tr[data-vip="{NS}/web"] td.state') == "Serving", 90, "web Serving")
    assert cell(browser, f'tr[data-vip="{NS}/stray"] td.state') == "Pending"
    assert "RequestedIPNotInAnyPool" in (cell(browser, f'tr[data-vip="{NS}/stray"]') or "")
    assert "dash" in (cell(browser, '[data-testid="pools"] tr[data-pool="dash"]') or "")
    states = cell(browser, '[data-testid="states"]') or ""
    assert "Serving:" in states and "Pending:" in states
    browser.save_screenshot(str(DOCS / "dashboard-overview.png"))


def test_a_vip_page_shows_its_backends_and_follows_one_falling_sick_without_a_reload(
        lab: Lab, dashboard: str, browser: WebDriver) -> None:
    browser.get(dashboard + f"#/vip/service/{NS}/web")

    def health() -> dict[str, str]:
        return dict(browser.execute_script("""
            const out = {};
            for (const row of document.querySelectorAll('[data-testid="endpoints"] tbody tr'))
              out[row.dataset.endpoint] = row.querySelector('[data-testid="health"]').innerText;
            return out;"""))
    wait_for(lambda: list(health().values()) == ["up", "up"], 90, "both backends up")
    assert cell(browser, '[data-testid="announcers"]') in ("node-1", "node-2")
    vip = lab.get("service", "web", "-n", NS)["status"]["loadBalancer"]["ingress"][0]["ip"]
    lab.exec_in("client", "sh", "-c", f"for i in $(seq 300); do curl -s -o /dev/null http://{vip}/; sleep 0.03; "
                "done")  # some traffic: a graph with a line in it
    time.sleep(6)  # Prometheus scrapes every 5 s
    browser.save_screenshot(str(DOCS / "dashboard-vip.png"))

    browser.execute_script("window.portico_marker = 'same page';")
    pods = {p["status"]["podIP"]: p["metadata"]["name"] for p in lab.get("pods", "-n", NS, "-l", "app=web")["items"]}
    victim_ip = sorted(pods)[0]
    signal_pod(lab, pods[victim_ip], signal.SIGUSR1, namespace=NS)
    wait_for(lambda: health().get(victim_ip) == "down", 60, f"{victim_ip} shown down")
    assert browser.execute_script("return window.portico_marker") == "same page"  # no reload: the page followed
    assert cell(browser, '[data-testid="state"]') == "Degraded"


def test_the_nodes_page_shows_every_agent(dashboard: str, browser: WebDriver) -> None:
    browser.get(dashboard + "#/nodes")
    wait_for(lambda: cell(browser, 'tr[data-node="node-2"]'), 30, "node rows")
    for node in ("node-1", "node-2"):
        assert "Ready" in (cell(browser, f'tr[data-node="{node}"]') or "")
    browser.save_screenshot(str(DOCS / "dashboard-nodes.png"))


def test_the_dashboard_is_read_only(dashboard: str) -> None:
    assert httpx.post(dashboard + "api/overview", timeout=5).status_code == 405
    answer = httpx.get(dashboard + "api/overview", timeout=5)
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert httpx.get(dashboard + f"api/vip/service/{NS}/nope", timeout=5).status_code == 404
