//! The `nexmark` connector of SQL tables: the built-in Nexmark generator
//! ([`crate::source::nexmark`]) as rows, with the option names of Flink's `nexmark` connector
//! (`first-event.rate`, `next-event.rate`, `events.num`, `person.proportion`,
//! `auction.proportion`, `bid.proportion`, `max-emit-speed`).
//!
//! Two table shapes:
//! - the benchmark's nested `datagen` table: `event_type INT`, `person ROW<...>`,
//!   `auction ROW<...>`, `bid ROW<...>` (ROW columns are flattened into `person.id`, ...), one
//!   row per event with the other kinds' fields NULL (`event_type` 0 = person, 1 = auction,
//!   2 = bid);
//! - a flat table of one kind (`person`, `auction` or `bid`): its columns are that kind's
//!   fields; the kind is the `'nexmark.table'` option (a weir extension), else the table name.
//!
//! Field names match case-insensitively, with or without underscores (`dateTime`,
//! `date_time`). Integer fields are BIGINT (any integer type is accepted), strings STRING,
//! `dateTime` and `expires` TIMESTAMP(3) (or TIMESTAMP_LTZ(3)).
//!
//! Work is pushed into the generator: columns no operator reads are left NULL (strings are not
//! generated when no string column is read), and a filter `event_type = k` directly above the
//! scan makes the generator skip the other kinds without generating them (bids without
//! `extra` take the generator's allocation-free path).
//!
//! Invariants: split `i` of `n` generates events `i, i + n, ...` of one global stream, so the
//! rows are the same for every shard count; each split's event times never decrease; a split's
//! position is its count of events generated, so it restores exactly.

use std::sync::Arc;

use futures::future::LocalBoxFuture;
use rustc_hash::FxHashMap;

use super::ast::Pos;
use super::plan::{ColumnSource, Connector, TableDef};
use super::types::{Row, SqlType, Str, Value};
use super::SqlError;
use crate::error::Result;
use crate::shard::BuildCtx;
use crate::source::nexmark::{BidFields, Event, GeneratorConfig, NexmarkGenerator};
use crate::source::{ReadStatus, Source, SplitReader};

/// Event kinds, as `event_type` numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Person = 0,
    Auction = 1,
    Bid = 2,
}

/// One generated field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    EventType,
    PersonId,
    PersonName,
    PersonEmail,
    PersonCreditCard,
    PersonCity,
    PersonState,
    PersonDateTime,
    PersonExtra,
    AuctionId,
    AuctionItemName,
    AuctionDescription,
    AuctionInitialBid,
    AuctionReserve,
    AuctionDateTime,
    AuctionExpires,
    AuctionSeller,
    AuctionCategory,
    AuctionExtra,
    BidAuction,
    BidBidder,
    BidPrice,
    BidChannel,
    BidUrl,
    BidDateTime,
    BidExtra,
}

/// What a field holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldType {
    Int,
    Str,
    Time,
}

impl Field {
    /// The event kind holding the field (`None`: `event_type`, in every event).
    fn kind(self) -> Option<Kind> {
        use Field::*;
        Some(match self {
            EventType => return None,
            PersonId | PersonName | PersonEmail | PersonCreditCard | PersonCity | PersonState | PersonDateTime | PersonExtra => Kind::Person,
            AuctionId | AuctionItemName | AuctionDescription | AuctionInitialBid | AuctionReserve | AuctionDateTime | AuctionExpires | AuctionSeller
            | AuctionCategory | AuctionExtra => Kind::Auction,
            BidAuction | BidBidder | BidPrice | BidChannel | BidUrl | BidDateTime | BidExtra => Kind::Bid,
        })
    }

