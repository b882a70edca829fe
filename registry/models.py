"""Registry tables: models, their immutable versions, aliases, and the audit log.

Tables and constraints only; behaviour lives in the use cases (``service``, ``aliases`` and
``shadows`` write, ``queries`` and ``history`` read).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from modelyard.registry.db import Base, utcnow
from modelyard.registry.safety import FORMATS

IntPK = Annotated[int, mapped_column(primary_key=True)]
Created = Annotated[dt.datetime, mapped_column(default=utcnow)]
JSONDict = Annotated[dict[str, Any], mapped_column(default=dict)]
Name = Annotated[str, mapped_column(String(128))]

INPUT_KINDS = ("array", "dataframe", "text")


class Model(Base):
    __tablename__ = "models"

    id: Mapped[IntPK]
    name: Mapped[Name] = mapped_column(unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[JSONDict]
    # Highest version number ever allocated: numbers are never reused, even after a delete.
    last_version: Mapped[int] = mapped_column(default=0)
    # How many versions exist now, kept by the writes that add and delete them, so a list of
    # models never counts a model's versions row by row.
    version_count: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[Created]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True,
        order_by="ModelVersion.version",
    )
    aliases: Mapped[list[Alias]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Alias.name",
    )

    __table_args__ = (CheckConstraint("last_version >= 0", name="last_version_non_negative"),)


class ModelTag(Base):
    """One ``key: value`` of a model's tags, kept beside the model's ``tags`` object (which the
    API shows) so that the list finds the models with a tag through an index instead of reading
    every model's JSON. Written with the object, in the same transaction (``service``)."""

    __tablename__ = "model_tags"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))

    __table_args__ = (Index("ix_model_tags_key_value", "key", "value"),)


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[IntPK]
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(16))
    estimator: Mapped[str] = mapped_column(String(256))
    n_features: Mapped[int]
    feature_names: Mapped[list[Any]]
    feature_aliases: Mapped[JSONDict]
    # Class values as the estimator's classes_ holds them, and optional display labels aligned
    # with them; labels are empty when the version has none.
    classes: Mapped[list[Any] | None]
    labels: Mapped[list[Any] | None]
    has_proba: Mapped[bool]
    input_kind: Mapped[str] = mapped_column(String(16), default="array")
    # For input_kind "dataframe": "number" or "string" per feature.
    feature_types: Mapped[list[Any] | None]
    library_versions: Mapped[JSONDict]
    # The rows the uploader gave for the trial predict (JSON, as sent), the warnings loading the
    # file raised (e.g. InconsistentVersionWarning), and whether the estimator takes NaN for a
    # missing value (its scikit-learn tags' allow_nan).
    example: Mapped[Any | None] = mapped_column(JSON)
    # What the estimator predicted for ``example`` in the upload's trial: a replay at promotion
    # predicts the example again and must get the same (None: no example, or uploaded before).
    example_predictions: Mapped[list[Any] | None] = mapped_column(JSON)
    # The reference data's profile, per feature in fixed bins (registry.profile): what drift
    # compares live traffic with. None: uploaded without a reference.
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Whether ?explain=true explains it, as its upload's trial found (None: uploaded before), and why not.
    explainable: Mapped[bool | None]
    unexplainable: Mapped[str | None] = mapped_column(Text)
    load_warnings: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    allow_nan: Mapped[bool] = mapped_column(default=False, server_default=false())
    description: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[JSONDict]
    params: Mapped[JSONDict]
    tags: Mapped[JSONDict]
    created_at: Mapped[Created]
    created_by: Mapped[str] = mapped_column(String(128), default="anonymous")

    model: Mapped[Model] = relationship(back_populates="versions")

    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("length(sha256) = 64", name="sha256_length"),
        CheckConstraint("size_bytes >= 0", name="size_non_negative"),
        CheckConstraint("n_features >= 1", name="n_features_positive"),
        CheckConstraint(f"format IN {FORMATS!r}", name="format_known"),
        CheckConstraint(f"input_kind IN {INPUT_KINDS!r}", name="input_kind_known"),
        Index("ix_model_versions_sha256", "sha256"),
    )


