//! The PostgreSQL sink (Flink's `jdbc` connector in SQL): batched `INSERT`s (or upserts with
//! `ON CONFLICT ... DO UPDATE`) over `tokio-postgres`, run on the shard's glommio executor through
//! `Config::connect_raw` on a glommio `TcpStream` (tokio-util's compat layer adapts the I/O
//! traits; no tokio runtime, no blocking call).
//!
//! Delivery guarantees ([`DeliveryGuarantee`]):
//! - `AtLeastOnce` (Flink's default for JDBC): every flush is one transaction (`BEGIN; INSERT
//!   ...; COMMIT` in one round trip); a replay after a failure may insert rows again (use an
//!   upsert key to make replays overwrite).
//! - `ExactlyOnce`: two-phase commit. Rows of a checkpoint epoch go into one transaction;
//!   [`crate::shard::Flusher::pre_commit`] runs `PREPARE TRANSACTION '<prefix>-<shard>-<epoch>'`
//!   (durable on the server, invisible) and returns that id as the committable;
//!   [`crate::shard::Flusher::commit`] runs `COMMIT PREPARED` (idempotent: an id that no longer
//!   exists was committed). On restore, [`PostgresWriter::restore`] commits the checkpoint's
//!   committables handed to this shard and rolls back every other prepared transaction of this
//!   sink and shard that the checkpoint does not reference (a crashed run's leftovers; shard 0
//!   also takes those of shards that no longer exist). At end of input the open transaction is
//!   prepared and committed. Without checkpointing, exactly-once commits at end of input only.
//!   `COMMIT PREPARED` runs on a second (control) connection: the data connection already
//!   holds the next epoch's open transaction when a checkpoint completes. The server needs
//!   `max_prepared_transactions > 0`.
//!
//! Values are sent as SQL literals in simple-query batches (strings quoted with `'` doubled,
//! `standard_conforming_strings` forced on; NUL characters, which PostgreSQL cannot store, are
//! refused); the server casts them to the column types. Memory is bounded: the buffer holds one
//! input step's rows and is written after every step in statements of `max_rows` rows.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use tokio_postgres::NoTls;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::Sink;
use crate::batch::Batch;
use crate::checkpoint::snapshot;
use crate::error::{Result, WeirError};
use crate::operator::Push;
use crate::shard::{BuildCtx, Flusher, OperatorMetrics};
use crate::time::Timestamp;

/// A record that can be written as one SQL row: `(v1, v2, ...)` in SQL literal syntax.
pub trait SqlValues {
    /// Append the row's parenthesised literal tuple to `out`; `Err` names what cannot be written.
    fn write_sql(&self, out: &mut String) -> std::result::Result<(), String>;
}

/// What a replay may do to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    AtLeastOnce,
    ExactlyOnce,
}

/// Settings of the sink (every limit has a default).
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// Server address (resolved before the job starts: no DNS on a shard).
    pub address: SocketAddr,
    pub database: String,
    pub username: String,
    pub password: Option<String>,
    /// Target table (may be schema-qualified).
    pub table: String,
    pub columns: Vec<String>,
    /// Columns of the upsert key (`ON CONFLICT (key) DO UPDATE`); empty: plain inserts.
    pub upsert_key: Vec<String>,
    /// Rows per INSERT statement (Flink's `sink.buffer-flush.max-rows`).
    pub max_rows: usize,
    pub guarantee: DeliveryGuarantee,
    /// Prefix of prepared transaction ids (exactly-once); unique per sink and stable across restarts.
    pub transaction_prefix: String,
}

impl PostgresConfig {
    /// The column list and the statement head (`INSERT INTO t (a, b) VALUES `).
    fn insert_head(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| quote_ident(c)).collect();
        format!("INSERT INTO {} ({}) VALUES ", quote_table(&self.table), cols.join(", "))
    }

    /// `ON CONFLICT (...) DO UPDATE SET ...` for upserts, or nothing.
    fn conflict_tail(&self) -> String {
        if self.upsert_key.is_empty() {
            return String::new();
        }
        let keys: Vec<String> = self.upsert_key.iter().map(|c| quote_ident(c)).collect();
        let sets: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.upsert_key.contains(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect();
        if sets.is_empty() {
            format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))
        } else {
            format!(" ON CONFLICT ({}) DO UPDATE SET {}", keys.join(", "), sets.join(", "))
        }
    }
}

