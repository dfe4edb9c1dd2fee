"""The web UI as a user meets it: `dagster dev` from the repo root on a free loopback port,
the etl job launched through the GraphQL API (dagster-graphql's client), every asset check
read back as SUCCEEDED, the column schemas, code versions, metadata tables, jobs, schedule and
automation sensor read back as the UI gets them, and the global asset graph and movements_csv's
page opened in headless Chromium. The screenshots refresh docs/asset-graph.png and
docs/asset-movements_csv.png when DESAFIO_UPDATE_SCREENSHOT=1 (make screenshot), so an ordinary
test run leaves the work tree clean."""

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from desafio_dagster.core.export.extract import SOURCE_SCHEMAS
from desafio_dagster.core.output.layout import CSV_COLUMNS
from desafio_dagster.core.output.version import FORMAT_FILE, INDEX_FILE, MANIFEST_FILE, READBACK_FILE
from desafio_dagster.defs.assets.source import RAW_TABLES
from desafio_dagster_tests.helpers import REPO, Webserver, declared_checks, running_webserver

SCREENSHOTS = REPO / "docs" if os.environ.get("DESAFIO_UPDATE_SCREENSHOT") else Path(tempfile.gettempdir())
SCREENSHOT = SCREENSHOTS / "asset-graph.png"
ASSET_PAGE_SCREENSHOT = SCREENSHOTS / "asset-movements_csv.png"
CHROMIUM = os.environ.get("DESAFIO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Nothing may be downloaded or phoned home: the system Chromium, with its background services off.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ASSETS = ["raw_clients", "raw_accounts", "raw_cards", "raw_movements", "movements_csv"]
# dagster-graphql's client calls gql with arguments gql 4 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning")

RUN_CONFIG = {"ops": {"source_database": {"config": {"clients": 30, "movements_per_card": [0, 5]}}}}

CHECKS_QUERY = """{ assetNodes { assetKey { path } groupName assetChecksOrError { __typename
  ... on AssetChecks { checks { name executionForLatestMaterialization { runId status } } } } } }"""
# What an asset's page shows: its code version, its definition's metadata (the column schema)
# and its latest materialization's metadata (the tables).
_TABLES = """__typename label
  ... on TableSchemaMetadataEntry { schema { columns { name type } } }
  ... on TableMetadataEntry { table { records schema { columns { name } } } }"""
ASSET_PAGE_QUERY = f"""{{ assetNodes {{ assetKey {{ path }} opVersion metadataEntries {{ {_TABLES} }}
  assetMaterializations(limit: 1) {{ metadataEntries {{ {_TABLES} }} }} }} }}"""
AUTOMATION_QUERY = """{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name }
  schedules { name cronSchedule scheduleState { status } } sensors { name sensorState { status } } } } } }"""
# The resources page: each setting's value, or the environment variable it comes from.
RESOURCES_QUERY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  allTopLevelResourceDetails { name configuredValues { key value type } configFields { name description } } } } } }"""


@pytest.fixture
def webserver(database_url, env_home, tmp_path):
    """`dagster dev` in the repo root, with a temporary DAGSTER_HOME and the test's source database."""
    home = tmp_path / "dagster-home"
    home.mkdir()
    # No telemetry, and no "join the community" dialog over the page.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    with running_webserver([sys.executable, "-m", "dagster", "dev"], env=env, log=tmp_path / "dagster-dev.log") as server:
        yield server


def latest_check_results(server: Webserver) -> dict[tuple[str, str], dict | None]:
    results = {}
    for node in server.graphql(CHECKS_QUERY)["assetNodes"]:
        asset = "/".join(node["assetKey"]["path"])
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", checks
        for check in checks["checks"]:
            results[(asset, check["name"])] = check["executionForLatestMaterialization"]
    return results


def asset_pages(server: Webserver) -> dict[str, dict]:
    """asset -> code version, definition metadata and latest materialization metadata, by label."""
    def by_label(entries: list[dict]) -> dict[str, dict]:
        return {entry["label"]: entry for entry in entries}

    return {"/".join(node["assetKey"]["path"]): {
        "code_version": node["opVersion"],
        "definition": by_label(node["metadataEntries"]),
        "materialization": by_label(node["assetMaterializations"][0]["metadataEntries"]),
    } for node in server.graphql(ASSET_PAGE_QUERY)["assetNodes"]}


def table_records(entry: dict) -> list[dict]:
    assert entry["__typename"] == "TableMetadataEntry", entry
    return [json.loads(record) for record in entry["table"]["records"]]