class Alias(Base):
    __tablename__ = "aliases"

    id: Mapped[IntPK]
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[Name]
    # RESTRICT: a version cannot be deleted while an alias points at it.
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    # A weighted alias (a canary): {"<version>": weight}; version_id is then its heaviest version.
    weights: Mapped[dict[str, int] | None] = mapped_column(JSON, default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[Model] = relationship(back_populates="aliases")
    target: Mapped[ModelVersion] = relationship()

    __table_args__ = (UniqueConstraint("model_id", "name"), Index("ix_aliases_version_id", "version_id"))


class Shadow(Base):
    """An alias's shadow: ``fraction`` of the requests the alias serves are also run on
    ``version_id`` after their answer is computed (the caller never sees it), and compared. A new
    shadow is a new row: its report counts from its own start."""

    __tablename__ = "shadows"

    id: Mapped[IntPK]
    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"), unique=True)
    # RESTRICT: a version cannot be deleted while it shadows an alias.
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    fraction: Mapped[float]
    since: Mapped[Created]
    created_by: Mapped[str] = mapped_column(String(128))

    target: Mapped[ModelVersion] = relationship()

    __table_args__ = (CheckConstraint("fraction > 0 AND fraction <= 1", name="fraction_range"),
                      Index("ix_shadows_version_id", "version_id"))


class ShadowCount(Base):
    """What a shadow's runs added up to in one worker between two of its flushes. Every server
    appends its own (no row is updated by two writers), and the report adds them up; reading
    the report folds them into one row again."""

    __tablename__ = "shadow_counts"

    id: Mapped[IntPK]
    shadow_id: Mapped[int] = mapped_column(ForeignKey("shadows.id", ondelete="CASCADE"))
    requests: Mapped[int] = mapped_column(BigInteger, default=0)  # sampled: handed to the shadow
    compared: Mapped[int] = mapped_column(BigInteger, default=0)  # the shadow answered, and was compared
    failures: Mapped[int] = mapped_column(BigInteger, default=0)  # the shadow failed or refused the input
    dropped: Mapped[int] = mapped_column(BigInteger, default=0)  # the queue was full: not run
    rows: Mapped[int] = mapped_column(BigInteger, default=0)  # rows compared
    rows_agreed: Mapped[int] = mapped_column(BigInteger, default=0)
    max_abs_diff: Mapped[float | None]  # numeric outputs: the largest difference seen
    primary_ms: Mapped[list[Any]] = mapped_column(default=list)  # counts per latency bucket
    shadow_ms: Mapped[list[Any]] = mapped_column(default=list)

    __table_args__ = (Index("ix_shadow_counts_shadow_id", "shadow_id"),)


class Guard(Base):
    """A weighted alias's guard: while the alias keeps this split, its candidate versions (those
    not in the state before the canary, ``baseline``) are measured per time window, and the
    alias returns to ``baseline`` by itself when one's measure passes ``max`` on at least
    ``min_samples`` requests. Any move of the alias removes it (a new split with a guard makes a
    new one, whose counts start again)."""

    __tablename__ = "guards"

    id: Mapped[IntPK]
    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"), unique=True)
    metric: Mapped[str] = mapped_column(String(16))
    max: Mapped[float]
    window_seconds: Mapped[int]
    min_samples: Mapped[int]
    baseline: Mapped[dict[str, Any]]  # the alias's state before the canary: {"version": n} or {"weights": {...}}
    baseline_version: Mapped[int]  # the baseline's (heaviest) version: what disagreement compares with
    candidates: Mapped[list[Any]]  # the versions watched
    since: Mapped[Created]
    created_by: Mapped[str] = mapped_column(String(128))

    __table_args__ = (CheckConstraint("metric IN ('error_rate', 'disagreement', 'p99_ms')", name="metric_known"),
                      CheckConstraint("window_seconds > 0 AND min_samples > 0", name="window_positive"))


class GuardCount(Base):
    """What one worker counted of one candidate of a guard between two of its flushes, at
    ``at``: every server appends its own, and a check adds up the rows of the last window."""

    __tablename__ = "guard_counts"

    id: Mapped[IntPK]
    guard_id: Mapped[int] = mapped_column(ForeignKey("guards.id", ondelete="CASCADE"))
    version: Mapped[int]
    at: Mapped[Created]
    requests: Mapped[int] = mapped_column(BigInteger, default=0)  # served by the candidate
    errors: Mapped[int] = mapped_column(BigInteger, default=0)  # its load or its estimator failed
    rows: Mapped[int] = mapped_column(BigInteger, default=0)  # rows compared with the baseline
    rows_disagreed: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[list[Any]] = mapped_column(default=list)  # counts per latency bucket

    __table_args__ = (Index("ix_guard_counts_guard_id_at", "guard_id", "at"),)


class Approval(Base):
    """A move of an alias that needs a second approver (``[aliases] second_approver``), waiting
    for one: the state it would give the alias, who asked and until when. Approved, it is
    applied in the approver's transaction; it is never applied twice."""

    __tablename__ = "approvals"

    id: Mapped[IntPK]
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[Name]
    state: Mapped[dict[str, Any]]  # {"version": n} or {"weights": {...}} (with its "guard")
    requested_by: Mapped[str] = mapped_column(String(128))
    requested_at: Mapped[Created]
    expires_at: Mapped[dt.datetime]
    approved_by: Mapped[str | None] = mapped_column(String(128))
    approved_at: Mapped[dt.datetime | None]

    __table_args__ = (Index("ix_approvals_model_id_alias", "model_id", "alias"),)


class Webhook(Base):
    """A URL told of the registry's events (``events``: actions, or ``["*"]``), each delivery
    signed with ``secret`` the Standard Webhooks way. The secret is kept to sign with; the API
    never shows it."""

    __tablename__ = "webhooks"

    id: Mapped[IntPK]
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[Any]]
    secret: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[Created]
    created_by: Mapped[str] = mapped_column(String(128))


