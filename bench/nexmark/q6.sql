-- Query 6: average selling price by seller (nexmark q6): for each closed auction, the average
-- final price of the seller's last auctions (this one and the 10 before it, the benchmark's
-- `ROWS BETWEEN 10 PRECEDING AND CURRENT ROW`), as an OVER aggregation on event time.
--
-- How it differs from the benchmark's text: Flink's q6 puts the OVER window over a regular join
-- of auctions and bids with a non-windowed GROUP BY per auction (updating results, which Flink
-- itself cannot feed into an OVER aggregation). Here the final price of an auction is the window
-- aggregate of q4's window join — the highest bid within the auction's life among the bids of
-- the auction's own 10 s tumbling window — and the OVER window orders those final prices by their
-- window_time. Auctions of one seller closing in the same window are framed in arrival order.
CREATE TABLE nexmark_q6 (
  seller BIGINT,
  avg_price BIGINT
) WITH ('connector' = '${SINK}');

INSERT INTO nexmark_q6
SELECT Q.seller, AVG(Q.final) OVER (PARTITION BY Q.seller ORDER BY Q.window_time ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)
FROM (
  SELECT MAX(B.price) AS final, A.seller, A.window_start, A.window_end, A.window_time
  FROM (
    SELECT id, seller, `dateTime`, expires, window_start, window_end, window_time
    FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  ) A
  JOIN (
    SELECT auction, price, `dateTime`, window_start, window_end
    FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  ) B
  ON A.window_start = B.window_start AND A.window_end = B.window_end AND A.id = B.auction
     AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires
  GROUP BY A.id, A.seller, A.window_start, A.window_end, A.window_time
) Q;
