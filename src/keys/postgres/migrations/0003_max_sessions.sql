-- pyexec schema version 3: a key's own cap on open sessions (NULL: the server's default).

ALTER TABLE pyexec_keys ADD COLUMN max_sessions integer CHECK (max_sessions >= 0);
