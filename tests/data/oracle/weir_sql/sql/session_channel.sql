CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE out_rows (channel STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), lo BIGINT, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT channel, window_start, window_end, MIN(price), COUNT(bidder)
FROM TABLE(SESSION(TABLE bid PARTITION BY channel, DESCRIPTOR(date_time), INTERVAL '1' SECOND))
GROUP BY channel, window_start, window_end;
