-- Only identical repeats are repeats: the unique key becomes a digest of the event's bytes as
-- published, so two distinct events that share (cluster, auditID, stage, stageTimestamp) are
-- both kept (clients set Audit-ID themselves). Rows stored before get the digest of their stored
-- text: a repeat of one of them, arriving after this migration, is stored once more.
ALTER TABLE audit_events ADD COLUMN event_digest bytea;
UPDATE audit_events SET event_digest = sha256(convert_to(event::text, 'UTF8'));
ALTER TABLE audit_events ALTER COLUMN event_digest SET NOT NULL;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_once;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_once UNIQUE (cluster, event_digest);

-- The exact text of an event that jsonb cannot hold (a \u0000, an escape that is no Unicode
-- character, a number beyond numeric's range): event is then NULL, and the columns still
-- describe it. Exactly one of the two is set.
ALTER TABLE audit_events ADD COLUMN event_text text;
ALTER TABLE audit_events ALTER COLUMN event DROP NOT NULL;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_event_or_text
    CHECK ((event IS NULL) <> (event_text IS NULL));
