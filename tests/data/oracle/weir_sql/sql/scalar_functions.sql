CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE out_rows (auction BIGINT, q BIGINT, d DOUBLE, len INT, s STRING, band STRING, t TIMESTAMP(3), dec_price DECIMAL(21, 13)) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT auction, price / 7, CAST(price AS DOUBLE) / 7, CHAR_LENGTH(url), SUBSTRING(channel, 2, 3) || '-' || LOWER(channel),
  CASE WHEN price > 50000 THEN 'hi' WHEN price > 10000 THEN 'mid' ELSE 'lo' END, CAST(date_time AS TIMESTAMP(3)), CAST(price AS DECIMAL(10, 2)) / 3
FROM bid WHERE auction BETWEEN 1000 AND 1010 AND channel IN ('Apple', 'Google') AND NOT (bidder = 1000);