/// `"name"` with `"` doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A possibly schema-qualified table name, each part quoted.
fn quote_table(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

/// `'text'` with `'` doubled (for `standard_conforming_strings = on`); NUL is refused.
pub fn quote_literal(text: &str, out: &mut String) -> std::result::Result<(), String> {
    if text.contains('\0') {
        return Err("PostgreSQL text cannot hold a NUL character".into());
    }
    out.push('\'');
    for ch in text.chars() {
        if ch == '\'' {
            out.push('\'');
        }
        out.push(ch);
    }
    out.push('\'');
    Ok(())
}

/// Connect with `tokio-postgres` over a glommio socket (the connection task runs on this
/// executor until the client is dropped).
pub async fn connect(config: &PostgresConfig) -> Result<tokio_postgres::Client> {
    let fail = |what: &str, e: &dyn std::fmt::Display| WeirError::Other(format!("postgres {} ({what}): {e}", config.address));
    let stream = glommio::net::TcpStream::connect(config.address).await.map_err(|e| fail("connect", &e))?;
    let _ = stream.set_nodelay(true);
    let mut pg = tokio_postgres::Config::new();
    pg.user(&config.username).dbname(&config.database).application_name("weir");
    if let Some(p) = &config.password {
        pg.password(p);
    }
    let (client, connection) = pg.connect_raw(stream.compat(), NoTls).await.map_err(|e| fail("login", &e))?;
    glommio::spawn_local(async move {
        let _ = connection.await;
    })
    .detach();
    client
        .batch_execute("SET standard_conforming_strings = on")
        .await
        .map_err(|e| fail("session setup", &e))?;
    Ok(client)
}

/// The sink of records `T` into a PostgreSQL table.
pub struct PostgresSink<T> {
    config: Arc<PostgresConfig>,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T> PostgresSink<T> {
    pub fn new(config: PostgresConfig) -> Self {
        Self {
            config: Arc::new(config),
            _t: std::marker::PhantomData,
        }
    }
}

/// Rows formatted by the synchronous half, written by the flusher.
#[derive(Default)]
struct RowBuffer {
    /// Literal tuples, each `(..)`.
    rows: Vec<String>,
    error: Option<WeirError>,
}

struct FormatRows<T> {
    buffer: Rc<RefCell<RowBuffer>>,
    metrics: Arc<OperatorMetrics>,
    table: String,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T: SqlValues> Push<T> for FormatRows<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        OperatorMetrics::add(&self.metrics.records_in, batch.len() as u64);
        let mut b = self.buffer.borrow_mut();
        for r in &batch.records {
            if b.error.is_some() {
                break;
            }
            let mut tuple = String::new();
            match r.write_sql(&mut tuple) {
                Ok(()) => b.rows.push(tuple),
                Err(e) => b.error = Some(WeirError::Other(format!("postgres sink {}: a row cannot be written: {e}", self.table))),
            }
        }
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {}
}

impl<T: SqlValues + Send + 'static> Sink<T> for PostgresSink<T> {
    fn name(&self) -> String {
        format!("jdbc:{}", self.config.table)
    }

    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>> {
        let buffer = Rc::new(RefCell::new(RowBuffer::default()));
        let mut writer = PostgresWriter::new(self.config.clone(), ctx.shard, ctx.shards, buffer.clone());
        if self.config.guarantee == DeliveryGuarantee::ExactlyOnce && ctx.checkpointing() {
            // Every shard's committables of the restored checkpoint: none of them is a leftover.
            let referenced: Vec<Vec<u8>> = ctx
                .restore()
                .and_then(|r| r.committables.get(operator_name))
                .map(|v| v.iter().map(|(_, c)| c.clone()).collect())
                .unwrap_or_default();
            writer.restore(ctx.restored_committables(operator_name));
            writer.referenced = referenced
                .iter()
                .filter_map(|c| snapshot::decode::<String>(c, "postgres committable").ok())
                .collect();
            ctx.add_committing_flusher(operator_name, Box::new(writer));
        } else {
            ctx.add_flusher(Box::new(writer));
        }
        Ok(Box::new(FormatRows {
            buffer,
            metrics: ctx.operator_metrics(operator_name),
            table: self.config.table.clone(),
            _t: std::marker::PhantomData,
        }))
    }
}

/// The async half: one connection per shard, transactions, two-phase commit.
pub struct PostgresWriter {
    config: Arc<PostgresConfig>,
    shard: usize,
    shards: usize,
    buffer: Rc<RefCell<RowBuffer>>,
    client: Option<tokio_postgres::Client>,
    /// Exactly-once: a second connection for COMMIT / ROLLBACK PREPARED, which cannot run inside
    /// the data connection's open transaction (the next epoch's rows arrive before the commit).
    control: Option<tokio_postgres::Client>,
    /// Exactly-once: a transaction is open (rows written since the last prepare).
    open: bool,
    /// Exactly-once: prepared, not yet committed (epoch, transaction id).
    prepared: Vec<(u64, String)>,
    /// Committables of the restored checkpoint for this shard, resolved at connect.
    restored: Option<Vec<Vec<u8>>>,
    /// Transaction ids in the restored checkpoint (any shard's): never rolled back.
    referenced: Vec<String>,
}

fn pg_error(config: &PostgresConfig, what: &str, e: tokio_postgres::Error) -> WeirError {
    let detail = e
        .as_db_error()
        .map(|d| format!("{} ({})", d.message(), d.code().code()))
        .unwrap_or_else(|| e.to_string());
    WeirError::Other(format!("postgres sink {} ({what}): {detail}", config.table))
}

impl PostgresWriter {
    /// A writer for `shard` of `shards`, writing what `FormatRows` buffers (tests drive it
    /// through [`Self::write_rows`] and the flusher methods directly).
    fn new(config: Arc<PostgresConfig>, shard: usize, shards: usize, buffer: Rc<RefCell<RowBuffer>>) -> Self {
        Self {
            config,
            shard,
            shards,
            buffer,
            client: None,
            control: None,
            open: false,
            prepared: Vec::new(),
            restored: None,
            referenced: Vec::new(),
        }
    }

    /// A stand-alone writer (no job around it), for tests and tools.
    pub fn standalone(config: PostgresConfig, shard: usize, shards: usize) -> Self {
        Self::new(Arc::new(config), shard, shards, Rc::default())
    }

    /// Buffer rows as a job would (written at the next flush).
    pub fn write_rows<T: SqlValues>(&mut self, rows: &[T]) -> Result<()> {
        let mut b = self.buffer.borrow_mut();
        for r in rows {
            let mut t = String::new();
            r.write_sql(&mut t).map_err(WeirError::Other)?;
            b.rows.push(t);
        }
        Ok(())
    }

    /// Hand the restored checkpoint's committables to the writer: at connect they are committed
    /// and every other prepared transaction of this sink and shard is rolled back.
    pub fn restore(&mut self, committables: Vec<Vec<u8>>) {
        self.restored = Some(committables);
    }

    /// Prepared transaction ids of this sink (exactly-once).
    fn gid(&self, epoch: u64) -> String {
        format!("{}-{}-{epoch}", self.config.transaction_prefix, self.shard)
    }

    fn client(&self) -> &tokio_postgres::Client {
        self.client.as_ref().expect("connected before writing")
    }

    fn control(&self) -> &tokio_postgres::Client {
        self.control.as_ref().expect("exactly-once writers open a control connection")
    }

    /// `COMMIT PREPARED`, treating "does not exist" (committed before) as done.
    async fn commit_prepared(&self, gid: &str) -> Result<()> {
        let mut sql = String::from("COMMIT PREPARED ");
        quote_literal(gid, &mut sql).map_err(WeirError::Other)?;
        match self.control().batch_execute(&sql).await {
            Ok(()) => Ok(()),
            Err(e) if e.as_db_error().is_some_and(|d| d.code() == &tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => Ok(()),
            Err(e) => Err(pg_error(&self.config, "commit prepared", e)),
        }
    }

    /// Commit the restored committables, roll back other prepared transactions of this sink
    /// that belong to this shard (shard 0 also takes those of shards that no longer exist).
    async fn resolve_restored(&mut self, committables: Vec<Vec<u8>>) -> Result<()> {
        let mut keep = Vec::new();
        for c in committables {
            let gid: String = snapshot::decode(&c, "postgres committable")?;
            self.commit_prepared(&gid).await?;
            keep.push(gid);
        }
        let rows = self
            .client()
            .query(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1)",
                &[&format!("{}-", self.config.transaction_prefix)],
            )
            .await
            .map_err(|e| pg_error(&self.config, "listing prepared transactions", e))?;
        for row in rows {
            let gid: String = row.get(0);
            let owner = gid
                .strip_prefix(&format!("{}-", self.config.transaction_prefix))
                .and_then(|rest| rest.split('-').next())
                .and_then(|s| s.parse::<usize>().ok());
            let mine = match owner {
                Some(s) => s == self.shard || (self.shard == 0 && s >= self.shards),
                None => false,
            };
            if mine && !keep.contains(&gid) && !self.referenced.contains(&gid) {
                let mut sql = String::from("ROLLBACK PREPARED ");
                quote_literal(&gid, &mut sql).map_err(WeirError::Other)?;
                if let Err(e) = self.control().batch_execute(&sql).await {
                    if !e.as_db_error().is_some_and(|d| d.code() == &tokio_postgres::error::SqlState::UNDEFINED_OBJECT) {
                        return Err(pg_error(&self.config, "rolling back a leftover prepared transaction", e));
                    }
                }
            }
        }
        Ok(())
    }

    async fn write_buffered(&mut self) -> Result<()> {
        let rows = {
            let mut b = self.buffer.borrow_mut();
            if let Some(e) = b.error.take() {
                return Err(e);
            }
            std::mem::take(&mut b.rows)
        };
        if rows.is_empty() {
            return Ok(());
        }
        let head = self.config.insert_head();
        let tail = self.config.conflict_tail();
        let exactly_once = self.config.guarantee == DeliveryGuarantee::ExactlyOnce;
        let mut sql = String::new();
        if !exactly_once || !self.open {
            sql.push_str("BEGIN;\n");
        }
        for chunk in rows.chunks(self.config.max_rows.max(1)) {
            sql.push_str(&head);
            sql.push_str(&chunk.join(", "));
            sql.push_str(&tail);
            sql.push_str(";\n");
        }
        if !exactly_once {
            sql.push_str("COMMIT;");
        }
        self.client().batch_execute(&sql).await.map_err(|e| pg_error(&self.config, "insert", e))?;
        if exactly_once {
            self.open = true;
        }
        Ok(())
    }

    async fn prepare(&mut self, epoch: u64) -> Result<Option<Vec<u8>>> {
        self.write_buffered().await?;
        if self.config.guarantee != DeliveryGuarantee::ExactlyOnce || !self.open {
            return Ok(None);
        }
        let gid = self.gid(epoch);
        let mut sql = String::from("PREPARE TRANSACTION ");
        quote_literal(&gid, &mut sql).map_err(WeirError::Other)?;
        self.client()
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_error(&self.config, "prepare transaction (is max_prepared_transactions > 0?)", e))?;
        self.open = false;
        self.prepared.push((epoch, gid.clone()));
        Ok(Some(snapshot::encode(&gid)))
    }

    async fn commit_up_to(&mut self, epoch: u64) -> Result<()> {
        let due: Vec<String> = self.prepared.iter().filter(|(e, _)| *e <= epoch).map(|(_, g)| g.clone()).collect();
        for gid in &due {
            self.commit_prepared(gid).await?;
        }
        self.prepared.retain(|(e, _)| *e > epoch);
        Ok(())
    }

    /// Drop the connection without committing (tests: what a crash leaves on the server).
    pub fn abandon(&mut self) {
        self.client = None;
        self.control = None;
    }
}

