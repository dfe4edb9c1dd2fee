"""The web UI as a user meets it: `dagster dev` from the repo root on a free loopback port,
the etl job launched through the GraphQL API (dagster-graphql's client), every asset check
read back as SUCCEEDED, and the global asset graph opened in headless Chromium. The
screenshot refreshes docs/asset-graph.png when DESAFIO_UPDATE_SCREENSHOT=1 (make screenshot),
so an ordinary test run leaves the work tree clean."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from desafio_dagster.assets.source_checks import RULES
from desafio_dagster_tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = (REPO / "docs" if os.environ.get("DESAFIO_UPDATE_SCREENSHOT") else Path(tempfile.gettempdir())) / "asset-graph.png"
CHROMIUM = os.environ.get("DESAFIO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Nothing may be downloaded or phoned home: the system Chromium, with its background services off.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ASSETS = ["raw_clients", "raw_accounts", "raw_cards", "raw_movements", "movements_csv"]
MOVEMENTS_CHECKS = {"total_rows_match_snapshot", "client_totals_match_snapshot", "one_file_per_client",
                    "headers_match_contract", "card_numbers_masked", "source_unchanged_since_export"}
EXPECTED_CHECKS = {(rule.asset, rule.name) for rule in RULES} | {("movements_csv", name) for name in MOVEMENTS_CHECKS}
# dagster-graphql's client calls gql with arguments gql 4 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning")

RUN_CONFIG = {"ops": {"source_database": {"config": {"clients": 30, "movements_per_card": [0, 5]}}}}

WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
CHECKS_QUERY = """{ assetNodes { assetKey { path } groupName assetChecksOrError { __typename
  ... on AssetChecks { checks { name executionForLatestMaterialization { runId status } } } } } }"""


class Webserver:
    def __init__(self, port: int, log: Path):
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def graphql(self, query: str) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def _stop(process: subprocess.Popen) -> None:
    """Stop the whole process group (webserver, daemon, code server, run workers, Spark's JVM)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:  # whatever is left in the group, the dev process included
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture
def webserver(database_url, env_home, tmp_path):
    """`dagster dev` in the repo root, with a temporary DAGSTER_HOME and the test's source database."""
    home = tmp_path / "dagster-home"
    home.mkdir()
    # No telemetry, and no "join the community" dialog over the page.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    port = free_port()
    log = tmp_path / "dagster-dev.log"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Webserver(port, log)
    try:
        deadline = time.monotonic() + 120
        while True:  # the webserver answers, then the code location is loaded
            assert process.poll() is None, f"dagster dev exited with {process.returncode}:\n{server.tail()}"
            assert time.monotonic() < deadline, f"dagster dev did not come up in 120 s:\n{server.tail()}"
            try:
                if requests.get(f"{server.url}/server_info", timeout=2).ok:
                    entries = server.graphql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
                    if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                        errors = [e["locationOrLoadError"] for e in entries
                                  if e["locationOrLoadError"]["__typename"] == "PythonError"]
                        assert not errors, errors
                        break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)


def latest_check_results(server: Webserver) -> dict[tuple[str, str], dict | None]:
    results = {}
    for node in server.graphql(CHECKS_QUERY)["assetNodes"]:
        asset = "/".join(node["assetKey"]["path"])
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", checks
        for check in checks["checks"]:
            results[(asset, check["name"])] = check["executionForLatestMaterialization"]
    return results


