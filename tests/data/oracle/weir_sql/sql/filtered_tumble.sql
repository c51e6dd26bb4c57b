CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE VIEW expensive AS SELECT auction, price, date_time FROM bid WHERE price > 90000;
CREATE TABLE out_rows (window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, top BIGINT, m BIGINT) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT window_start, window_end, COUNT(*), MAX(price), COUNT(DISTINCT auction)
FROM TABLE(TUMBLE(TABLE expensive, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
