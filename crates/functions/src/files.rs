//! Files: reading text, CSV and JSON data, filtering and describing tables.
//!
//! The CSV reader is small but follows RFC 4180: quoted fields may contain the
//! delimiter, line breaks and doubled quotes (`""`); CRLF and LF both end records.

use crate::data::plain;
use crate::math::stats;
use crate::{closest, num, Args, FileGuard, Function, OpenError};
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

type Res = Result<Value, GzError>;

pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "csv_filter",
        category: "files",
        description: "Reads a CSV file (first row: column names) and keeps the rows whose `column` is \
                      between min_value and max_value and/or equals `equals`. Numbers in cells become \
                      numbers, empty cells null.",
        args: &[
            arg!("file", String, required, "Path of the CSV file"),
            arg!("column", String, required, "Column to filter on"),
            arg!("min_value", Number, optional, "Keep rows whose column is a number >= min_value"),
            arg!("max_value", Number, optional, "Keep rows whose column is a number <= max_value"),
            arg!("equals", String, optional, "Keep rows whose column equals this text (or number)"),
        ],
        returns: "object {rows: [objects], count, columns, total_rows}",
        example: "gleitzeit run --function csv_filter --args file=sales.csv column=amount min_value=100",
        blocking: true,
        run: csv_filter,
    },
    Function {
        name: "analyze_data",
        category: "files",
        description: "Per-column statistics of a CSV or JSON file (a list of objects, or an object of \
                      equal-length lists): type, count, missing, unique values, and min/max/mean/median/\
                      sum/std_dev for numeric columns or most common value and lengths for text.",
        args: &[arg!("data", String, required, "Path of the .csv or .json file")],
        returns: "object {file, format, rows, columns, statistics: {column: {...}}}",
        example: "gleitzeit run --function analyze_data --args data=measurements.csv",
        blocking: true,
        run: analyze_data,
    },
    Function {
        name: "read_csv",
        category: "files",
        description: "Reads a CSV file (first row: column names) into a list of row objects.",
        args: &[
            arg!("file", String, required, "Path of the CSV file"),
            arg!("limit", Integer, optional, "Return at most this many rows"),
        ],
        returns: "object {rows: [objects], count, columns}",
        example: "gleitzeit run --function read_csv --args file=sales.csv limit=20",
        blocking: true,
        run: read_csv,
    },
    Function {
        name: "read_file",
        category: "files",
        description: "The content of a UTF-8 text file, cut after `max_bytes` bytes.",
        args: &[
            arg!("path", String, required, "Path of the file"),
            arg!("max_bytes", Integer, default "1048576", "Read at most this many bytes (up to 268435456)"),
        ],
        returns: "object {path, content, size, truncated}",
        example: "gleitzeit run --function read_file --args path=notes.txt",
        blocking: true,
        run: read_file,
    },
    Function {
        name: "file_info",
        category: "files",
        description: "Whether a path exists and, if so, its kind, size, extension and modification time \
                      (ISO-8601 UTC).",
        args: &[arg!("path", String, required, "Path of the file or directory")],
        returns: "object {path, exists, is_file, is_dir, size, extension, modified}",
        example: "gleitzeit run --function file_info --args path=report.pdf",
        blocking: true,
        run: file_info,
    },
];

/// Files larger than this are refused rather than read into memory.
pub(crate) const MAX_FILE_BYTES: u64 = 256 << 20;

fn not_found(a: &Args, argument: &str, path: &str) -> GzError {
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "?".into());
    GzError::new(ErrorCode::FileNotFound, format!("{}: file not found: {path}", a.function))
        .with_hint(format!(
            "Check the path given as `{argument}`; relative paths are resolved from the working directory ({cwd})."
        ))
        .with_details(json!({ "function": a.function, "argument": argument, "path": path }))
}

fn unreadable(a: &Args, argument: &str, path: &str, why: impl std::fmt::Display) -> GzError {
    GzError::new(
        ErrorCode::FileUnreadable,
        format!("{}: cannot read {path}: {why}", a.function),
    )
    .with_details(json!({ "function": a.function, "argument": argument, "path": path }))
}

fn open_error(a: &Args, argument: &str, path: &str, error: OpenError) -> GzError {
    match error {
        OpenError::Refused(e) => GzError {
            message: format!("{}: {}", a.function, e.message),
            ..e
        },
        OpenError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            not_found(a, argument, path)
        }
        OpenError::Io(e) => unreadable(a, argument, path, e),
    }
}

