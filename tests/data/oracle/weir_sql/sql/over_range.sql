CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE out_rows (bidder BIGINT, auction BIGINT, price BIGINT, ms BIGINT, cnt BIGINT, google BIGINT, total BIGINT, lo BIGINT, hi BIGINT, mean DECIMAL(38, 6)) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT bidder, auction, price, ms,
  COUNT(*) OVER (PARTITION BY bidder ORDER BY date_time RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW),
  COUNT(CASE WHEN channel = 'Google' THEN price END) OVER (PARTITION BY bidder ORDER BY date_time RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW),
  SUM(CASE WHEN channel = 'Google' THEN price END) OVER (PARTITION BY bidder ORDER BY date_time RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW),
  MIN(price) OVER (PARTITION BY bidder ORDER BY date_time RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW),
  MAX(price) OVER (PARTITION BY bidder ORDER BY date_time RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW),
  AVG(price * 0.5) OVER (PARTITION BY bidder ORDER BY date_time RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)
FROM bid WHERE MOD(bidder, 3) = 0;
