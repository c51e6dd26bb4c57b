-- Query 7: highest bid (nexmark q7) as a window join: the bids whose price is the highest of
-- their 10 s tumbling window. (The benchmark's text joins `bid` with the per-window maximum by a
-- regular join and `B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime`;
-- weir states the same question with window_start/window_end equality.)
CREATE TABLE nexmark_q7 (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  `dateTime` TIMESTAMP(3),
  extra VARCHAR
) WITH ('connector' = '${SINK}');

INSERT INTO nexmark_q7
SELECT B.auction, B.bidder, B.price, B.`dateTime`, B.extra
FROM (
  SELECT auction, bidder, price, `dateTime`, extra, window_start, window_end
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
) B
JOIN (
  SELECT MAX(price) AS maxprice, window_start, window_end
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end
) B1
ON B.window_start = B1.window_start AND B.window_end = B1.window_end AND B.price = B1.maxprice;