/// Opens a regular file for reading through the guard, mapping failures to
/// GZ6010/GZ6011 (policy) and GZ5001/GZ5002 (file system).
fn open(
    a: &Args,
    files: &FileGuard,
    argument: &str,
    path: &str,
) -> Result<(std::fs::File, u64), GzError> {
    let opened = files
        .open(argument, path)
        .map_err(|e| open_error(a, argument, path, e))?;
    if opened.metadata.is_dir() {
        return Err(unreadable(a, argument, path, "it is a directory"));
    }
    if !opened.metadata.is_file() {
        return Err(unreadable(a, argument, path, "it is not a regular file"));
    }
    Ok((opened.file, opened.metadata.len()))
}

fn utf8(a: &Args, argument: &str, path: &str, bytes: Vec<u8>) -> Result<String, GzError> {
    let mut text = String::from_utf8(bytes).map_err(|e| {
        unreadable(
            a,
            argument,
            path,
            format!(
                "it is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// The whole file as text (at most [`MAX_FILE_BYTES`]).
pub(crate) fn read_text(
    a: &Args,
    files: &FileGuard,
    argument: &str,
    path: &str,
) -> Result<String, GzError> {
    let (file, size) = open(a, files, argument, path)?;
    if size > MAX_FILE_BYTES {
        return Err(unreadable(
            a,
            argument,
            path,
            format!("it is {size} bytes; the limit is {MAX_FILE_BYTES}"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(a, argument, path, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(unreadable(
            a,
            argument,
            path,
            format!("it is larger than the limit of {MAX_FILE_BYTES} bytes"),
        ));
    }
    utf8(a, argument, path, bytes)
}

/// Parses CSV text into records of fields.
pub(crate) fn parse_csv(text: &str, delimiter: char) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut quoted = false; // the current field started with a quote
    let mut chars = text.chars().peekable();
    let finish_record = |record: &mut Vec<String>, records: &mut Vec<Vec<String>>| {
        let blank = record.len() == 1 && record.first().is_some_and(|f| f.is_empty());
        if !blank {
            records.push(std::mem::take(record));
        }
        record.clear();
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
        } else if c == delimiter {
            record.push(std::mem::take(&mut field));
            quoted = false;
        } else if c == '\r' || c == '\n' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            let was_quoted = quoted;
            record.push(std::mem::take(&mut field));
            quoted = false;
            if was_quoted && record.len() == 1 {
                // A lone quoted empty field ("") is a real record, not a blank line.
                records.push(std::mem::take(&mut record));
            } else {
                finish_record(&mut record, &mut records);
            }
        } else if c == '"' && field.is_empty() && !quoted {
            in_quotes = true;
            quoted = true;
        } else {
            field.push(c);
        }
    }
    if !field.is_empty() || !record.is_empty() || quoted {
        record.push(field);
        finish_record(&mut record, &mut records);
    }
    records
}

/// A CSV file as column names plus rows of raw text.
pub(crate) struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn from_csv(text: &str, delimiter: char) -> Table {
        let mut records = parse_csv(text, delimiter).into_iter();
        let header = records.next().unwrap_or_default();
        let rows: Vec<Vec<String>> = records.collect();
        let width = rows
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(header.len());
        let mut columns = Vec::with_capacity(width);
        let mut seen = HashSet::new();
        for i in 0..width {
            let base = header
                .get(i)
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty());
            let base = base.unwrap_or_else(|| format!("column_{}", i + 1));
            let mut name = base.clone();
            let mut n = 2;
            while !seen.insert(name.clone()) {
                name = format!("{base}_{n}");
                n += 1;
            }
            columns.push(name);
        }
        Table { columns, rows }
    }

    pub fn cell<'t>(&'t self, row: &'t [String], column: usize) -> &'t str {
        row.get(column).map(String::as_str).unwrap_or("")
    }

    pub fn row_object(&self, row: &[String]) -> Value {
        let object: Map<String, Value> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), typed(self.cell(row, i))))
            .collect();
        Value::Object(object)
    }

    fn column_index(&self, a: &Args, argument: &str, column: &str) -> Result<usize, GzError> {
        if let Some(i) = self.columns.iter().position(|c| c == column) {
            return Ok(i);
        }
        if let Some(i) = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column.trim()))
        {
            return Ok(i);
        }
        let mut message = format!(
            "names no column: {column:?}; the columns are {}",
            self.columns.join(", ")
        );
        if let Some(close) = closest(column, self.columns.iter().map(String::as_str)) {
            message.push_str(&format!(" (did you mean {close:?}?)"));
        }
        Err(a.error(argument, message))
    }
}