    fn field_type(self) -> FieldType {
        use Field::*;
        match self {
            PersonName | PersonEmail | PersonCreditCard | PersonCity | PersonState | PersonExtra | AuctionItemName | AuctionDescription | AuctionExtra
            | BidChannel | BidUrl | BidExtra => FieldType::Str,
            PersonDateTime | AuctionDateTime | AuctionExpires | BidDateTime => FieldType::Time,
            _ => FieldType::Int,
        }
    }

    /// The field `name` (normalised: lower case, no underscores) of `kind`.
    fn of(kind: Kind, name: &str) -> Option<Field> {
        use Field::*;
        Some(match (kind, name) {
            (Kind::Person, "id") => PersonId,
            (Kind::Person, "name") => PersonName,
            (Kind::Person, "emailaddress") => PersonEmail,
            (Kind::Person, "creditcard") => PersonCreditCard,
            (Kind::Person, "city") => PersonCity,
            (Kind::Person, "state") => PersonState,
            (Kind::Person, "datetime") => PersonDateTime,
            (Kind::Person, "extra") => PersonExtra,
            (Kind::Auction, "id") => AuctionId,
            (Kind::Auction, "itemname") => AuctionItemName,
            (Kind::Auction, "description") => AuctionDescription,
            (Kind::Auction, "initialbid") => AuctionInitialBid,
            (Kind::Auction, "reserve") => AuctionReserve,
            (Kind::Auction, "datetime") => AuctionDateTime,
            (Kind::Auction, "expires") => AuctionExpires,
            (Kind::Auction, "seller") => AuctionSeller,
            (Kind::Auction, "category") => AuctionCategory,
            (Kind::Auction, "extra") => AuctionExtra,
            (Kind::Bid, "auction") => BidAuction,
            (Kind::Bid, "bidder") => BidBidder,
            (Kind::Bid, "price") => BidPrice,
            (Kind::Bid, "channel") => BidChannel,
            (Kind::Bid, "url") => BidUrl,
            (Kind::Bid, "datetime") => BidDateTime,
            (Kind::Bid, "extra") => BidExtra,
            _ => return None,
        })
    }
}

fn kind_named(s: &str) -> Option<Kind> {
    match s.to_ascii_lowercase().as_str() {
        "person" => Some(Kind::Person),
        "auction" => Some(Kind::Auction),
        "bid" => Some(Kind::Bid),
        _ => None,
    }
}

fn normalise(s: &str) -> String {
    s.chars().filter(|c| *c != '_').collect::<String>().to_ascii_lowercase()
}

