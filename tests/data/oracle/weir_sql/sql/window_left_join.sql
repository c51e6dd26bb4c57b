CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE out_rows (auction BIGINT, price BIGINT, maxprice BIGINT, window_start TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT L.auction, L.price, R.maxprice, L.window_start FROM
  (SELECT auction, price, window_start, window_end FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) WHERE MOD(auction, 50) = 0) L
LEFT JOIN
  (SELECT auction, MAX(price) AS maxprice, window_start, window_end FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
     WHERE MOD(bidder, 3) = 0 GROUP BY auction, window_start, window_end) R
ON L.window_start = R.window_start AND L.window_end = R.window_end AND L.auction = R.auction AND L.price < R.maxprice;
