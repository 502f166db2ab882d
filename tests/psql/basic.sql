-- Exercised by tests/test_psql.py (psql -A -t -f).
CREATE TABLE user_stats (uid TEXT PRIMARY KEY, ts TIMESTAMPTZ, txn_count BIGINT);
INSERT INTO user_stats VALUES ('a', '2024-01-01T00:00:00Z', 1);
INSERT INTO user_stats VALUES ('a', '2024-01-03T00:00:00Z', 5);
SELECT 'r_latest', uid, txn_count FROM user_stats WHERE uid = 'a';
SELECT 'r_as_of', uid, txn_count FROM user_stats WHERE uid = 'a' AS OF '2024-01-02T00:00:00Z';
CREATE TABLE clicks (uid TEXT, ts TIMESTAMPTZ, page TEXT);
\copy clicks FROM STDIN WITH (FORMAT csv)
a,2024-01-01T00:00:00Z,/home
a,2024-01-01T00:00:01Z,/cart
b,2024-01-02T00:00:00Z,/home
c,2024-01-03T00:00:00Z,"/a,b"
\.
SELECT 'r_copied', count(*) FROM clicks;
SET thyme.as_of = '2024-01-01T12:00:00Z';
SELECT 'r_set_as_of', count(*) FROM clicks;