/// The connector of a `'connector' = 'nexmark'` table: options to a generator configuration,
/// physical columns to generated fields.
pub fn connector(
    table: &str,
    pos: Pos,
    physical: &[(String, SqlType)],
    opts: &std::collections::HashMap<String, (String, Pos)>,
) -> Result<Connector, SqlError> {
    let mut config = GeneratorConfig {
        rate_limited: true,
        ..Default::default()
    };
    let int = |k: &str, v: &str, p: Pos| -> Result<i64, SqlError> {
        v.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| SqlError::at(p, format!("option '{k}' = '{v}' must be a non-negative integer")))
    };
    let mut flat_kind = None;
    let mut next_rate = None;
    for (k, (v, p)) in opts {
        let p = *p;
        let small = |n: i64| -> Result<i32, SqlError> { i32::try_from(n).map_err(|_| SqlError::at(p, format!("option '{k}' = '{v}' is too large"))) };
        match k.as_str() {
            "connector" => {}
            "first-event.rate" => config.first_event_rate = small(int(k, v, p)?)?,
            "next-event.rate" => next_rate = Some((small(int(k, v, p)?)?, p)),
            "events.num" => config.max_events = int(k, v, p)? as u64,
            "person.proportion" => config.person_proportion = small(int(k, v, p)?)?,
            "auction.proportion" => config.auction_proportion = small(int(k, v, p)?)?,
            "bid.proportion" => config.bid_proportion = small(int(k, v, p)?)?,
            "max-emit-speed" => match v.trim() {
                "true" => config.rate_limited = false,
                "false" => config.rate_limited = true,
                _ => return Err(SqlError::at(p, format!("option 'max-emit-speed' = '{v}' must be 'true' or 'false'"))),
            },
            "keep-alive" if v.trim() == "false" => {}
            "nexmark.table" => {
                flat_kind = Some(kind_named(v).ok_or_else(|| SqlError::at(p, format!("'nexmark.table' = '{v}' must be 'person', 'auction' or 'bid'")))?)
            }
            "nexmark.base-time" => config.base_time = int(k, v, p)?,
            _ => {
                return Err(SqlError::at(p, format!("option '{k}' is not supported by weir's nexmark connector")).hint(
                    "supported: first-event.rate, next-event.rate (equal to first-event.rate), events.num, person.proportion, auction.proportion, \
                     bid.proportion, max-emit-speed, nexmark.table, nexmark.base-time",
                ))
            }
        }
    }
    if let Some((r, p)) = next_rate {
        if r != config.first_event_rate {
            return Err(SqlError::at(p, "'next-event.rate' must equal 'first-event.rate'").hint("weir's generator has one constant rate"));
        }
    }
    config.validate().map_err(|e| SqlError::at(pos, e))?;
    let nested = physical.iter().any(|(n, _)| n.contains('.') || n.eq_ignore_ascii_case("event_type"));
    let flat = if nested {
        None
    } else {
        Some(flat_kind.or_else(|| kind_named(table)).ok_or_else(|| {
            SqlError::at(pos, format!("nexmark table `{table}`: which events does it hold?"))
                .hint("declare the benchmark's datagen table (event_type, person ROW<...>, auction ROW<...>, bid ROW<...>), or add 'nexmark.table' = 'person' | 'auction' | 'bid'")
        })?)
    };
    let mut fields = Vec::new();
    for (name, ty) in physical {
        let field = if name.eq_ignore_ascii_case("event_type") && flat.is_none() {
            Some(Field::EventType)
        } else {
            match (flat, name.split_once('.')) {
                (Some(k), None) => Field::of(k, &normalise(name)),
                (None, Some((row, f))) => kind_named(row).and_then(|k| Field::of(k, &normalise(f))),
                _ => None,
            }
        };
        let field = field.ok_or_else(|| {
            SqlError::at(pos, format!("nexmark table `{table}`: column `{name}` is not a Nexmark field")).hint(
                "person: id, name, emailAddress, creditCard, city, state, dateTime, extra; auction: id, itemName, description, initialBid, reserve, \
                 dateTime, expires, seller, category, extra; bid: auction, bidder, price, channel, url, dateTime, extra",
            )
        })?;
        let ok = match field.field_type() {
            FieldType::Int => ty.is_integer(),
            FieldType::Str => *ty == SqlType::String,
            FieldType::Time => matches!(ty, SqlType::Timestamp(_) | SqlType::TimestampLtz(_)),
        };
        if !ok {
            let want = match field.field_type() {
                FieldType::Int => "BIGINT",
                FieldType::Str => "STRING",
                FieldType::Time => "TIMESTAMP(3)",
            };
            return Err(SqlError::at(pos, format!("nexmark table `{table}`: column `{name}` is {ty}, expected {want}")));
        }
        fields.push((field, *ty));
    }
    Ok(Connector::Nexmark {
        config,
        fields: fields.into(),
        flat,
    })
}

/// A `nexmark` table as a source of rows.
pub struct NexmarkRowSource {
    table: Arc<TableDef>,
    config: GeneratorConfig,
    fields: Arc<[(Field, SqlType)]>,
    /// Physical columns some operator reads.
    needed: Arc<[bool]>,
    /// Kinds to generate (by `Kind as usize`).
    kinds: [bool; 3],
    post: Arc<super::source::ScanPost>,
}

