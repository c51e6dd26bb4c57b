CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE out_rows (auction BIGINT, price BIGINT, ms BIGINT, hi BIGINT, lo BIGINT, google BIGINT) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT auction, price, ms,
  MAX(price) OVER w, MIN(price) OVER w, SUM(CASE WHEN channel = 'Google' THEN price END) OVER w
FROM bid WHERE MOD(auction, 7) = 0
WINDOW w AS (ORDER BY date_time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW);
