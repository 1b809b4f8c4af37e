-- The schema latkit 0.x wrote before precisions (LUT SCHEMA_VERSION 1), frozen as it was:
-- tests/lut/test_precision.py builds old LUT files with it to test the migration.
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (id INTEGER PRIMARY KEY, uri TEXT NOT NULL UNIQUE, info_json TEXT NOT NULL);
CREATE TABLE ops (key TEXT PRIMARY KEY, op_type TEXT NOT NULL, spec_json TEXT NOT NULL);
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY,
    op_key TEXT NOT NULL REFERENCES ops(key),
    device_id INTEGER NOT NULL REFERENCES devices(id),
    latency_ms REAL NOT NULL,
    mean_ms REAL, std_ms REAL, min_ms REAL, max_ms REAL,
    p10_ms REAL, p90_ms REAL, mad_ms REAL,
    ci_low_ms REAL, ci_high_ms REAL, rel_ci REAL,
    n_samples INTEGER, n_outliers INTEGER, iterations INTEGER, converged INTEGER,
    samples_json TEXT NOT NULL DEFAULT '[]',
    provenance_json TEXT NOT NULL DEFAULT '{}',
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (op_key, device_id)
);
CREATE TABLE calibrations (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    kind TEXT NOT NULL,
    params_json TEXT NOT NULL,
    provenance_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