impl NexmarkRowSource {
    /// `needed`: which physical columns are read; `event_type`: the kind a filter directly
    /// above the scan keeps, if any.
    /// `post`: the filter and projection fused into the scan.
    pub fn new(table: Arc<TableDef>, needed: Vec<bool>, event_type: Option<i64>, post: super::source::ScanPost) -> Result<Self, SqlError> {
        let Connector::Nexmark { config, fields, flat } = &table.connector else {
            return Err(SqlError::at(table.pos, format!("table `{}` is not a nexmark table", table.name)));
        };
        let mut kinds = match flat {
            Some(k) => {
                let mut ks = [false; 3];
                ks[*k as usize] = true;
                ks
            }
            None => [true; 3],
        };
        if let Some(t) = event_type {
            for (k, on) in kinds.iter_mut().enumerate() {
                *on &= k as i64 == t;
            }
        }
        let mut config = config.clone();
        config.with_strings = fields.iter().zip(needed.iter()).any(|((f, _), n)| *n && f.field_type() == FieldType::Str);
        Ok(Self {
            config,
            fields: fields.clone(),
            needed: needed.into(),
            kinds,
            table,
            post: Arc::new(post),
        })
    }
}

impl Source<Row> for NexmarkRowSource {
    fn name(&self) -> String {
        self.table.name.clone()
    }
    fn split_count(&self, shards: usize) -> Result<usize> {
        Ok(shards.max(1))
    }
    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<Row>>> {
        let n = self.split_count(ctx.shards)?;
        let bids_only = self.kinds == [false, false, true];
        let needs_extra = self.fields.iter().zip(self.needed.iter()).any(|((f, _), n)| *n && *f == Field::BidExtra);
        let bid_plan = if bids_only {
            BidPlan::new(&self.table, &self.fields, &self.needed, &self.post)
        } else {
            None
        };
        Ok(Box::new(NexmarkRowReader {
            bid_plan,
            extra: Vec::new(),
            narrow: Row::new(),
            generator: NexmarkGenerator::new(self.config.clone(), split as u32, n as u32),
            table: self.table.clone(),
            fields: self.fields.clone(),
            needed: self.needed.clone(),
            kinds: self.kinds,
            fast_bids: bids_only && !needs_extra,
            interned: FxHashMap::default(),
            started: None,
            split,
            physical: Row::new(),
            wide: Row::new(),
            program: super::source::ScanProgram::new(&self.table, &self.post),
        }))
    }
}

struct NexmarkRowReader {
    /// Bids only, every column read a bid field or a constant: rows straight from the bid.
    bid_plan: Option<BidPlan>,
    /// The `extra` padding of the current bid (reused).
    extra: Vec<u8>,
    /// The bid plan's input row (reused).
    narrow: Row,
    generator: NexmarkGenerator,
    table: Arc<TableDef>,
    fields: Arc<[(Field, SqlType)]>,
    needed: Arc<[bool]>,
    kinds: [bool; 3],
    /// Bids without `extra`: the generator's allocation-free path.
    fast_bids: bool,
    /// Channel and url strings of the fast path, shared (by address of the static text).
    interned: FxHashMap<usize, Str>,
    started: Option<std::time::Instant>,
    split: usize,
    physical: Row,
    wide: Row,
    program: super::source::ScanProgram,
}

/// Where a column of a bid scan comes from.
#[derive(Clone, Debug)]
enum BidColumn {
    Field(Field, SqlType),
    Const(Value),
}

/// A scan that generates only bids and reads only bid fields and constants (the event type,
/// other kinds' fields, computed columns that fold to either): its rows are built straight from
/// the generated bid, narrow (only the columns the filter and projection read), with the
/// filter and projection folded over the constants.
#[derive(Clone, Debug)]
struct BidPlan {
    /// The narrow row's columns.
    columns: Vec<BidColumn>,
    predicate: Option<super::expr::Expr>,
    project: super::source::Projection,
    /// Output columns straight from the bid (no filter, the projection only picks columns).
    direct: Option<Vec<BidColumn>>,
    /// `extra` is read.
    extra: bool,
}

