-- The monolith's identity of imported users: its primary key (legacy_user_id, the claim a
-- Django project maps tokens with), username, names, staff flag, groups (as dumped, JSON) and
-- its last login. last_login_at is ours: the last successful login at accounts.
ALTER TABLE users ADD COLUMN legacy_user_id BIGINT;
ALTER TABLE users ADD COLUMN username TEXT;
ALTER TABLE users ADD COLUMN first_name TEXT;
ALTER TABLE users ADD COLUMN last_name TEXT;
ALTER TABLE users ADD COLUMN is_staff BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE users ADD COLUMN legacy_last_login TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN last_login_at TIMESTAMPTZ;
CREATE UNIQUE INDEX users_legacy_user_id_key ON users (legacy_user_id);
