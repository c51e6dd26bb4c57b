-- Query 12: processing-time windows (nexmark q12): how many bids each bidder makes in each
-- 10 s window of processing time.
--
-- The benchmark's window-TVF text over a processing-time attribute (`PROCTIME()` in the
-- subquery); windows fire by the wall clock. Unlike Flink, which drops processing-time windows
-- still open when a bounded input ends, weir fires them at end of input, so every bid is counted.
CREATE TABLE nexmark_q12 (
  bidder BIGINT,
  bid_count BIGINT,
  starttime TIMESTAMP(3),
  endtime TIMESTAMP(3)
) WITH ('connector' = '${SINK}');

INSERT INTO nexmark_q12
SELECT B.bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM TABLE(TUMBLE((SELECT bidder, PROCTIME() AS p_time FROM bid), DESCRIPTOR(p_time), INTERVAL '10' SECOND)) B
GROUP BY B.bidder, window_start, window_end;
