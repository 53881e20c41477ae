-- The logs' (actor_user_id, position) indexes serve no query: the only read
-- by actor is the audit's `actor_user_id = $n OR actor_device_id = $n`
-- (a user or a device), which an index on one of the two columns cannot
-- answer, so it reads the logs in position order and filters. Each append
-- paid for an index entry per event all the same.
DROP INDEX project_events_actor_idx;
DROP INDEX transfer_events_actor_idx;