impl Flusher for PostgresWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.client = Some(connect(&self.config).await?);
            if self.config.guarantee == DeliveryGuarantee::ExactlyOnce {
                self.control = Some(connect(&self.config).await?);
                let committables = self.restored.take().unwrap_or_default();
                self.resolve_restored(committables).await?;
            }
            Ok(())
        })
    }

    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.write_buffered())
    }

    fn has_pending(&self) -> bool {
        let b = self.buffer.borrow();
        !b.rows.is_empty() || b.error.is_some()
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.client.is_none() {
                return Ok(());
            }
            // End of input: the last epoch is final (Flink commits at the final checkpoint).
            let last = self.prepared.last().map_or(0, |p| p.0) + 1;
            self.prepare(last).await?;
            self.commit_up_to(u64::MAX).await
        })
    }

    fn pre_commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<Option<Vec<u8>>>> {
        Box::pin(self.prepare(epoch))
    }

    fn commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.commit_up_to(epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quote_names_and_literals() {
        let config = PostgresConfig {
            address: "127.0.0.1:5432".parse().unwrap(),
            database: "d".into(),
            username: "u".into(),
            password: None,
            table: "public.my\"t".into(),
            columns: vec!["id".into(), "name".into()],
            upsert_key: vec!["id".into()],
            max_rows: 10,
            guarantee: DeliveryGuarantee::ExactlyOnce,
            transaction_prefix: "weir".into(),
        };
        assert_eq!(config.insert_head(), "INSERT INTO \"public\".\"my\"\"t\" (\"id\", \"name\") VALUES ");
        assert_eq!(config.conflict_tail(), " ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\"");
        let mut s = String::new();
        quote_literal("it's \\ fine", &mut s).unwrap();
        assert_eq!(s, "'it''s \\ fine'");
        assert!(quote_literal("nul\0", &mut s).is_err());
    }
}
