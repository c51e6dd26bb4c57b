CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE out_rows (auction BIGINT, window_end TIMESTAMP(3), hi BIGINT, avg_hi BIGINT, cnt BIGINT, avg_d DOUBLE) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT auction, window_end, hi,
  AVG(hi) OVER (PARTITION BY auction ORDER BY window_time ROWS BETWEEN 3 PRECEDING AND CURRENT ROW),
  COUNT(*) OVER (PARTITION BY auction ORDER BY window_time ROWS BETWEEN 3 PRECEDING AND CURRENT ROW),
  AVG(CAST(hi AS DOUBLE)) OVER (PARTITION BY auction ORDER BY window_time ROWS BETWEEN 3 PRECEDING AND CURRENT ROW)
FROM (
  SELECT auction, window_start, window_end, window_time, MAX(price) AS hi
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
  GROUP BY auction, window_start, window_end, window_time);