@contextlib.contextmanager
def browser_page(width: int, height: int):
    """A page of the system Chromium, headless, with Dagster's navigation collapsed."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install chromium (or set DESAFIO_CHROMIUM)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.add_init_script("window.localStorage.setItem('dagster-nav-collapsed', 'true')")
            yield context.new_page()
        finally:
            browser.close()


def screenshot_asset_page(server: Webserver, asset: str, shown: list[str], down_to: str) -> None:
    """Open an asset's page and, once the given texts are visible on it, save the screenshot of
    the page from the top down to the text `down_to`."""
    from playwright.sync_api import expect

    with browser_page(1600, 2600) as page:
        page.goto(f"{server.url}/assets/{asset}")
        page.get_by_text("Compute details", exact=True).click()  # the code version, among others
        for text in shown:
            expect(page.get_by_text(text, exact=True).first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(500)
        bottom = page.get_by_text(down_to, exact=True).first.bounding_box()
        page.screenshot(path=str(ASSET_PAGE_SCREENSHOT), clip={"x": 0, "y": 0, "width": page.viewport_size["width"],
                                                               "height": bottom["y"] + bottom["height"] + 24})


def screenshot_asset_graph(server: Webserver, groups: list[str]) -> None:
    """Open the global asset lineage with every group expanded, zoomed in far enough that the
    nodes show their details (status, asset checks), and save the screenshot."""
    from playwright.sync_api import expect

    expanded = ",".join(f"global@global:{group}" for group in groups)
    with browser_page(1400, 900) as page:
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
        for asset, _ in declared_checks():
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
    assert set(results) == declared_checks()
    # Each check's latest execution is this run's, and it passed.
    assert {key: r for key, r in results.items() if r != {"runId": run_id, "status": "SUCCEEDED"}} == {}

    published = sorted(p.name for p in (env_home / "data" / "movements_csv").iterdir())
    assert len([name for name in published if not name.startswith("_")]) == 30
    assert {INDEX_FILE, MANIFEST_FILE, FORMAT_FILE, READBACK_FILE} <= set(published)

    groups = sorted({node["groupName"] for node in webserver.graphql(CHECKS_QUERY)["assetNodes"]})
    screenshot_asset_graph(webserver, groups)
    assert SCREENSHOT.stat().st_size > 10_000

    # Column schemas (declared, so shown before any run), code versions, and metadata as tables.
    pages = asset_pages(webserver)
    expected_columns = {key: SOURCE_SCHEMAS[table].names for key, table in RAW_TABLES.items()}
    expected_columns["movements_csv"] = list(CSV_COLUMNS)
    for asset, columns in expected_columns.items():
        schema = pages[asset]["definition"]["dagster/column_schema"]
        assert schema["__typename"] == "TableSchemaMetadataEntry", schema
        assert [column["name"] for column in schema["schema"]["columns"]] == columns, asset
        assert pages[asset]["code_version"], asset
    cards = table_records(pages["raw_cards"]["materialization"]["preview"])
    assert cards and all(card["num_cartao"].startswith("*" * 12) for card in cards)
    histogram = table_records(pages["movements_csv"]["materialization"]["rows_per_client_histogram"])
    assert sum(band["clients"] for band in histogram) == 30
    assert table_records(pages["movements_csv"]["materialization"]["top_clients_by_rows"])

    # The checks job, the stopped daily schedule and the running automation sensor.
    [repository] = webserver.graphql(AUTOMATION_QUERY)["repositoriesOrError"]["nodes"]
    assert {"populate", "export", "etl", "checks"} <= {job["name"] for job in repository["jobs"]}
    assert [(s["name"], s["cronSchedule"], s["scheduleState"]["status"]) for s in repository["schedules"]] == [
        ("daily_export", "0 3 * * *", "STOPPED")]
    assert [(s["name"], s["sensorState"]["status"]) for s in repository["sensors"]] == [
        ("automation_conditions", "RUNNING")]

    # Each setting names its variable: a variable set where the webserver runs shows as its name (never
    # its value: a secret), an unset one as an empty value whose field description names it.
    [resources] = webserver.graphql(RESOURCES_QUERY)["repositoriesOrError"]["nodes"]
    details = resources["allTopLevelResourceDetails"]
    configured = {(r["name"], v["key"]): (v["type"], v["value"]) for r in details for v in r["configuredValues"]}
    described = {(r["name"], f["name"]): f["description"] for r in details for f in r["configFields"]}
    settings = {("postgres", "url"): "DESAFIO_POSTGRES_URL", ("postgres", "home"): "DESAFIO_HOME",
                ("postgres", "schema_name"): "DESAFIO_SCHEMA", ("spark", "master"): "DESAFIO_SPARK_MASTER",
                ("csv_io_manager", "base_dir"): "DESAFIO_OUTPUT_DIR"}
    for key, variable in settings.items():
        expected = ("ENV_VAR", variable) if os.environ.get(variable, "").strip() else ("VALUE", '""')
        assert configured[key] == expected, (key, configured[key])
        assert f"${variable}" in described[key], described[key]
    assert {variable for key, variable in settings.items() if configured[key][0] == "ENV_VAR"} >= {
        "DESAFIO_POSTGRES_URL", "DESAFIO_HOME", "DESAFIO_OUTPUT_DIR"}, "the test sets these three"
    assert "None" not in {value for _, value in configured.values()}
    assert os.environ["DESAFIO_POSTGRES_URL"] not in {value for _, value in configured.values()}

    screenshot_asset_page(webserver, "movements_csv",
                          ["nome_associado", "data_criacao_conta", "rows_per_client_histogram", "top_clients_by_rows",
                           "Code version", pages["movements_csv"]["code_version"], "automation_conditions"],
                          down_to="501+")
    assert ASSET_PAGE_SCREENSHOT.stat().st_size > 10_000
