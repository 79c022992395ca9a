-- Issue 14 (一码通用): what kind of code each scan held, and for a foreign certificate its
-- issuer (a country code or an issuer URL) and a keyed hash of its certificate id: never the
-- holder's name or the certificate's payload. NULL kind: a text of no known kind.
ALTER TABLE scans ADD COLUMN kind text DEFAULT 'passcode';
ALTER TABLE scans ADD COLUMN issuer text;
ALTER TABLE scans ADD COLUMN cert_hash bytea;
