"""The team usage database's schema on PostgreSQL (postgres.py applies it): each entry of MIGRATIONS
brings a database one version forward. Pure data.

Flags are SMALLINT 0/1 and token counts BIGINT, so the reports' SQL (reports.py) reads both databases
alike; a row's key is (request_id, attempt), which makes a batch written twice one batch.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: attempts, probes and rankings, as in the SQLite store at its version 3
    """
    CREATE TABLE attempts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        day TEXT NOT NULL,
        request_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        launch TEXT,
        session TEXT,
        dialect TEXT,
        stream SMALLINT,
        requested_model TEXT,
        provider TEXT,
        model TEXT,
        rule TEXT,
        attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        status INTEGER,
        error_class TEXT,
        served SMALLINT NOT NULL DEFAULT 0,
        fallback SMALLINT NOT NULL DEFAULT 0,
        input_tokens BIGINT,
        output_tokens BIGINT,
        cached_tokens BIGINT,
        cache_write_tokens BIGINT,
        reasoning_tokens BIGINT,
        tokens_estimated SMALLINT NOT NULL DEFAULT 0,
        cost_usd DOUBLE PRECISION,
        cost_source TEXT,
        ttft_ms DOUBLE PRECISION,
        duration_ms DOUBLE PRECISION,
        tokens_saved BIGINT,
        cache_saved_usd DOUBLE PRECISION,
        CONSTRAINT attempts_once UNIQUE (request_id, attempt)
    );
    CREATE INDEX attempts_by_time ON attempts (ts);
    CREATE INDEX attempts_by_day ON attempts (day, agent, provider);
    CREATE TABLE probes (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        model TEXT NOT NULL,
        ok SMALLINT NOT NULL,
        status INTEGER,
        error TEXT,
        ttft_ms DOUBLE PRECISION,
        tokens_per_s DOUBLE PRECISION,
        output_tokens BIGINT
    );
    CREATE INDEX probes_by_model ON probes (model, ts);
    CREATE TABLE rankings (
        rank INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        free SMALLINT NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        why TEXT,
        context_length BIGINT,
        tools SMALLINT,
        prompt_price DOUBLE PRECISION,
        completion_price DOUBLE PRECISION,
        success_rate DOUBLE PRECISION,
        ttft_ms DOUBLE PRECISION,
        tokens_per_s DOUBLE PRECISION,
        computed_at DOUBLE PRECISION NOT NULL
    )
    """,
    # 2: a team's users (clutch users add): a token's SHA-256, never the token; and the user of each row
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL UNIQUE,
        budget_usd_day DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    );
    ALTER TABLE attempts ADD COLUMN user_name TEXT;
    CREATE INDEX attempts_by_user ON attempts (day, user_name)
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