impl BidPlan {
    fn new(table: &TableDef, fields: &[(Field, SqlType)], needed: &[bool], post: &super::source::ScanPost) -> Option<Self> {
        use super::expr::Expr;
        // Physical columns known in every bid: the event type, other kinds' fields, unread ones.
        let physical_const = |p: usize| -> Option<Value> {
            let (f, _) = fields.get(p)?;
            match f.kind() {
                _ if !needed.get(p).copied().unwrap_or(false) => Some(Value::Null),
                None => Some(Value::Int(Kind::Bid as i64)),
                Some(Kind::Bid) => None,
                Some(_) => Some(Value::Null),
            }
        };
        let field = |p: usize| BidColumn::Field(fields[p].0, fields[p].1);
        let table_columns: Vec<Option<BidColumn>> = table
            .layout
            .iter()
            .enumerate()
            .map(|(k, c)| {
                if post.columns.as_ref().is_some_and(|read| !read[k]) {
                    return Some(BidColumn::Const(Value::Null));
                }
                match c {
                    ColumnSource::Physical(p) => Some(physical_const(*p).map(BidColumn::Const).unwrap_or_else(|| field(*p))),
                    ColumnSource::Computed(e) => match e.fold(&physical_const) {
                        Expr::Lit(v) => Some(BidColumn::Const(v)),
                        Expr::Col(p) => Some(field(p)),
                        _ => None,
                    },
                    ColumnSource::Metadata(_) => Some(BidColumn::Const(Value::Null)),
                }
            })
            .collect();
        let known = |k: usize| match table_columns.get(k) {
            Some(Some(BidColumn::Const(v))) => Some(v.clone()),
            _ => None,
        };
        let predicate = post
            .predicate
            .as_ref()
            .map(|p| p.fold(&known))
            .filter(|p| !matches!(p, Expr::Lit(Value::Bool(true))));
        let project: Vec<Expr> = match &post.project {
            Some(exprs) => exprs.iter().map(|e| e.fold(&known)).collect(),
            None => (0..table.layout.len()).map(|k| Expr::Col(k).fold(&known)).collect(),
        };
        // The narrow row: the table columns still read, in order.
        let mut read = vec![false; table.layout.len()];
        for e in project.iter().chain(predicate.iter()) {
            e.for_each_column(&mut |k| {
                if let Some(r) = read.get_mut(k) {
                    *r = true;
                }
            });
        }
        let narrow: Vec<usize> = (0..read.len()).filter(|k| read[*k]).collect();
        let columns = narrow.iter().map(|k| table_columns[*k].clone()).collect::<Option<Vec<_>>>()?;
        let position = |k: usize| narrow.iter().position(|n| *n == k).expect("every column read is narrow");
        let predicate = predicate.map(|p| p.remap(&position));
        let project: Vec<Expr> = project.iter().map(|e| e.remap(&position)).collect();
        let projection = super::source::Projection::new(&project, columns.len());
        let direct = if predicate.is_none() {
            project
                .iter()
                .map(|e| match e {
                    Expr::Col(i) => Some(columns[*i].clone()),
                    Expr::Lit(v) => Some(BidColumn::Const(v.clone())),
                    _ => None,
                })
                .collect()
        } else {
            None
        };
        Some(Self {
            extra: columns.iter().any(|c| matches!(c, BidColumn::Field(Field::BidExtra, _))),
            columns,
            predicate,
            project: projection,
            direct,
        })
    }

