CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE out_rows (auction BIGINT, bidder BIGINT, price BIGINT, ms BIGINT, cnt BIGINT, total BIGINT, lo BIGINT, hi BIGINT, mean BIGINT, mean_d DOUBLE) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT auction, bidder, price, ms,
  COUNT(*) OVER w, SUM(price) OVER w, MIN(price) OVER w, MAX(price) OVER w, AVG(price) OVER w, AVG(CAST(price AS DOUBLE)) OVER w
FROM bid WHERE MOD(auction, 4) = 0
WINDOW w AS (PARTITION BY auction ORDER BY date_time ROWS BETWEEN 4 PRECEDING AND CURRENT ROW);
