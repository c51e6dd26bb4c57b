-- Query 3: local item suggestion (nexmark q3) as an interval join: sellers in OR, ID or CA of
-- category-10 auctions opened within 10 s after the seller registered. (The benchmark's text is
-- an unbounded regular join, which keeps all persons and auctions forever; weir bounds it in
-- event time.)
CREATE TABLE nexmark_q3 (
  name VARCHAR,
  city VARCHAR,
  state VARCHAR,
  id BIGINT
) WITH ('connector' = '${SINK}');

INSERT INTO nexmark_q3
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P
ON A.seller = P.id AND A.`dateTime` BETWEEN P.`dateTime` AND P.`dateTime` + INTERVAL '10' SECOND
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