fn delimiter_for(path: &str) -> char {
    if path.to_ascii_lowercase().ends_with(".tsv") {
        '\t'
    } else {
        ','
    }
}

fn load_table(a: &Args, files: &FileGuard, argument: &str, path: &str) -> Result<Table, GzError> {
    let text = read_text(a, files, argument, path)?;
    Ok(Table::from_csv(&text, delimiter_for(path)))
}

/// A number written as a number: JSON syntax, or a plain decimal like `+5`, `.5`,
/// `5.` — but not `007` (an identifier) nor `inf`/`nan`.
fn cell_number(text: &str) -> Option<f64> {
    if let Ok(Value::Number(n)) = serde_json::from_str::<Value>(text) {
        return n.as_f64();
    }
    let digits = text.trim_start_matches(['+', '-']);
    let leading_zero = digits.len() > 1
        && digits.starts_with('0')
        && digits.as_bytes().get(1).is_some_and(u8::is_ascii_digit);
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c));
    if !plain || leading_zero {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A CSV cell as JSON: empty → null, numbers → numbers, true/false → booleans.
pub(crate) fn typed(cell: &str) -> Value {
    let trimmed = cell.trim();
    if trimmed.is_empty() {
        return Value::Null;
    }
    if let Ok(Value::Number(n)) = serde_json::from_str::<Value>(trimmed) {
        return Value::Number(n);
    }
    if let Some(f) = cell_number(trimmed) {
        return num(f);
    }
    match trimmed.to_ascii_lowercase().as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(cell.to_string()),
    }
}

fn csv_filter(m: &Map<String, Value>, files: &FileGuard) -> Res {
    let a = Args::new("csv_filter", m);
    let path = a.str("file")?;
    let column = a.str("column")?;
    let min = a.opt_num("min_value")?;
    let max = a.opt_num("max_value")?;
    let equals = a.opt_str("equals")?;
    let table = load_table(&a, files, "file", path)?;
    let index = table.column_index(&a, "column", column)?;
    let keep = |row: &Vec<String>| {
        let cell = table.cell(row, index).trim();
        let number = cell_number(cell);
        if let Some(wanted) = equals {
            let wanted = wanted.trim();
            let same_number = matches!((number, cell_number(wanted)), (Some(x), Some(y)) if x == y);
            if cell != wanted && !same_number {
                return false;
            }
        }
        if min.is_some() || max.is_some() {
            let Some(x) = number else { return false };
            if min.is_some_and(|lo| x < lo) || max.is_some_and(|hi| x > hi) {
                return false;
            }
        }
        true
    };
    let rows: Vec<Value> = table
        .rows
        .iter()
        .filter(|r| keep(r))
        .map(|r| table.row_object(r))
        .collect();
    Ok(json!({
        "count": rows.len(),
        "total_rows": table.rows.len(),
        "columns": table.columns,
        "rows": rows,
    }))
}

fn read_csv(m: &Map<String, Value>, files: &FileGuard) -> Res {
    let a = Args::new("read_csv", m);
    let path = a.str("file")?;
    let limit = match a.opt_int("limit")? {
        Some(n) if n < 0 => return Err(a.error("limit", format!("must be 0 or more, got {n}"))),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => usize::MAX,
    };
    let table = load_table(&a, files, "file", path)?;
    let rows: Vec<Value> = table
        .rows
        .iter()
        .take(limit)
        .map(|r| table.row_object(r))
        .collect();
    Ok(json!({ "count": rows.len(), "columns": table.columns, "rows": rows }))
}

/// Rows of a JSON document: a list of objects (other items become `{"value": item}`),
/// an object of equal-length lists (columns), or one object (one row).
fn json_rows(doc: Value) -> Vec<Map<String, Value>> {
    let single = |v: Value| -> Map<String, Value> {
        match v {
            Value::Object(map) => map,
            other => Map::from_iter([("value".to_string(), other)]),
        }
    };
    match doc {
        Value::Array(items) => items.into_iter().map(single).collect(),
        Value::Object(map) if !map.is_empty() && map.values().all(Value::is_array) => {
            let len = map
                .values()
                .filter_map(Value::as_array)
                .map(Vec::len)
                .max()
                .unwrap_or(0);
            (0..len)
                .map(|i| {
                    map.iter()
                        .map(|(k, v)| (k.clone(), v.get(i).cloned().unwrap_or(Value::Null)))
                        .collect()
                })
                .collect()
        }
        other => vec![single(other)],
    }
}

