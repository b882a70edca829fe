"""Webhooks in process, on both backends: what may be registered (http(s), public addresses unless
allowed, known events, a Standard Webhooks secret, never shown again), the outbox written with
the event, signed deliveries a reference verifier accepts, retries (429/5xx/no answer, Retry-After)
with one webhook-id, failures, the delivery log, and two senders never sending one delivery twice."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from modelyard.app import create_app
from modelyard.registry import webhooks
from modelyard.registry.models import Delivery
from modelyard.registry.webhook_sender import Sender, sign
from modelyard.web.context import EXTENSION, Runtime
from tests.conftest import admin_client
from tests.factories import make_version
from tests.webhook_receiver import receiving

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def hooked(config: dict[str, dict[str, Any]]) -> Iterator[Flask]:
    app = create_app({**config, "webhooks": {"allow_private": True, "backoff_seconds": 0.05, "max_attempts": 3,
                                             "timeout_seconds": 2.0}})
    yield app
    app.extensions[EXTENSION].engine.dispose()


def _sender(app: Flask) -> Sender:
    sender = app.extensions[EXTENSION].background[0]
    assert isinstance(sender, Sender)
    return sender


def _hook(client: FlaskClient, url: str, events: list[str], secret: str | None = SECRET) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url, "events": events, **({"secret": secret} if secret else {})}
    response = client.post("/webhooks", json=body)
    assert response.status_code == 201, response.json
    return dict(response.json)


def _deliveries(app: Flask) -> list[Delivery]:
    with app.extensions[EXTENSION].sessions() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


@pytest.mark.parametrize(("body", "words"), [
    ({"url": "ftp://example.com/x", "events": ["*"]}, "must be http:// or https://"),
    ({"url": "http://127.0.0.1:9/x", "events": ["*"]}, "loopback, private or reserved"),
    ({"url": "http://10.1.2.3/x", "events": ["*"]}, "loopback, private or reserved"),
    ({"url": "http://[::1]/x", "events": ["*"]}, "loopback, private or reserved"),
    ({"url": "http://169.254.169.254/latest/meta-data", "events": ["*"]}, "loopback, private or reserved"),
    ({"url": "http://localhost/x", "events": ["*"]}, "loopback, private or reserved"),
    ({"url": "https://user:pw@93.184.215.14/x", "events": ["*"]}, "must not carry credentials"),
    ({"url": "https://93.184.215.14/x", "events": ["version.exploded"]}, "unknown event 'version.exploded'"),
    ({"url": "https://93.184.215.14/x", "events": []}, "non-empty list"),
    ({"url": "https://93.184.215.14/x", "events": ["*"], "secret": "short"}, "base64 of 24 to 64"),
    ({"url": "https://no-such-host.invalid/x", "events": ["*"]}, "does not resolve"),
])
def test_what_cannot_be_a_webhook_is_a_422(client: FlaskClient, body: dict[str, Any], words: str) -> None:
    response = client.post("/webhooks", json=body)
    assert response.status_code == 422 and words in response.json["message"], response.json
    assert client.get("/webhooks").json == []
    public = client.post("/webhooks", json={"url": "https://93.184.215.14/hook", "events": ["*"]})
    assert public.status_code == 201  # a public address needs no allow_private


def test_a_made_secret_is_shown_once_and_only_admins_manage_webhooks(hooked: Flask, anon: FlaskClient) -> None:
    client = admin_client(hooked)
    made = _hook(client, "https://example.com/hook", ["*"], secret=None)
    assert made["secret"].startswith("whsec_") and len(base64.b64decode(made["secret"][6:])) == 32
    given = _hook(client, "https://example.com/other", ["alias.moved"])
    assert "secret" not in given
    listed = client.get("/webhooks").json
    assert [h["id"] for h in listed] == [made["id"], given["id"]] and all("secret" not in h for h in listed)
    assert "secret" not in client.get(f"/webhooks/{made['id']}").json
    assert anon.get("/webhooks").status_code == 401
    assert client.delete(f"/webhooks/{made['id']}").status_code == 204
    assert client.get(f"/webhooks/{made['id']}").status_code == 404
    for huge in ("50205280232578863857664", "2147483648", "0"):  # past the id column: a 404, never a 500
        assert client.get(f"/webhooks/{huge}").status_code == 404
        assert client.delete(f"/webhooks/{huge}").status_code == 404
        assert client.get(f"/webhooks/{huge}/deliveries").status_code == 404


def test_events_are_delivered_signed_once_each(hooked: Flask) -> None:
    client, runtime = admin_client(hooked), hooked.extensions[EXTENSION]
    with receiving() as receiver:
        hook = _hook(client, receiver.url, ["version.created", "alias.moved", "alias.set"])
        make_version(runtime, "hooked")
        make_version(runtime, "hooked")
        assert client.post("/models/hooked/versions/1/promote").status_code == 200
        assert client.post("/models/hooked/versions/2/promote").status_code == 200
        assert client.patch("/models/hooked", json={"description": "not subscribed"}).status_code == 200
        assert len(_deliveries(hooked)) == 4  # in the outbox with their events, before any send
        assert _sender(hooked).run_once() == 4
        got = receiver.verified(SECRET)
    assert [g["type"] for g in got] == ["version.created", "version.created", "alias.set", "alias.moved"]
    moved = got[-1]["data"]
    assert moved["model"] == "hooked" and moved["alias"] == "production" and moved["version"] == 2
    assert moved["before"] == {"version": 1} and moved["after"] == {"version": 2} and moved["actor"] == "admin"
    assert len({g["_id"] for g in got}) == 4
    log = client.get(f"/webhooks/{hook['id']}/deliveries").json
    assert [d["status"] for d in log] == ["delivered"] * 4 and [d["last_status"] for d in log] == [200] * 4
    assert log[0]["event_type"] == "alias.moved" and log[0]["attempts"] == 1


def test_retries_keep_their_id_honour_retry_after_and_give_up(hooked: Flask) -> None:
    client, runtime = admin_client(hooked), hooked.extensions[EXTENSION]
    script = [(503, {"Retry-After": "1"}), (429, {}), (200, {})]
    with receiving(script=script) as receiver:
        hook = _hook(client, receiver.url, ["version.created"])
        make_version(runtime, "retried")
        sender = _sender(hooked)
        assert sender.run_once() == 1  # 503, Retry-After: 1 s
        first = _deliveries(hooked)[-1]
        assert (first.status, first.attempts, first.last_status) == ("pending", 1, 503)
        assert sender.run_once() == 0  # not due for a second, though the backoff alone is 50 ms
        time.sleep(1.1)
        assert sender.run_once() == 1  # 429: again after the backoff
        time.sleep(0.2)
        assert sender.run_once() == 1  # 200
        ids = {r["headers"]["webhook-id"] for r in receiver.received}
        assert len(receiver.received) == 3 and len(ids) == 1
        log = client.get(f"/webhooks/{hook['id']}/deliveries").json
        assert (log[0]["status"], log[0]["attempts"], log[0]["last_status"]) == ("delivered", 3, 200)

    with receiving(script=[(400, {})]) as refusing:  # another 4xx: the receiver refuses it, never retried
        client.delete(f"/webhooks/{hook['id']}")
        _hook(client, refusing.url, ["*"])
        make_version(runtime, "retried")
        sender.run_once()
        assert _deliveries(hooked)[-1].status == "failed" and _deliveries(hooked)[-1].last_status == 400
    down = _hook(client, receiver.url, ["version.created"])  # that receiver is gone: no answer at all
    make_version(runtime, "retried")
    for _ in range(3):
        sender.run_once()
        time.sleep(0.25)
    last = client.get(f"/webhooks/{down['id']}/deliveries").json[0]
    assert (last["status"], last["attempts"], last["last_status"]) == ("failed", 3, None)
    assert last["last_error"].startswith("ConnectError")


def test_two_senders_never_send_one_delivery_twice(hooked: Flask, runtime: Runtime) -> None:
    client = admin_client(hooked)
    with receiving() as receiver:
        _hook(client, receiver.url, ["*"])
        for _ in range(4):
            make_version(hooked.extensions[EXTENSION], "busy")
        with hooked.extensions[EXTENSION].sessions() as session:
            assert session.scalar(select(func.count()).select_from(Delivery)) == 5  # model.created + 4 versions
        policy = webhooks.Policy(allow_private=True, backoff_seconds=0.05)
        senders = [Sender(hooked.extensions[EXTENSION].sessions, policy) for _ in range(4)]
        threads = [threading.Thread(target=s.run_once) for s in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(b["data"]["id"] for b in receiver.bodies()) == sorted(d.event_id for d in _deliveries(hooked))
        assert {d.status for d in _deliveries(hooked)} == {"delivered"}


def test_a_delivery_claimed_by_a_server_that_died_is_sent_again_after_its_lease(hooked: Flask) -> None:
    client = admin_client(hooked)
    with receiving() as receiver:
        _hook(client, receiver.url, ["model.created"])
        make_version(hooked.extensions[EXTENSION], "lease")
        with hooked.extensions[EXTENSION].sessions() as session:  # a server claimed it, then died
            claimed = webhooks.claim(session, webhooks.Policy(allow_private=True))
        assert len(claimed) == 1 and _sender(hooked).run_once() == 0  # leased: nobody sends it meanwhile
        with hooked.extensions[EXTENSION].sessions() as session:  # the lease runs out
            session.execute(update(Delivery).values(next_attempt_at=Delivery.created_at))
            session.commit()
        assert _sender(hooked).run_once() == 1
        assert [g["type"] for g in receiver.verified(SECRET)] == ["model.created"]


def test_the_signature_is_the_standards() -> None:
    """The Standard Webhooks specification's own example vector."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
