-- Runs once, when the postgres container initialises an empty data volume
-- (/docker-entrypoint-initdb.d). One database per service that owns data; each
-- service creates its tables itself (Alembic at start-up).
CREATE DATABASE keys;
CREATE DATABASE ledger;
CREATE DATABASE bff;