fn column_stats(values: &[&Value]) -> Value {
    let present: Vec<&Value> = values.iter().copied().filter(|v| !v.is_null()).collect();
    let unique: HashSet<String> = present.iter().map(|v| v.to_string()).collect();
    let mut out = Map::new();
    let kind = if present.is_empty() {
        "empty"
    } else if present.iter().all(|v| v.is_number()) {
        "numeric"
    } else if present.iter().all(|v| v.is_boolean()) {
        "boolean"
    } else {
        "text"
    };
    out.insert("type".into(), kind.into());
    out.insert("count".into(), present.len().into());
    out.insert("missing".into(), (values.len() - present.len()).into());
    out.insert("unique".into(), unique.len().into());
    match kind {
        "numeric" => {
            let numbers: Vec<f64> = present.iter().filter_map(|v| v.as_f64()).collect();
            if let Some(s) = stats(&numbers) {
                for (k, v) in [
                    ("min", s.min),
                    ("max", s.max),
                    ("mean", s.mean),
                    ("median", s.median),
                    ("sum", s.sum),
                    ("std_dev", s.std_dev),
                ] {
                    out.insert(k.into(), num(v));
                }
            }
        }
        "boolean" => {
            let trues = present.iter().filter(|v| v.as_bool() == Some(true)).count();
            out.insert("true_count".into(), trues.into());
            out.insert("false_count".into(), (present.len() - trues).into());
        }
        "text" => {
            let texts: Vec<String> = present.iter().map(|v| plain(v)).collect();
            let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
            for (i, t) in texts.iter().enumerate() {
                counts.entry(t.as_str()).or_insert((0, i)).0 += 1;
            }
            let most = counts
                .iter()
                .max_by(|x, y| x.1 .0.cmp(&y.1 .0).then(y.1 .1.cmp(&x.1 .1)));
            if let Some((value, (count, _))) = most {
                out.insert(
                    "most_common".into(),
                    json!({ "value": value, "count": count }),
                );
            }
            let lengths = texts.iter().map(|t| t.chars().count());
            out.insert(
                "min_length".into(),
                lengths.clone().min().unwrap_or(0).into(),
            );
            out.insert("max_length".into(), lengths.max().unwrap_or(0).into());
        }
        _ => {}
    }
    Value::Object(out)
}

fn analyze_data(m: &Map<String, Value>, files: &FileGuard) -> Res {
    let a = Args::new("analyze_data", m);
    let path = a.str("data")?;
    let text = read_text(&a, files, "data", path)?;
    let lower = path.to_ascii_lowercase();
    let trimmed = text.trim_start();
    let is_json = lower.ends_with(".json")
        || (!lower.ends_with(".csv")
            && !lower.ends_with(".tsv")
            && (trimmed.starts_with('[') || trimmed.starts_with('{')));
    let (format, columns, rows): (&str, Vec<String>, Vec<Map<String, Value>>) = if is_json {
        let doc: Value = serde_json::from_str(&text).map_err(|e| {
            GzError::new(
                ErrorCode::FunctionFailed,
                format!("analyze_data: {path} is not valid JSON: {e}"),
            )
            .with_hint("Give a JSON list of objects, or a .csv file.")
            .with_details(json!({ "function": "analyze_data", "path": path }))
        })?;
        let rows = json_rows(doc);
        let mut columns: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for key in rows.iter().flat_map(|r| r.keys()) {
            if seen.insert(key.as_str()) {
                columns.push(key.clone());
            }
        }
        ("json", columns, rows)
    } else {
        let table = Table::from_csv(&text, delimiter_for(path));
        let rows = table
            .rows
            .iter()
            .map(|r| match table.row_object(r) {
                Value::Object(map) => map,
                _ => Map::new(),
            })
            .collect();
        ("csv", table.columns, rows)
    };
    let null = Value::Null;
    let mut statistics = Map::new();
    for column in &columns {
        let values: Vec<&Value> = rows
            .iter()
            .map(|r| r.get(column).unwrap_or(&null))
            .collect();
        statistics.insert(column.clone(), column_stats(&values));
    }
    Ok(json!({
        "file": path,
        "format": format,
        "rows": rows.len(),
        "columns": columns,
        "statistics": statistics,
    }))
}

