"""The web routes over real HTTP: the page and vendored assets are served locally, the store API round-trips,
errors come back in the DeepSeek error shape, and the store API sits behind the server's key check.

    nice -n 10 timeout 600 python3 -m pytest tests/web/test_web_routes.py -q
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from fastapi import FastAPI, HTTPException, Request
from web_fake_completions import ScriptedCompletions, make_app
from web_live_server import LiveServer

from nanoseek.api.settings import KeyPolicy
from nanoseek.web.routes import mount


def test_page_and_every_asset_it_references_are_served_locally(tmp_path: Path) -> None:
    with LiveServer(make_app(tmp_path / "db.sqlite3", ScriptedCompletions())) as server:
        page = httpx.get(server.url + "/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert "/static/app.js" in assets and "/static/vendor/marked/marked.umd.js" in assets
        for asset in assets:
            assert asset.startswith(("/static/", "data:")), f"{asset} is not served locally"
            if asset.startswith("/static/"):
                response = httpx.get(server.url + asset)
                assert response.status_code == 200 and len(response.content) > 100, asset
        for license_file in ("marked/LICENSE", "dompurify/LICENSE", "highlight/LICENSE"):
            assert httpx.get(f"{server.url}/static/vendor/{license_file}").status_code == 200


def test_store_api_round_trip_and_errors(tmp_path: Path) -> None:
    with LiveServer(make_app(tmp_path / "db.sqlite3", ScriptedCompletions())) as server:
        client = httpx.Client(base_url=server.url + "/web/api")
        conv = client.post("/conversations", json={}).json()
        user = client.post(f"/conversations/{conv['id']}/messages", json={"role": "user", "content": "Hi there"})
        assert user.status_code == 201 and user.json()["position"] == 0
        reply = client.post(
            f"/conversations/{conv['id']}/messages",
            json={"role": "assistant", "content": "", "reasoning_content": "", "status": "streaming"},
        ).json()
        patched = client.patch(f"/messages/{reply['id']}", json={"content": "Hello!", "status": "complete"})
        assert patched.json()["content"] == "Hello!" and patched.json()["reasoning_content"] == ""
        assert client.patch(f"/conversations/{conv['id']}", json={"title": "Greeting"}).json()["title"] == "Greeting"
        listed = client.get("/conversations").json()["data"]
        assert [(c["id"], c["title"]) for c in listed] == [(conv["id"], "Greeting")]
        full = client.get(f"/conversations/{conv['id']}").json()
        assert [(m["role"], m["content"]) for m in full["messages"]] == [("user", "Hi there"), ("assistant", "Hello!")]

        missing = client.get("/conversations/does-not-exist")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "no conversation with id 'does-not-exist'"
        out_of_range = client.post(
            f"/conversations/{conv['id']}/messages", json={"role": "user", "content": "x", "replace_from": 9}
        )
        assert out_of_range.status_code == 400 and "replace_from=9" in out_of_range.json()["error"]["message"]
        assert (
            client.post(f"/conversations/{conv['id']}/messages", json={"role": "robot", "content": "x"}).status_code
            == 422
        )
        assert client.patch(f"/messages/{reply['id']}", json={"position": 4}).status_code == 422
        assert client.delete(f"/conversations/{conv['id']}").json() == {"id": conv["id"], "deleted": True}
        assert client.get("/conversations").json()["data"] == []


def test_store_api_requires_the_key_but_the_page_does_not(tmp_path: Path) -> None:
    def require_key(request: Request) -> KeyPolicy:
        if request.headers.get("authorization") != "Bearer sk-right":
            raise HTTPException(status_code=401, detail="bad key")
        return KeyPolicy(key="sk-right")

    app = FastAPI()
    mount(app, db_path=tmp_path / "db.sqlite3", auth=require_key)
    with LiveServer(app) as server:
        assert httpx.get(server.url + "/").status_code == 200
        assert httpx.get(server.url + "/static/app.js").status_code == 200
        assert httpx.get(server.url + "/web/api/conversations").status_code == 401
        wrong = httpx.get(server.url + "/web/api/conversations", headers={"Authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401
        right = httpx.get(server.url + "/web/api/conversations", headers={"Authorization": "Bearer sk-right"})
        assert right.status_code == 200 and right.json() == {"data": []}
