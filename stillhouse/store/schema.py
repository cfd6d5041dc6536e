"""Versioned schema migrations, written once for both SQLite and PostgreSQL.

Each migration is a list of statements with `{json}`, `{real}` and `{bigint}` type slots that each
dialect fills in. Migrations only ever append: never edit one that has shipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "calls, scores and counters",
        (
            """CREATE TABLE calls (
                id TEXT PRIMARY KEY,
                task TEXT NOT NULL,
                created_at {real} NOT NULL,
                role TEXT NOT NULL,
                model TEXT NOT NULL,
                provider TEXT NOT NULL,
                upstream_model TEXT NOT NULL,
                route_reason TEXT NOT NULL,
                stream INTEGER NOT NULL,
                status TEXT NOT NULL,
                http_status INTEGER NOT NULL,
                error TEXT,
                finish_reason TEXT,
                latency_ms {real},
                ttft_ms {real},
                input_tokens {bigint},
                output_tokens {bigint},
                cost {real},
                session_key TEXT,
                confidence {real},
                request {json} NOT NULL,
                response {json},
                metadata {json} NOT NULL
            )""",
            "CREATE INDEX calls_task_time ON calls (task, created_at)",
            "CREATE INDEX calls_session ON calls (session_key)",
            """CREATE TABLE scores (
                id TEXT PRIMARY KEY,
                call_id TEXT NOT NULL,
                name TEXT NOT NULL,
                value {real},
                label TEXT,
                source TEXT NOT NULL,
                comment TEXT,
                created_at {real} NOT NULL
            )""",
            "CREATE INDEX scores_call ON scores (call_id)",
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value {bigint} NOT NULL)",
        ),
    ),
    Migration(
        2,
        "curated dataset snapshots",
        (
            # A dataset row is written once with its examples and never updated: its id is derived
            # from content_hash, the sha256 of its examples.
            """CREATE TABLE datasets (
                id TEXT PRIMARY KEY,
                task TEXT NOT NULL,
                content_hash TEXT NOT NULL,
                created_at {real} NOT NULL,
                train_count INTEGER NOT NULL,
                holdout_count INTEGER NOT NULL,
                intents_count INTEGER NOT NULL,
                source_count INTEGER NOT NULL,
                removed {json} NOT NULL,
                config {json} NOT NULL
            )""",
            "CREATE INDEX datasets_task_time ON datasets (task, created_at)",
            """CREATE TABLE dataset_examples (
                dataset_id TEXT NOT NULL,
                position INTEGER NOT NULL,
                split TEXT NOT NULL,
                call_id TEXT NOT NULL,
                intent TEXT NOT NULL,
                example {json} NOT NULL,
                PRIMARY KEY (dataset_id, position)
            )""",
        ),
    ),
    Migration(
        3,
        "registry: candidates, eval runs, releases",
        (
            # Each row is written once: a new training run, evaluation or promotion is a new row
            # whose parents (dataset, candidate, eval run) make the lineage.
            """CREATE TABLE candidates (
                id TEXT PRIMARY KEY,
                task TEXT NOT NULL,
                dataset_id TEXT NOT NULL,
                backend TEXT NOT NULL,
                base_model TEXT NOT NULL,
                config_hash TEXT NOT NULL,
                created_at {real} NOT NULL,
                parent_id TEXT,
                config {json} NOT NULL,
                artifacts {json} NOT NULL,
                serving {json} NOT NULL,
                metrics {json} NOT NULL
            )""",
            "CREATE INDEX candidates_task_time ON candidates (task, created_at)",
            "CREATE INDEX candidates_dataset ON candidates (dataset_id)",
            """CREATE TABLE eval_runs (
                id TEXT PRIMARY KEY,
                candidate_id TEXT NOT NULL,
                dataset_id TEXT NOT NULL,
                config_hash TEXT NOT NULL,
                created_at {real} NOT NULL,
                metrics {json} NOT NULL,
                passed INTEGER
            )""",
            "CREATE INDEX eval_runs_candidate ON eval_runs (candidate_id)",
            """CREATE TABLE releases (
                id TEXT PRIMARY KEY,
                candidate_id TEXT NOT NULL,
                eval_run_id TEXT,
                config_hash TEXT NOT NULL,
                created_at {real} NOT NULL,
                state TEXT NOT NULL,
                config {json} NOT NULL
            )""",
            "CREATE INDEX releases_candidate ON releases (candidate_id)",
        ),
    ),
    Migration(
        4,
        "lifecycle events",
        (
            # One row per lifecycle transition or mode change, never updated: each row is the
            # task's whole lifecycle state after the event, so the newest row is the truth.
            """CREATE TABLE lifecycle_events (
                id TEXT PRIMARY KEY,
                task TEXT NOT NULL,
                created_at {real} NOT NULL,
                kind TEXT NOT NULL,
                from_state TEXT,
                state TEXT NOT NULL,
                stage INTEGER NOT NULL,
                share {real} NOT NULL,
                mode TEXT,
                candidate_id TEXT,
                reason TEXT NOT NULL,
                detail {json} NOT NULL
            )""",
            "CREATE INDEX lifecycle_events_task_time ON lifecycle_events (task, created_at)",
        ),
    ),
    Migration(
        5,
        "human review queue",
        (
            # One row per call sent for review (a sample of student answers, every fallback
            # disagreement); a person's verdict fills status, correction and reviewed_at once.
            """CREATE TABLE review_items (
                id TEXT PRIMARY KEY,
                call_id TEXT NOT NULL UNIQUE,
                task TEXT NOT NULL,
                created_at {real} NOT NULL,
                reason TEXT NOT NULL,
                status TEXT NOT NULL,
                correction TEXT,
                reviewer TEXT,
                reviewed_at {real}
            )""",
            "CREATE INDEX review_items_task_status ON review_items (task, status, created_at)",
        ),
    ),
    Migration(
        6,
        "responses kept for retrieval and previous_response_id",
        (
            # One row per answered POST /v1/responses with `store` not false, written once by the
            # capture writer beside its call: the Response object as returned and the chat turns a
            # later request continues from.
            """CREATE TABLE responses (
                id TEXT PRIMARY KEY,
                task TEXT NOT NULL,
                call_id TEXT NOT NULL,
                created_at {real} NOT NULL,
                conversation {json} NOT NULL,
                response {json} NOT NULL
            )""",
        ),
    ),
    Migration(
        7,
        "files and fine-tuning jobs of the gateway's fine-tuning API",
        (
            # An uploaded file is written once, with its content (chat JSONL, checked on upload).
            """CREATE TABLE files (
                id TEXT PRIMARY KEY,
                filename TEXT NOT NULL,
                purpose TEXT NOT NULL,
                bytes {bigint} NOT NULL,
                examples INTEGER NOT NULL,
                created_at {real} NOT NULL,
                content TEXT NOT NULL
            )""",
            "CREATE INDEX files_time ON files (created_at)",
            # A job's row changes only by moving its status forward (a compare-and-set that
            # writes one event with it); what it made is filled in by the move that ends it.
            """CREATE TABLE fine_tuning_jobs (
                id TEXT PRIMARY KEY,
                model TEXT NOT NULL,
                training_file TEXT NOT NULL,
                status TEXT NOT NULL,
                hyperparameters {json} NOT NULL,
                seed {bigint} NOT NULL,
                validation_file TEXT,
                suffix TEXT,
                metadata {json},
                created_at {real} NOT NULL,
                finished_at {real},
                fine_tuned_model TEXT UNIQUE,
                trained_tokens {bigint},
                error {json},
                serving {json},
                result {json}
            )""",
            "CREATE INDEX fine_tuning_jobs_status ON fine_tuning_jobs (status, created_at)",
            "CREATE INDEX fine_tuning_jobs_time ON fine_tuning_jobs (created_at)",
            """CREATE TABLE fine_tuning_events (
                id TEXT PRIMARY KEY,
                job_id TEXT NOT NULL,
                message TEXT NOT NULL,
                level TEXT NOT NULL,
                type TEXT NOT NULL,
                data {json},
                created_at {real} NOT NULL
            )""",
            "CREATE INDEX fine_tuning_events_job ON fine_tuning_events (job_id, created_at)",
        ),
    ),
    Migration(
        8,
        "exports of candidates (GGUF for llama.cpp and Ollama) in the registry's lineage",
        (
            # Written once: where a candidate was written, in what form, and each file's sha256.
            """CREATE TABLE exports (
                id TEXT PRIMARY KEY,
                candidate_id TEXT NOT NULL,
                format TEXT NOT NULL,
                path TEXT NOT NULL,
                config_hash TEXT NOT NULL,
                created_at {real} NOT NULL,
                config {json} NOT NULL,
                files {json} NOT NULL
            )""",
            "CREATE INDEX exports_candidate ON exports (candidate_id, created_at)",
        ),
    ),
)

DIALECT_TYPES = {
    "sqlite": {"json": "TEXT", "real": "REAL", "bigint": "INTEGER"},
    "postgres": {"json": "JSONB", "real": "DOUBLE PRECISION", "bigint": "BIGINT"},
}

LATEST_VERSION = MIGRATIONS[-1].version


def statements_for(migration: Migration, dialect: str) -> list[str]:
    types = DIALECT_TYPES[dialect]
    return [s.format(**types) for s in migration.statements]
