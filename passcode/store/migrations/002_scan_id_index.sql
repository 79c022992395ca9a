-- A retried scan_id is recorded once even when the first attempt went straight to Postgres
-- (Redis down) and so carries another server time: inserts check this index first.
CREATE INDEX scans_scan_id ON scans (scan_id);
