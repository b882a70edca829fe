"""The REST routes of webhooks (admin only): add one, list them, read one, remove it, and read its
delivery log. Secrets are taken, never shown (a generated one is shown once, at creation)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters
from marshmallow import fields

from modelyard.registry import webhooks
from modelyard.registry.api import check_body_type
from modelyard.registry.queries import Page
from modelyard.registry.schemas import ArgumentsParser
from modelyard.web.auth import current_actor, requires
from modelyard.web.context import runtime, session
from modelyard.web.paging import PagedBlueprint, page_of

blp = PagedBlueprint("webhooks", __name__, description="Webhooks: URLs told of the registry's events, signed")
blp.ARGUMENTS_PARSER = ArgumentsParser()
blp.before_request(check_body_type)


class WebhookCreateSchema(ma.Schema):
    url = fields.String(required=True, metadata={"description": "http(s); loopback and private addresses only "
                                                                "with [webhooks] allow_private"})
    events = fields.List(fields.String(), required=True, metadata={
        "description": 'event names (version.created, alias.moved, alias.guard_tripped, ...), or ["*"]'})
    secret = fields.String(metadata={"description": "whsec_ and base64 of 24 to 64 bytes; left out, one is made "
                                                    "and shown once"})


class WebhookSchema(ma.Schema):
    id = fields.Integer()
    url = fields.String()
    events = fields.List(fields.String())
    created_at = fields.AwareDateTime()
    created_by = fields.String()


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "only when it was made here: the one time it is shown"})


class DeliverySchema(ma.Schema):
    id = fields.Integer()
    event_id = fields.Integer()
    event_type = fields.String()
    status = fields.String(metadata={"description": "pending (not yet sent, or to be retried), delivered, failed"})
    attempts = fields.Integer()
    last_status = fields.Integer(allow_none=True, metadata={"description": "the receiver's last HTTP status"})
    last_error = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    next_attempt_at = fields.AwareDateTime()
    delivered_at = fields.AwareDateTime(allow_none=True)


@blp.route("/webhooks")
class Webhooks(MethodView):
    @requires("admin")
    @blp.response(200, WebhookSchema(many=True))
    def get(self) -> Any:
        """List webhooks (never their secrets)"""
        return webhooks.listed(session())

    @requires("admin")
    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookCreatedSchema)
    def post(self, body: dict[str, Any]) -> Any:
        """Add a webhook

        Every event it names is POSTed to `url` as `{"type", "timestamp", "data"}`, signed the
        Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
        HMAC-SHA256 of "id.timestamp.body">`), once per event whichever server records it, and
        retried with backoff on 429, 5xx or no answer (honouring `Retry-After`).
        """
        hook, generated = webhooks.create(session(), body["url"], body["events"], body.get("secret"),
                                          actor=current_actor().name, policy=webhooks.Policy.of(
                                              runtime().settings.webhooks))
        shown = {key: getattr(hook, key) for key in ("id", "url", "events", "created_at", "created_by")}
        return {**shown, **({"secret": generated} if generated else {})}


@blp.route("/webhooks/<int:webhook_id>")
class WebhookDetail(MethodView):
    @requires("admin")
    @blp.response(200, WebhookSchema)
    def get(self, webhook_id: int) -> Any:
        """Read a webhook"""
        return webhooks.get(session(), webhook_id)

    @requires("admin")
    @blp.response(204)
    def delete(self, webhook_id: int) -> None:
        """Remove a webhook (deliveries not yet sent are dropped)"""
        webhooks.delete(session(), webhook_id)


@blp.route("/webhooks/<int:webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @requires("admin")
    @blp.response(200, DeliverySchema(many=True))
    @blp.paginate()
    def get(self, webhook_id: int, pagination_parameters: PaginationParameters) -> Any:
        """A webhook's delivery log, newest first

        Each event sent or to be sent: its status, attempts, the receiver's last status and error.
        """
        rows, total = webhooks.deliveries(session(), webhook_id, offset=pagination_parameters.first_item,
                                          limit=pagination_parameters.page_size)
        return page_of(pagination_parameters, Page(rows, total, None), "deliveries", by_cursor=False)
