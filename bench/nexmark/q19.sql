-- Query 19: auction top-10 price (nexmark q19) as a window Top-N: the 10 highest bids of each
-- auction per 10 s tumbling window. (The benchmark's text ranks over the whole unbounded
-- stream, which produces updates; weir's SQL is append-only.)
CREATE TABLE nexmark_q19 (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    channel VARCHAR,
    url VARCHAR,
    `dateTime` TIMESTAMP(3),
    extra VARCHAR,
    rank_number BIGINT
) WITH ('connector' = '${SINK}');

INSERT INTO nexmark_q19
SELECT auction, bidder, price, channel, url, `dateTime`, extra, rank_number FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end, auction ORDER BY price DESC) AS rank_number
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND)))
WHERE rank_number <= 10;
