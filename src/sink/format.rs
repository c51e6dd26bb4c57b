//! Row formats shared by the file and stdout sinks: CSV (no header, RFC 4180 quoting) and JSON
//! lines, both through serde.

use serde::Serialize;

use crate::error::{Result, WeirError};

/// Output row format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    pub fn extension(&self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    /// Append `records` to `buf`, one line each.
    pub fn write_all<'a, T: Serialize + 'a>(&self, records: impl Iterator<Item = &'a T>, buf: &mut Vec<u8>) -> Result<()> {
        match self {
            Format::Csv => {
                let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(std::mem::take(buf));
                for r in records {
                    w.serialize(r).map_err(|e| WeirError::Other(format!("formatting a CSV row: {e}")))?;
                }
                *buf = w.into_inner().map_err(|e| WeirError::Other(format!("formatting CSV rows: {e}")))?;
            }
            Format::Json => {
                for r in records {
                    serde_json::to_writer(&mut *buf, r).map_err(|e| WeirError::Other(format!("formatting a JSON row: {e}")))?;
                    buf.push(b'\n');
                }
            }
        }
        Ok(())
    }
}
