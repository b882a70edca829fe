"""Sends the webhook outbox (``registry.webhooks``): one thread per server process, started in
each worker after the fork, that every ``poll_seconds`` claims the deliveries due, POSTs each one
signed, and records what the receiver answered. Several processes and servers share the outbox
safely: a claim is a row lock taken with SKIP LOCKED, and a claimed delivery is not due again
until its send's time limit has passed.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable

import httpx
import orjson
from sqlalchemy.orm import Session

from modelyard.registry import webhooks
from modelyard.registry.errors import InvalidInput

log = logging.getLogger("modelyard.webhooks")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header of a Standard Webhooks message."""
    digest = hmac.new(webhooks.signing_key(secret), f"{message_id}.{timestamp}.".encode() + body,
                      hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Sender:
    """This process's webhook sender."""

    def __init__(self, sessions: Callable[[], Session], policy: webhooks.Policy, *, poll_seconds: float = 1.0) -> None:
        self._sessions = sessions
        self._policy = policy
        self._poll_seconds = poll_seconds
        self._pid: int | None = None
        self._wake = threading.Event()

    def start(self) -> None:
        """Run in the background in this process (once per process: a forked worker starts its own)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="webhook-sender", daemon=True).start()

    def run_once(self) -> int:
        """Claim the deliveries due and send them; how many were sent (tests, and the thread)."""
        db = self._sessions()
        try:
            claimed = webhooks.claim(db, self._policy)
        finally:
            db.close()
        if not claimed:
            return 0
        with httpx.Client(timeout=self._policy.timeout_seconds, follow_redirects=False, trust_env=False,
                          headers={"User-Agent": "modelyard-webhooks"}) as client:
            for delivery in claimed:
                self._send(client, delivery)
        return len(claimed)

    def _run(self) -> None:
        while True:
            try:
                while self.run_once():
                    pass
            except Exception:  # the registry is out of reach: try again on the next round
                log.warning("could not send webhooks", exc_info=True)
            self._wake.wait(self._poll_seconds)
            self._wake.clear()

    def _send(self, client: httpx.Client, delivery: webhooks.Claimed) -> None:
        message_id = f"msg_{delivery.id}"
        body = orjson.dumps(delivery.payload)
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            webhooks.check_url(delivery.url, allow_private=self._policy.allow_private)
            timestamp = int(time.time())
            response = client.post(delivery.url, content=body, headers={
                "Content-Type": "application/json", "webhook-id": message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(delivery.secret, message_id, timestamp, body)})
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}: {response.text[:200]}"
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except InvalidInput as refused:
            error = refused.message
        except httpx.HTTPError as failed:
            error = f"{type(failed).__name__}: {failed}"
        db = self._sessions()
        try:
            outcome = webhooks.finish(db, delivery, self._policy, status=status, error=error, retry_after=retry_after)
        finally:
            db.close()
        if outcome != "delivered":
            log.warning("webhook delivery %s to %s: %s (%s)", delivery.id, delivery.url, error, outcome)


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
