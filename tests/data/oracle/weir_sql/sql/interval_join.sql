CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE auction (
  id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT, ms BIGINT, expires BIGINT, seller BIGINT, category BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/auction.csv', 'format' = 'csv');
CREATE TABLE out_rows (id BIGINT, seller BIGINT, bidder BIGINT, price BIGINT, ams BIGINT, bms BIGINT) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT A.id, A.seller, B.bidder, B.price, A.ms, B.ms
FROM auction A JOIN bid B
ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.date_time + INTERVAL '2' SECOND AND B.price > A.initial_bid;
