"""The runbook's application database, small and deterministic, for the demo and the tests.

It has what makes restores hard: foreign keys, sequences, indexes, a CHECK constraint left
NOT VALID, a second schema with a view, and a trigger.
"""

from __future__ import annotations

import psycopg

SAMPLE_TABLES = ("users", "products", "campaigns", "templates", "abandoned_carts", "analytics",
                 "notifications", "usage_stats")

SCHEMA = """
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    gdpr_consent boolean NOT NULL DEFAULT false
);
CREATE TABLE products (
    id serial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    title text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents >= 0)
);
CREATE TABLE templates (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    body text NOT NULL
);
CREATE TABLE campaigns (
    id serial PRIMARY KEY,
    name text NOT NULL,
    template_id integer NOT NULL REFERENCES templates (id),
    starts_at timestamptz NOT NULL,
    budget_cents integer NOT NULL DEFAULT 0
);
CREATE TABLE abandoned_carts (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    product_id integer NOT NULL REFERENCES products (id),
    quantity integer NOT NULL DEFAULT 1,
    abandoned_at timestamptz NOT NULL
);
CREATE INDEX abandoned_carts_user_idx ON abandoned_carts (user_id);
CREATE TABLE analytics (
    id bigserial PRIMARY KEY,
    event text NOT NULL,
    user_id bigint REFERENCES users (id) ON DELETE SET NULL,
    properties jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL
);
CREATE INDEX analytics_event_time_idx ON analytics (event, occurred_at);
CREATE TABLE notifications (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    template_id integer NOT NULL REFERENCES templates (id),
    sent_at timestamptz,
    status text NOT NULL DEFAULT 'queued'
);
CREATE TABLE usage_stats (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day date NOT NULL,
    api_calls integer NOT NULL,
    UNIQUE (user_id, day)
);
CREATE FUNCTION touch_notification() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'sent' AND NEW.sent_at IS NULL THEN NEW.sent_at := now(); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER notifications_touch BEFORE INSERT OR UPDATE ON notifications
    FOR EACH ROW EXECUTE FUNCTION touch_notification();
CREATE SCHEMA reporting;
CREATE TABLE reporting.daily_revenue (
    day date PRIMARY KEY,
    revenue_cents bigint NOT NULL
);
CREATE VIEW reporting.active_users AS
    SELECT u.id, u.email FROM public.users u WHERE u.gdpr_consent;
"""

DATA = """
INSERT INTO users (email, name, created_at, gdpr_consent)
    SELECT 'user' || g || '@example.com', 'User ' || g, timestamptz '2024-01-01' + g * interval '1 hour', g % 3 <> 0
    FROM generate_series(1, 500) g;
INSERT INTO products (sku, title, price_cents)
    SELECT 'SKU-' || lpad(g::text, 5, '0'), 'Product ' || g, (g * 137) % 10000 FROM generate_series(1, 120) g;
INSERT INTO templates (name, body)
    SELECT 'template-' || g, 'Hello {{name}}, offer number ' || g FROM generate_series(1, 12) g;
INSERT INTO campaigns (name, template_id, starts_at, budget_cents)
    SELECT 'Campaign ' || g, 1 + g % 12, timestamptz '2024-02-01' + g * interval '1 day', g * 1000
    FROM generate_series(1, 30) g;
INSERT INTO abandoned_carts (user_id, product_id, quantity, abandoned_at)
    SELECT 1 + g % 500, 1 + g % 120, 1 + g % 4, timestamptz '2024-03-01' + g * interval '7 minutes'
    FROM generate_series(1, 800) g;
INSERT INTO analytics (event, user_id, properties, occurred_at)
    SELECT (ARRAY['view', 'click', 'purchase', 'signup'])[1 + g % 4], 1 + g % 500,
           jsonb_build_object('page', '/p/' || (g % 50), 'ms', g % 900), timestamptz '2024-03-01' + g * interval '1 minute'
    FROM generate_series(1, 3000) g;
INSERT INTO notifications (user_id, template_id, status, sent_at)
    SELECT 1 + g % 500, 1 + g % 12, (ARRAY['queued', 'sent', 'failed'])[1 + g % 3],
           CASE WHEN g % 3 = 1 THEN timestamptz '2024-03-01' + g * interval '3 minutes' END
    FROM generate_series(1, 1000) g;
INSERT INTO usage_stats (user_id, day, api_calls)
    SELECT 1 + g % 500, date '2024-01-01' + (g / 500), (g * 31) % 2000 FROM generate_series(0, 1499) g;
INSERT INTO reporting.daily_revenue (day, revenue_cents)
    SELECT date '2024-01-01' + g, (g * 7919) % 1000000 FROM generate_series(0, 89) g;
-- a row that breaks the rule below, so the constraint can only be NOT VALID
INSERT INTO usage_stats (user_id, day, api_calls) VALUES (1, date '2023-12-31', -1);
ALTER TABLE usage_stats ADD CONSTRAINT usage_stats_calls_nonnegative CHECK (api_calls >= 0) NOT VALID;
"""


def load_sample_database(dsn: str) -> None:
    """Create and fill the sample schema in an empty database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(DATA)
        conn.execute("ANALYZE")
