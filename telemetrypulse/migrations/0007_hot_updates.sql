-- Room for a whole page of new row versions (issue 11, keep-up at 12,500 devices).
--
-- A live window row or latest value is rewritten at every report of its device, and the rows of devices that report
-- at the same moment sit on the same pages (they were inserted by the same batch) — so one sink transaction rewrites
-- most rows of a page at once. An update stays on its page without new index entries (a HOT update) only while the
-- page has room for the new version, and the versions the same transaction just replaced cannot be pruned yet. At
-- fillfactor 80 (0003) only ~61 % of these updates were HOT; the rest inserted into all three indexes and left the
-- tables twice their live size. At 50 a page keeps room for a new version of each of its rows: 99 % HOT, the tables
-- smaller while live, and the keep-up phase's p99 produce→PostgreSQL 3.9–18 s → 1.6 s (bench --phases keepup, same
-- machine). The cost: pages of windows that will not change again stay half full (the 5- and 15-minute tables take
-- ~1.6× the space of packed pages until retention removes them); hourly and daily rows and latest values are few.
-- Applies to pages written from now on.
ALTER TABLE telemetry_device_agg_5m SET (fillfactor = 50);
ALTER TABLE telemetry_device_agg_15m SET (fillfactor = 50);
ALTER TABLE telemetry_device_agg_1h SET (fillfactor = 50);
ALTER TABLE telemetry_device_agg_1d SET (fillfactor = 50);
ALTER TABLE telemetry_device_latest SET (fillfactor = 50);
