"""The dashboard's files: served from the package, all local, and small."""

from __future__ import annotations

import re

from .conftest import Client

# Everything the page loads, in two languages, with its own charts (bars, scatter, box
# plot); a charting library alone would be 50-200 KB more.
ASSET_BUDGET_BYTES = 170_000


async def _assets(client: Client) -> dict[str, bytes]:
    """The page and every file it references, following ES module imports."""
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    html = await page.read()
    found = {"/": html}
    queue = re.findall(r'(?:src|href)="(/static/[^"]+)"', html.decode())
    while queue:
        path = queue.pop()
        if path in found:
            continue
        resp = await client.get(path)
        assert resp.status == 200, path
        body = await resp.read()
        found[path] = body
        if path.endswith(".js"):
            queue += [f"/static/{m[2:]}" for m in re.findall(r'from "(\./[^"]+)"', body.decode())]
    return found


async def test_index_serves_the_dashboard_and_its_modules(client: Client) -> None:
    assets = await _assets(client)
    assert {"/static/app.js", "/static/charts.js", "/static/i18n.js", "/static/style.css"} <= set(
        assets
    )
    resp = await client.get("/static/app.js")
    assert resp.content_type in ("application/javascript", "text/javascript")


async def test_dashboard_loads_nothing_from_other_hosts(client: Client) -> None:
    for path, body in (await _assets(client)).items():
        text = body.decode()
        # Namespace URIs are names, not downloads.
        urls = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
        assert urls == set(), path


async def test_dashboard_assets_stay_within_budget(client: Client) -> None:
    total = sum(len(body) for body in (await _assets(client)).values())
    assert total < ASSET_BUDGET_BYTES
