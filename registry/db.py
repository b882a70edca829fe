"""Declarative base, engine and session factory for the registry database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Explicit constraint names so Alembic migrations (and batch mode on SQLite) are stable.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# Execution option a write use case sets on its connection before its transaction begins.
WRITE = "modelyard_write"


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10, pool_timeout: float = 10.0,
                pool_recycle: int = 1800, connect_timeout: int = 5, echo: bool = False) -> Engine:
    """Build the engine; SQLite gets WAL, foreign keys and a busy timeout on every connection.

    On PostgreSQL each worker process keeps its own pool (``pool_size`` + ``max_overflow``
    connections at most: with N servers of W workers, plan for N x W x that on the server),
    checks a connection before using it (a restarted server costs no failed request), and waits
    at most ``connect_timeout`` seconds for an unreachable server, so readiness answers 503
    quickly instead of hanging.

    On SQLite a write transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up
    front (waiting up to the busy timeout) instead of failing with "database is locked" when a
    read snapshot has to upgrade while another writer committed. Reads stay ``DEFERRED``.
    """
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):  # psycopg 3 is the driver modelyard installs
        parsed = parsed.set(drivername="postgresql+psycopg")
    if "connect_timeout" not in parsed.query:  # in the URL, so connections made outside the pool have it too
        parsed = parsed.update_query_dict({"connect_timeout": str(connect_timeout)})
    return create_engine(
        parsed, echo=echo, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout,
        pool_recycle=pool_recycle, pool_pre_ping=True,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # Let SQLAlchemy emit BEGIN itself (see _sqlite_begin) instead of pysqlite's implicit one.
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


def begin_write(session: Session) -> None:
    """Start ``session``'s transaction as a write transaction (call before any statement)."""
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("begin_write() called with pending changes in the session")
        session.rollback()  # end a read-only snapshot
    session.connection(execution_options={WRITE: True})


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"  # modelyard/migrations, in the package
# Arbitrary constant: serialises concurrent `upgrade head` runs of servers sharing PostgreSQL.
_MIGRATION_LOCK_ID = 0x6D6F64656C


def upgrade_to_head(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (the only way the schema changes)."""
    run_migrations(engine, "upgrade", "head")


def run_migrations(engine: Engine, action: str, target: str) -> None:
    """Run Alembic's ``upgrade`` or ``downgrade`` to ``target`` on ``engine``, one server at a
    time on PostgreSQL (an advisory lock), with foreign keys off on SQLite.

    A batch migration on SQLite copies a table, drops the old one and renames the copy; with
    foreign keys on, the drop deletes (CASCADE) or refuses (RESTRICT) every row that references
    it. SQLite obeys the pragma only outside a transaction; the keys are checked after the
    migration and turned on again before the connection goes back to the pool.
    """
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as conn:
        postgresql, sqlite = conn.dialect.name == "postgresql", conn.dialect.name == "sqlite"
        if postgresql:
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            conn.commit()
        if sqlite:
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, target)
            conn.commit()
            if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                raise RuntimeError("after the migration, rows have foreign keys that point at nothing")
        finally:
            if sqlite:
                conn.rollback()
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
            if postgresql:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                conn.commit()