def screenshot_asset_graph(server: Webserver, groups: list[str]) -> None:
    """Open the global asset lineage with every group expanded, zoomed in far enough that the
    nodes show their details (status, asset checks), and save the screenshot."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install chromium (or set DESAFIO_CHROMIUM)"
    expanded = ",".join(f"global@global:{group}" for group in groups)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script("window.localStorage.setItem('dagster-nav-collapsed', 'true')")
            page = context.new_page()
            page.goto(f"{server.url}/asset-groups?{urlencode({'expanded': expanded})}")
            for name in ASSETS:
                page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=60_000)
            assert page.get_by_text("Global asset lineage").is_visible()

            # The graph is fitted with the asset sidebar open; hide the sidebar, centre the graph,
            # and zoom in (0.05 a click) until the nodes switch from names only to details (scale >= 0.6).
            page.get_by_role("button").filter(has=page.locator("[aria-label=panel_show_right]")).first.click()
            graph = page.locator("svg[class*=svgContainer]")
            layer, canvas = graph.locator("xpath=.."), graph.locator("xpath=../..")
            view = canvas.bounding_box()
            vx, vy = view["x"] + view["width"] / 2, view["y"] + view["height"] / 2

            def scale() -> float:
                return float(re.search(r"matrix\(([0-9.]+)", layer.get_attribute("style")).group(1))

            def centre() -> None:
                for _ in range(5):
                    box = graph.bounding_box()
                    dx, dy = box["x"] + box["width"] / 2 - vx, box["y"] + box["height"] / 2 - vy
                    if abs(dx) < 4 and abs(dy) < 4:
                        return
                    page.mouse.move(vx, vy)
                    page.mouse.wheel(dx, dy)  # a plain wheel pans the graph
                    page.wait_for_timeout(200)

            page.wait_for_timeout(300)
            centre()
            for _ in range(10):
                if scale() >= 0.6:
                    break
                page.locator("button:has([aria-label=zoom_in])").click()
                page.wait_for_timeout(300)
            centre()

            for name in ASSETS:
                node = page.get_by_text(name, exact=True)
                expect(node).to_have_count(1)
                expect(node).to_be_visible()
                box = node.bounding_box()
                assert view["x"] <= box["x"] and box["x"] + box["width"] <= view["x"] + view["width"], name
                assert view["y"] <= box["y"] and box["y"] + box["height"] <= view["y"] + view["height"], name
            # Each node's summary of its checks, e.g. "6 / 6 Passed" on raw_cards.
            per_asset: dict[str, int] = {}
            for asset, _ in EXPECTED_CHECKS:
                per_asset[asset] = per_asset.get(asset, 0) + 1
            for count in set(per_asset.values()):
                expect(page.get_by_text(f"{count} / {count} Passed", exact=True)).to_have_count(
                    sum(1 for n in per_asset.values() if n == count), timeout=30_000)
            expect(page.get_by_text("Materialized", exact=True)).to_have_count(len(ASSETS))
            page.mouse.move(view["x"] + 20, view["y"] + 20)  # no hover highlight, no focused button
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.wait_for_timeout(500)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()


def test_etl_from_the_graphql_api_and_the_asset_graph_in_a_browser(webserver, env_home):
    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver.port)
    run_id = client.submit_job_execution("etl", run_config=RUN_CONFIG)
    deadline = time.monotonic() + 180
    while (status := client.get_run_status(run_id)) not in (
        DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED
    ):
        assert time.monotonic() < deadline, f"run {run_id} still {status} after 180 s:\n{webserver.tail()}"
        time.sleep(1)
    assert status == DagsterRunStatus.SUCCESS, webserver.tail()

    results = latest_check_results(webserver)
    assert set(results) == EXPECTED_CHECKS
    assert len(results) == 17 + 6
    # Each check's latest execution is this run's, and it passed.
    assert {key: r for key, r in results.items() if r != {"runId": run_id, "status": "SUCCEEDED"}} == {}

    published = sorted(p.name for p in (env_home / "data" / "movements_csv").iterdir())
    assert len(published) == 30 + 2 and {"_index.csv", "_snapshot.csv"} <= set(published)

    groups = sorted({node["groupName"] for node in webserver.graphql(CHECKS_QUERY)["assetNodes"]})
    screenshot_asset_graph(webserver, groups)
    assert SCREENSHOT.stat().st_size > 10_000
