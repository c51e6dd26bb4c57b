CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE VIEW cheap AS SELECT auction, bidder, price, UPPER(channel) AS ch, date_time FROM bid WHERE price < 50000;
CREATE TABLE out_rows (ch STRING, window_start TIMESTAMP(3), n BIGINT, half DOUBLE, even_max BIGINT, avg_d DOUBLE) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT ch, window_start, COUNT(*) AS n, SUM(price * 0.5) AS half, MAX(CASE WHEN MOD(bidder, 2) = 0 THEN price ELSE 0 END), AVG(CAST(price AS DOUBLE))
FROM TABLE(TUMBLE(TABLE cheap, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY ch, window_start, window_end HAVING COUNT(*) > 100;