    #[inline]
    fn value(c: &BidColumn, b: &BidFields, extra: &[u8], interned: &mut FxHashMap<usize, Str>) -> Value {
        match c {
            BidColumn::Const(v) => v.clone(),
            BidColumn::Field(f, ty) => match f {
                Field::BidAuction => Value::Int(b.auction),
                Field::BidBidder => Value::Int(b.bidder),
                Field::BidPrice => Value::Int(b.price),
                Field::BidChannel => intern(interned, b.channel),
                Field::BidUrl => intern(interned, b.url),
                Field::BidDateTime => time(b.date_time, *ty),
                // The generator writes ASCII letters.
                Field::BidExtra => Value::Str(Str::from(std::str::from_utf8(extra).unwrap_or_default())),
                _ => Value::Null,
            },
        }
    }

    /// The output row of bid `b` (if the filter keeps it) into `out`.
    #[inline]
    fn emit(&self, b: &BidFields, extra: &[u8], interned: &mut FxHashMap<usize, Str>, narrow: &mut Row, out: &mut Vec<Row>) {
        if let Some(direct) = &self.direct {
            out.push(Row::new());
            let o = out.last_mut().expect("just pushed");
            o.extend(direct.iter().map(|c| Self::value(c, b, extra, interned)));
            return;
        }
        narrow.clear();
        narrow.extend(self.columns.iter().map(|c| Self::value(c, b, extra, interned)));
        if self.predicate.as_ref().is_some_and(|p| !p.test(narrow)) {
            return;
        }
        self.project.apply(narrow, out);
    }
}

fn intern(map: &mut FxHashMap<usize, Str>, s: &'static str) -> Value {
    Value::Str(map.entry(s.as_ptr() as usize ^ (s.len() << 48)).or_insert_with(|| Str::from(s)).clone())
}

fn time(ms: i64, ty: SqlType) -> Value {
    match ty {
        SqlType::TimestampLtz(_) => Value::TimestampLtz(ms),
        _ => Value::Timestamp(ms),
    }
}

fn text(s: &str) -> Value {
    Value::Str(Str::from(s))
}

impl NexmarkRowReader {
    /// The value of `field` of `event` (NULL if the event is of another kind).
    fn value(field: Field, ty: SqlType, event: &Event) -> Value {
        use Field::*;
        match (field, event) {
            (EventType, Event::Person(_)) => Value::Int(0),
            (EventType, Event::Auction(_)) => Value::Int(1),
            (EventType, Event::Bid(_)) => Value::Int(2),
            (PersonId, Event::Person(p)) => Value::Int(p.id),
            (PersonName, Event::Person(p)) => text(&p.name),
            (PersonEmail, Event::Person(p)) => text(&p.email_address),
            (PersonCreditCard, Event::Person(p)) => text(&p.credit_card),
            (PersonCity, Event::Person(p)) => text(&p.city),
            (PersonState, Event::Person(p)) => text(&p.state),
            (PersonDateTime, Event::Person(p)) => time(p.date_time, ty),
            (PersonExtra, Event::Person(p)) => text(&p.extra),
            (AuctionId, Event::Auction(a)) => Value::Int(a.id),
            (AuctionItemName, Event::Auction(a)) => text(&a.item_name),
            (AuctionDescription, Event::Auction(a)) => text(&a.description),
            (AuctionInitialBid, Event::Auction(a)) => Value::Int(a.initial_bid),
            (AuctionReserve, Event::Auction(a)) => Value::Int(a.reserve),
            (AuctionDateTime, Event::Auction(a)) => time(a.date_time, ty),
            (AuctionExpires, Event::Auction(a)) => time(a.expires, ty),
            (AuctionSeller, Event::Auction(a)) => Value::Int(a.seller),
            (AuctionCategory, Event::Auction(a)) => Value::Int(a.category),
            (AuctionExtra, Event::Auction(a)) => text(&a.extra),
            (BidAuction, Event::Bid(b)) => Value::Int(b.auction),
            (BidBidder, Event::Bid(b)) => Value::Int(b.bidder),
            (BidPrice, Event::Bid(b)) => Value::Int(b.price),
            (BidChannel, Event::Bid(b)) => text(&b.channel),
            (BidUrl, Event::Bid(b)) => text(&b.url),
            (BidDateTime, Event::Bid(b)) => time(b.date_time, ty),
            (BidExtra, Event::Bid(b)) => text(&b.extra),
            _ => Value::Null,
        }
    }