class Delivery(Base):
    """The outbox: one event for one webhook, written in the event's own transaction (nothing is
    lost if a server dies after the commit), sent by whichever server claims it first: a claim
    moves ``next_attempt_at`` past the send's time limit, so no other server sends it meanwhile,
    and a server that dies mid-send leaves it to be sent again after that."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[IntPK]
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int]
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[Created]
    last_status: Mapped[int | None]  # the receiver's HTTP status, when it answered
    last_error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[Created]
    delivered_at: Mapped[dt.datetime | None]

    __table_args__ = (CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
                      Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
                      Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"))


class Event(Base):
    """Append-only audit log. Keyed by model name, not id, so history outlives a deleted model."""

    __tablename__ = "events"

    id: Mapped[IntPK]
    model_name: Mapped[Name]
    version: Mapped[int | None]
    alias: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128), default="anonymous")
    at: Mapped[Created]
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]

    __table_args__ = (
        Index("ix_events_model_name_id", "model_name", "id"),
        # Rollback reads an alias's latest move from here.
        Index("ix_events_model_name_alias_id", "model_name", "alias", "id"),
    )


class Token(Base):
    """An API token. Only its sha256 is stored; the token itself is shown once, at creation."""

    __tablename__ = "tokens"

    id: Mapped[IntPK]
    name: Mapped[Name] = mapped_column(unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[Created]
    created_by: Mapped[str] = mapped_column(String(128))

    __table_args__ = (
        CheckConstraint("role IN ('reader', 'predictor', 'uploader', 'promoter', 'admin')", name="role_known"),
        CheckConstraint("length(token_hash) = 64", name="token_hash_length"),
    )


class RegistryState(Base):
    """One row whose ``generation`` every registry write increments in its own transaction: a
    cheap change signal, so servers can cache ref resolutions and never serve a stale one."""

    __tablename__ = "registry_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class ArtifactBlob(Base):
    """An artifact kept in the registry's database (``[artifacts] store = "database"``), so
    servers on several hosts share artifacts as they share the registry: its digest, size and
    when it was last put (garbage collection spares what uploads in flight just put). Its bytes
    are in ``artifact_chunks``; the blob row is written with them, in one transaction."""

    __tablename__ = "artifact_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    last_put: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("length(sha256) = 64", name="sha256_length"),)


class ArtifactChunk(Base):
    """One piece of a blob, in order: a blob is read and written a chunk at a time, so a large
    model never needs a second copy of itself in memory."""

    __tablename__ = "artifact_chunks"

    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("artifact_blobs.sha256"), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


# What serving observed (the prediction log and the drift counts), kept in its own module; imported
# here so that the models' metadata, which Alembic compares with the schema, is whole.
from modelyard.registry import observe_tables  # noqa: E402,F401
