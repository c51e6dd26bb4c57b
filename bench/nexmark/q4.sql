-- Query 4: average price per category (nexmark q4) as window operations: the final price of
-- an auction is the highest bid on it within its life [dateTime, expires], and each category's
-- average of final prices is reported per 10 s tumbling window.
--
-- How it differs from the benchmark's text: Flink's q4 joins every auction with all its bids
-- by a regular join (bounded only by `B.dateTime BETWEEN A.dateTime AND A.expires`), takes
-- MAX(price) per auction with a non-windowed GROUP BY and then AVG per category over the whole
-- stream — updating results, which weir's append-only SQL does not produce. Here auctions and
-- bids meet in a window join on the same 10 s tumbling window (so a bid counts for an auction
-- only in the auction's own window, and within the auction's life), the per-auction MAX is a
-- window aggregate over the join, and the per-category AVG a cascaded window aggregate over that
-- (one average per category and window, not one running average).
CREATE TABLE nexmark_q4 (
  id BIGINT,
  final BIGINT
) WITH ('connector' = '${SINK}');

INSERT INTO nexmark_q4
SELECT Q.category, AVG(Q.final)
FROM (
  SELECT MAX(B.price) AS final, A.category, A.window_start, A.window_end
  FROM (
    SELECT id, category, `dateTime`, expires, window_start, window_end, window_time
    FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  ) A
  JOIN (
    SELECT auction, price, `dateTime`, window_start, window_end
    FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  ) B
  ON A.window_start = B.window_start AND A.window_end = B.window_end AND A.id = B.auction
     AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires
  GROUP BY A.id, A.category, A.window_start, A.window_end
) Q
GROUP BY Q.category, Q.window_start, Q.window_end;