    /// Generate one event into `out` (if it is of a kind this table keeps); `false` when done.
    fn step(&mut self, out: &mut Vec<Row>) -> bool {
        if let Some(plan) = &self.bid_plan {
            let Some((bid, _)) = self.generator.next_bid_with_extra(plan.extra.then_some(&mut self.extra)) else {
                return false;
            };
            if let Some(b) = bid {
                plan.emit(&b, &self.extra, &mut self.interned, &mut self.narrow, out);
            }
            return true;
        }
        self.physical.clear();
        if self.fast_bids {
            let Some((bid, _)) = self.generator.next_bid_fields() else { return false };
            let Some(b) = bid else { return true };
            for (k, (f, ty)) in self.fields.iter().enumerate() {
                let v = if !self.needed[k] {
                    Value::Null
                } else {
                    match f {
                        Field::EventType => Value::Int(2),
                        Field::BidAuction => Value::Int(b.auction),
                        Field::BidBidder => Value::Int(b.bidder),
                        Field::BidPrice => Value::Int(b.price),
                        Field::BidChannel => intern(&mut self.interned, b.channel),
                        Field::BidUrl => intern(&mut self.interned, b.url),
                        Field::BidDateTime => time(b.date_time, *ty),
                        _ => Value::Null,
                    }
                };
                self.physical.push(v);
            }
        } else {
            let Some((event, _)) = self.generator.next_event_of_kinds(self.kinds) else {
                return false;
            };
            let Some(event) = event else { return true };
            for (k, (f, ty)) in self.fields.iter().enumerate() {
                self.physical.push(if self.needed[k] { Self::value(*f, *ty, &event) } else { Value::Null });
            }
        }
        let _ = self
            .program
            .emit(&self.table, &mut self.physical, &mut self.wide, None, out, |_| Ok::<(), ()>(()));
        true
    }

    /// `Some(wait_ms)` if the next event is not due yet (rate-limited tables).
    fn wait_ms(&mut self) -> Option<u64> {
        let due = self.generator.next_event_due_ms()?;
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        let now = started.elapsed().as_millis() as i64;
        (due > now).then(|| (due - now) as u64)
    }
}

impl SplitReader<Row> for NexmarkRowReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<Row>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        let status = (|| {
            if let Some(wait) = self.wait_ms() {
                return ReadStatus::Idle { retry_after_ms: wait };
            }
            let limited = self.generator.next_event_due_ms().is_some();
            // Bounded work per call: at most `max` events generated, kept or not.
            for _ in 0..max {
                if !self.step(out) {
                    return ReadStatus::Exhausted;
                }
                if limited && self.wait_ms().is_some() {
                    break;
                }
            }
            if self.generator.is_done() {
                ReadStatus::Exhausted
            } else {
                ReadStatus::More
            }
        })();
        Box::pin(async move { Ok(status) })
    }

    fn describe(&self) -> String {
        format!("nexmark table {} split {}", self.table.name, self.split)
    }

    fn position(&self) -> Result<Vec<u8>> {
        Ok(crate::checkpoint::snapshot::encode(&self.generator.events_emitted()))
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let n: u64 = crate::checkpoint::snapshot::decode(position, "nexmark split position")?;
        self.generator.skip_to(n);
        Ok(())
    }
}

/// Is `layout` exactly the physical columns in order (rows need no completion)?
pub fn is_identity_layout(layout: &[ColumnSource], physical: usize) -> bool {
    layout.len() == physical && layout.iter().enumerate().all(|(k, c)| matches!(c, ColumnSource::Physical(i) if *i == k))
}