fn read_file(m: &Map<String, Value>, files: &FileGuard) -> Res {
    let a = Args::new("read_file", m);
    let path = a.str("path")?;
    let max = a.int_in("max_bytes", 0, MAX_FILE_BYTES as i64)? as u64;
    let (file, size) = open(&a, files, "path", path)?;
    let mut bytes = Vec::with_capacity(size.min(max) as usize);
    file.take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(&a, "path", path, e))?;
    let truncated = size > bytes.len() as u64;
    if truncated {
        // Do not cut a UTF-8 character in half.
        if let Err(e) = std::str::from_utf8(&bytes) {
            if e.error_len().is_none() {
                bytes.truncate(e.valid_up_to());
            }
        }
    }
    let content = utf8(&a, "path", path, bytes)?;
    Ok(json!({ "path": path, "content": content, "size": size, "truncated": truncated }))
}

fn file_info(m: &Map<String, Value>, files: &FileGuard) -> Res {
    let a = Args::new("file_info", m);
    let path = a.str("path")?;
    let extension = Path::new(path)
        .extension()
        .map(|e| e.to_string_lossy().into_owned());
    let meta = match files.inspect("path", path) {
        Ok(Some((_, meta))) => meta,
        Ok(None) => {
            return Ok(json!({ "path": path, "exists": false, "extension": extension }));
        }
        Err(e) => return Err(open_error(&a, "path", path, e)),
    };
    let modified = meta.modified().ok().map(|t| {
        chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    Ok(json!({
        "path": path,
        "exists": true,
        "is_file": meta.is_file(),
        "is_dir": meta.is_dir(),
        "size": meta.len(),
        "extension": extension,
        "modified": modified,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{call, err_code};
    use std::io::Write;

    fn temp_file(name: &str, content: &str) -> (tempdir::Dir, String) {
        let dir = tempdir::Dir::new();
        let path = dir.path.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(content.as_bytes()).unwrap();
        (dir, path.display().to_string())
    }

    /// A tiny self-cleaning temporary directory (no extra dev-dependency).
    mod tempdir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Dir {
                static N: AtomicUsize = AtomicUsize::new(0);
                let n = N.fetch_add(1, Ordering::SeqCst);
                let path = std::env::temp_dir()
                    .join(format!("gz-functions-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    const SALES: &str = "region,product,amount,note\r\n\
        north,\"Widget, large\",120,\"said \"\"hi\"\"\"\r\n\
        south,Gadget,80,\r\n\
        \r\n\
        east,Widget,250.5,\"multi\nline\"\r\n\
        west,Gizmo,n/a,x\r\n";

    #[test]
    fn csv_reader_handles_quotes_and_line_breaks() {
        let records = parse_csv(SALES, ',');
        assert_eq!(records.len(), 5);
        assert_eq!(
            records[1],
            vec!["north", "Widget, large", "120", "said \"hi\""]
        );
        assert_eq!(records[2], vec!["south", "Gadget", "80", ""]);
        assert_eq!(records[3][3], "multi\nline");
        assert_eq!(
            parse_csv("a,b\n1,2", ','),
            vec![vec!["a", "b"], vec!["1", "2"]]
        );
        assert_eq!(parse_csv("\"\"\n", ','), vec![vec![""]]);
        assert_eq!(
            parse_csv("\"unterminated,x", ','),
            vec![vec!["unterminated,x"]]
        );
        assert!(parse_csv("", ',').is_empty());
        let table = Table::from_csv("a,,a\n1,2,3,4\n", ',');
        assert_eq!(table.columns, vec!["a", "column_2", "a_2", "column_4"]);
    }

    #[test]
    fn cells_are_typed() {
        assert_eq!(typed("42"), json!(42));
        assert_eq!(typed(" 2.5 "), json!(2.5));
        assert_eq!(typed(".5"), json!(0.5));
        assert_eq!(typed("007"), json!("007"));
        assert_eq!(typed("inf"), json!("inf"));
        assert_eq!(typed(""), Value::Null);
        assert_eq!(typed("TRUE"), json!(true));
        assert_eq!(typed("n/a"), json!("n/a"));
    }

    #[test]
    fn csv_filter_by_range_and_equality() {
        let (_dir, path) = temp_file("sales.csv", SALES);
        let out = call(
            "csv_filter",
            json!({"file": path, "column": "amount", "min_value": "100"}),
        )
        .unwrap();
        assert_eq!(out["count"], 2);
        assert_eq!(out["total_rows"], 4);
        assert_eq!(
            out["columns"],
            json!(["region", "product", "amount", "note"])
        );
        assert_eq!(
            out["rows"][0],
            json!({"region": "north", "product": "Widget, large", "amount": 120, "note": "said \"hi\""})
        );
        assert_eq!(out["rows"][1]["amount"], 250.5);
        let out = call(
            "csv_filter",
            json!({"file": path, "column": "amount", "max_value": 100}),
        )
        .unwrap();
        assert_eq!(
            out["rows"],
            json!([{"region": "south", "product": "Gadget", "amount": 80, "note": null}])
        );
        let out = call(
            "csv_filter",
            json!({"file": path, "column": "product", "equals": "Widget"}),
        )
        .unwrap();
        assert_eq!(out["count"], 1);
        assert_eq!(out["rows"][0]["region"], "east");
        let out = call(
            "csv_filter",
            json!({"file": path, "column": "amount", "equals": 120.0}),
        )
        .unwrap();
        assert_eq!(out["count"], 1, "numbers compare numerically");
        let all = call("csv_filter", json!({"file": path, "column": "REGION"})).unwrap();
        assert_eq!(
            all["count"], 4,
            "no condition keeps every row; column names match case-insensitively"
        );
        let bad = call("csv_filter", json!({"file": path, "column": "amout"})).unwrap_err();
        assert_eq!(bad.code, ErrorCode::FunctionArgumentInvalid);
        assert!(bad.message.contains("\"amount\""), "{}", bad.message);
        let missing = call(
            "csv_filter",
            json!({"file": "/no/such/file.csv", "column": "a"}),
        )
        .unwrap_err();
        assert_eq!(missing.code, ErrorCode::FileNotFound);
    }

    #[test]
    fn analyze_data_describes_csv_columns() {
        let (_dir, path) = temp_file("sales.csv", SALES);
        let out = call("analyze_data", json!({"data": path})).unwrap();
        assert_eq!(out["format"], "csv");
        assert_eq!(out["rows"], 4);
        let amount = &out["statistics"]["amount"];
        assert_eq!(amount["type"], "text", "n/a makes it text: {amount}");
        let (_dir2, path2) = temp_file("m.csv", "x,y,ok\n1,a,true\n2,a,false\n6,,true\n");
        let out = call("analyze_data", json!({"data": path2})).unwrap();
        let x = &out["statistics"]["x"];
        assert_eq!(
            (
                x["type"].clone(),
                x["count"].clone(),
                x["min"].clone(),
                x["max"].clone(),
                x["mean"].clone(),
                x["sum"].clone()
            ),
            (
                json!("numeric"),
                json!(3),
                json!(1),
                json!(6),
                json!(3),
                json!(9)
            )
        );
        assert_eq!(x["median"], 2);
        let y = &out["statistics"]["y"];
        assert_eq!(
            (y["type"].clone(), y["missing"].clone(), y["unique"].clone()),
            (json!("text"), json!(1), json!(1))
        );
        assert_eq!(y["most_common"], json!({"value": "a", "count": 2}));
        assert_eq!(out["statistics"]["ok"]["true_count"], 2);
    }

    #[test]
    fn analyze_data_reads_json() {
        let (_dir, path) = temp_file(
            "d.json",
            r#"[{"a": 1, "b": "x"}, {"a": 3}, {"a": null, "c": true}]"#,
        );
        let out = call("analyze_data", json!({"data": path})).unwrap();
        assert_eq!(out["format"], "json");
        assert_eq!(out["columns"], json!(["a", "b", "c"]));
        assert_eq!(out["statistics"]["a"]["mean"], 2);
        assert_eq!(out["statistics"]["a"]["missing"], 1);
        assert_eq!(out["statistics"]["b"]["missing"], 2);
        let (_dir2, columnar) = temp_file("c.json", r#"{"t": [1, 2, 3], "u": ["a", "b"]}"#);
        let out = call("analyze_data", json!({"data": columnar})).unwrap();
        assert_eq!(out["rows"], 3);
        assert_eq!(out["statistics"]["u"]["missing"], 1);
        let (_dir3, broken) = temp_file("b.json", "[1,");
        assert_eq!(
            err_code("analyze_data", json!({"data": broken})),
            ErrorCode::FunctionFailed
        );
    }

    #[test]
    fn analyze_data_missing_file_is_gz5001_naming_the_path() {
        let error = call(
            "analyze_data",
            json!({"data": "/definitely/missing/data.csv"}),
        )
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::FileNotFound);
        assert_eq!(error.code.as_str(), "GZ5001");
        assert!(
            error.message.contains("/definitely/missing/data.csv"),
            "{}",
            error.message
        );
        let dir = tempdir::Dir::new();
        let error = call(
            "analyze_data",
            json!({"data": dir.path.display().to_string()}),
        )
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::FileUnreadable);
    }

    #[test]
    fn read_csv_rows() {
        let (_dir, path) = temp_file("sales.tsv", "a\tb\n1\tx y\n2\tz\n");
        let out = call("read_csv", json!({"file": path, "limit": 1})).unwrap();
        assert_eq!(
            out,
            json!({"count": 1, "columns": ["a", "b"], "rows": [{"a": 1, "b": "x y"}]})
        );
    }

    #[test]
    fn read_file_and_truncation() {
        let (_dir, path) = temp_file("notes.txt", "\u{feff}héllo world");
        let out = call("read_file", json!({"path": path})).unwrap();
        assert_eq!(out["content"], "héllo world");
        assert_eq!(out["truncated"], false);
        let cut = call("read_file", json!({"path": path, "max_bytes": 5})).unwrap();
        assert_eq!(cut["content"], "h", "BOM removed, é not split");
        assert_eq!(cut["truncated"], true);
        let (_dir2, binary) = temp_file("bin", "");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(
            err_code("read_file", json!({"path": binary})),
            ErrorCode::FileUnreadable
        );
        assert_eq!(
            err_code("read_file", json!({"path": "/no/such"})),
            ErrorCode::FileNotFound
        );
    }

    #[test]
    fn file_info_reports_existence() {
        let (_dir, path) = temp_file("r.pdf", "12345");
        let out = call("file_info", json!({"path": path})).unwrap();
        assert_eq!(
            (
                out["exists"].clone(),
                out["size"].clone(),
                out["extension"].clone()
            ),
            (json!(true), json!(5), json!("pdf"))
        );
        assert!(out["modified"].as_str().unwrap().ends_with('Z'));
        let missing = call("file_info", json!({"path": "/no/such.txt"})).unwrap();
        assert_eq!(missing["exists"], false);
    }

    #[test]
    fn every_file_function_asks_the_guard() {
        let (dir, inside) = temp_file("t.csv", "a\n1\n");
        let outside = tempdir::Dir::new();
        let secret = outside.path.join("s.csv");
        std::fs::write(&secret, "a\n2\n").unwrap();
        let guard = FileGuard::under(std::slice::from_ref(&dir.path));
        let secret = secret.display().to_string();
        for (name, args, allowed) in [
            (
                "read_file",
                json!({"path": secret}),
                json!({"path": inside}),
            ),
            (
                "file_info",
                json!({"path": secret}),
                json!({"path": inside}),
            ),
            ("read_csv", json!({"file": secret}), json!({"file": inside})),
            (
                "csv_filter",
                json!({"file": secret, "column": "a"}),
                json!({"file": inside, "column": "a"}),
            ),
            (
                "analyze_data",
                json!({"data": secret}),
                json!({"data": inside}),
            ),
        ] {
            let f = crate::find(name).unwrap();
            let Value::Object(args) = args else {
                unreachable!()
            };
            let error = f.call(&args, &guard).unwrap_err();
            assert_eq!(error.code, ErrorCode::FileAccessDenied, "{name}");
            assert!(error.message.starts_with(name), "{name}: {}", error.message);
            let Value::Object(allowed) = allowed else {
                unreachable!()
            };
            assert!(f.call(&allowed, &guard).is_ok(), "{name} inside its root");
        }
        let nul = crate::find("read_file").unwrap();
        let Value::Object(args) = json!({"path": "a\u{0}b"}) else {
            unreachable!()
        };
        assert_eq!(
            nul.call(&args, &guard).unwrap_err().code,
            ErrorCode::PathInvalid
        );
    }
}
