"""Tables of what serving observed: the sampled prediction log, the per-bin drift counts every
server adds to, and each feature's last drift verdict. Tables and constraints only; behaviour
lives in ``registry.observe`` (writes, reads, retention) and ``registry.drift`` (the verdicts).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Double, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelyard.registry.db import Base


class LoggedPrediction(Base):
    """One sampled predict request: the version that answered, its rows (the first
    ``[observe] logged_rows``), its outputs for them, its latency. On PostgreSQL the table is
    partitioned by day (``at``): retention drops whole days, and a day's partition is made by the
    first write that needs it. The primary key holds ``at`` because PostgreSQL requires the
    partition key in it; ``id`` is made by the writer (SQLite makes no id for a composite key)."""

    __tablename__ = "prediction_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    alias: Mapped[str | None] = mapped_column(String(128))  # the alias that chose the version, if one did
    request_key: Mapped[str | None] = mapped_column(String(256))  # X-Request-Key, when sent
    n_rows: Mapped[int]  # rows in the request (``rows`` keeps the first [observe] logged_rows)
    rows: Mapped[list[Any]] = mapped_column(JSON)
    outputs: Mapped[list[Any]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        Index("ix_prediction_log_version_id_at", "version_id", "at"),
        {"postgresql_partition_by": "RANGE (at)"},
    )


class DriftCount(Base):
    """How many rows of a version fell in one bin of one feature's reference profile (or of its
    predictions' profile, ``output``) during one bucket of time. Every process adds its counts to
    the same row (an upsert), so N servers' counts add up; bin -1 counts missing values."""

    __tablename__ = "drift_counts"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    bucket: Mapped[dt.datetime]  # the start of the bucket ([observe]: BUCKET_SECONDS wide)
    output: Mapped[bool]  # False: a feature's bins; True: the predictions' (``feature`` is "")
    feature: Mapped[str] = mapped_column(String(128))
    bin: Mapped[int]
    count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("version_id", "bucket", "output", "feature", "bin"),)


class DriftVerdict(Base):
    """A feature's (or the predictions') verdict when drift was last checked: the change to
    ``significant`` is recorded as an event once, by whichever process saw it first."""

    __tablename__ = "drift_verdicts"

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    output: Mapped[bool] = mapped_column(primary_key=True)
    feature: Mapped[str] = mapped_column(String(128), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(16))
    psi: Mapped[float | None] = mapped_column(Double)
    checked_at: Mapped[dt.datetime]
