CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE q1_rows (auction BIGINT, price DOUBLE, bidder BIGINT, ms BIGINT) WITH ('connector' = 'filesystem', 'path' = '${OUT}/q1_project', 'format' = 'csv');
CREATE TABLE q2_rows (auction BIGINT, price BIGINT) WITH ('connector' = 'filesystem', 'path' = '${OUT}/q2_filter', 'format' = 'csv');
EXECUTE STATEMENT SET
BEGIN
INSERT INTO q1_rows SELECT auction, 0.908 * price, bidder, ms FROM bid;
INSERT INTO q2_rows SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0 AND price > 5000;
END;
