-- One row per audit event and stage, as the postgres sink writes them.
CREATE TABLE audit_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The relay's cluster header; '' when the message had none.
    cluster text NOT NULL DEFAULT '',
    audit_id text NOT NULL,
    stage text NOT NULL DEFAULT '',
    -- stageTimestamp; requestReceivedTimestamp, then the epoch, when it is missing.
    stage_timestamp timestamptz NOT NULL,
    request_received_timestamp timestamptz,
    level text,
    verb text,
    username text,
    groups text[] NOT NULL DEFAULT '{}',
    source_ips text[] NOT NULL DEFAULT '{}',
    user_agent text,
    impersonated_user text,
    namespace text,
    resource text,
    subresource text,
    name text,
    api_group text,
    request_uri text,
    response_code integer,
    decision text,
    reason text,
    event jsonb NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    -- What the apiserver re-sends on a retry and Kafka redelivers: inserted once.
    CONSTRAINT audit_events_once UNIQUE (cluster, audit_id, stage, stage_timestamp)
);

-- When: time ranges, and the retention that deletes the oldest rows.
CREATE INDEX audit_events_when ON audit_events (stage_timestamp);
-- Who: one user's actions over time.
CREATE INDEX audit_events_who ON audit_events (username, stage_timestamp);
-- What: an object, or every object of a kind in a namespace, over time.
CREATE INDEX audit_events_what ON audit_events (resource, namespace, name, stage_timestamp);
-- Which action: every delete (or patch...) over time.
CREATE INDEX audit_events_verb ON audit_events (verb, stage_timestamp);
