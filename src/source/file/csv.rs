//! CSV lines into `T` via serde: one record per line (a quoted field cannot hold a newline).
//!
//! The line is cut into fields by `csv-core` (never fails: it prefers *a* parse), the fields go
//! into a reused `csv::ByteRecord`, and the `csv` crate's serde deserializer builds `T` (by
//! header name when the file has a header, by position otherwise). A failure names the field:
//! the header's column name, else the struct field at that position, else `column <n>` (from 1).

use std::marker::PhantomData;

use csv::ByteRecord;
use serde::de::DeserializeOwned;

use super::{field_from_serde_message, struct_field_names, BadLine, LineInfo, ParseLine};

/// CSV options of a [`super::FileSource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// The first line of every file names the columns (and is not a record).
    pub has_header: bool,
    /// Field delimiter byte (`,` by default).
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            has_header: false,
            delimiter: b',',
        }
    }
}

/// Parses CSV lines of one file into `T`.
pub(crate) struct CsvParser<T> {
    options: CsvOptions,
    splitter: csv_core::Reader,
    record: ByteRecord,
    headers: Option<ByteRecord>,
    field_buf: Vec<u8>,
    ends: Vec<usize>,
    struct_fields: Option<&'static [&'static str]>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> CsvParser<T> {
    pub(crate) fn new(options: CsvOptions) -> Self {
        Self {
            options,
            splitter: csv_core::ReaderBuilder::new()
                .delimiter(options.delimiter)
                .terminator(csv_core::Terminator::Any(b'\n'))
                .build(),
            record: ByteRecord::new(),
            headers: None,
            field_buf: vec![0; 256],
            ends: vec![0; 16],
            struct_fields: struct_field_names::<T>(),
            _t: PhantomData,
        }
    }

    /// Cut `line` into `self.record`.
    fn split_fields(&mut self, line: &[u8]) {
        self.splitter.reset();
        self.record.clear();
        let (mut input, mut out_len, mut ends_len) = (line, 0usize, 0usize);
        loop {
            let (result, nin, nout, nend) = self.splitter.read_record(input, &mut self.field_buf[out_len..], &mut self.ends[ends_len..]);
            input = &input[nin..];
            out_len += nout;
            ends_len += nend;
            match result {
                csv_core::ReadRecordResult::InputEmpty => input = &[],
                csv_core::ReadRecordResult::OutputFull => {
                    let n = self.field_buf.len() * 2;
                    self.field_buf.resize(n, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
            }
        }
        let mut start = 0;
        for &end in &self.ends[..ends_len] {
            self.record.push_field(&self.field_buf[start..end]);
            start = end;
        }
    }

    /// The name of field `index` (0-based) for error messages.
    fn field_name(&self, index: usize) -> String {
        if let Some(name) = self.headers.as_ref().and_then(|h| h.get(index)) {
            return String::from_utf8_lossy(name).into_owned();
        }
        if self.headers.is_none() {
            if let Some(name) = self.struct_fields.and_then(|f| f.get(index)) {
                return (*name).to_string();
            }
        }
        format!("column {}", index + 1)
    }
}

impl<T: DeserializeOwned> ParseLine<T> for CsvParser<T> {
    fn wants_header(&self) -> bool {
        self.options.has_header && self.headers.is_none()
    }

    fn header(&mut self, line: &[u8]) {
        self.split_fields(line);
        let mut headers = self.record.clone();
        headers.trim();
        self.headers = Some(headers);
    }

    fn parse(&mut self, line: &[u8], _info: &LineInfo, out: &mut Vec<T>) -> Result<(), BadLine> {
        if line.is_empty() {
            return Ok(());
        }
        self.split_fields(line);
        match self.record.deserialize::<T>(self.headers.as_ref()) {
            Ok(record) => {
                out.push(record);
                Ok(())
            }
            Err(e) => Err(self.describe(e)),
        }
    }
}

impl<T: DeserializeOwned> CsvParser<T> {
    fn describe(&self, e: csv::Error) -> BadLine {
        let csv::ErrorKind::Deserialize { err, .. } = e.kind() else {
            return BadLine {
                field: None,
                message: e.to_string(),
            };
        };
        let fields = self.record.len();
        match err.field() {
            Some(index) => {
                let index = index as usize;
                let message = match err.kind() {
                    csv::DeserializeErrorKind::UnexpectedEndOfRow => format!("missing: the record has {fields} fields"),
                    kind => match self.record.get(index) {
                        Some(value) => format!("{kind} (value {:?})", shorten(&String::from_utf8_lossy(value))),
                        None => kind.to_string(),
                    },
                };
                BadLine {
                    field: Some(self.field_name(index)),
                    message,
                }
            }
            None => {
                let message = err.kind().to_string();
                // A headerless record too short for a struct: serde says "invalid length N, ...";
                // the first missing field is field N.
                let short = message
                    .strip_prefix("invalid length ")
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.parse::<usize>().ok());
                match short {
                    Some(n) if self.headers.is_none() => BadLine {
                        field: Some(self.field_name(n)),
                        message: format!("missing: the record has {fields} fields"),
                    },
                    _ => BadLine {
                        field: field_from_serde_message(&message),
                        message,
                    },
                }
            }
        }
    }
}

/// At most 64 characters of `s` (for messages).
pub(crate) fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}
