//! `COPY ... FROM STDIN` payloads: PostgreSQL's text and CSV formats.

use crate::error::{Error, Result};

/// How the payload is formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    /// Tab-separated (or `DELIMITER`), `\N` for NULL, backslash escapes.
    Text { delimiter: char, null: String },
    /// RFC 4180-style CSV; unquoted empty (or `NULL '...'`) is NULL.
    Csv {
        delimiter: char,
        quote: char,
        escape: char,
        header: bool,
        null: String,
    },
}

impl Default for CopyFormat {
    fn default() -> Self {
        CopyFormat::Text {
            delimiter: '\t',
            null: "\\N".into(),
        }
    }
}

/// Split a payload into rows of fields (`None` = NULL). Every row must have
/// `ncols` fields.
pub fn parse(format: &CopyFormat, data: &[u8], ncols: usize) -> Result<Vec<Vec<Option<String>>>> {
    let text = std::str::from_utf8(data)
        .map_err(|e| Error::Syntax(format!("COPY data is not valid UTF-8: {e}")))?;
    let rows = match format {
        CopyFormat::Text { delimiter, null } => parse_text(text, *delimiter, null)?,
        CopyFormat::Csv {
            delimiter,
            quote,
            escape,
            header,
            null,
        } => {
            let mut rows = parse_csv(text, *delimiter, *quote, *escape, null)?;
            if *header && !rows.is_empty() {
                rows.remove(0);
            }
            rows
        }
    };
    for (i, r) in rows.iter().enumerate() {
        if r.len() != ncols {
            return Err(Error::InvalidValue {
                column: "(row)".into(),
                dtype: format!("{ncols} columns"),
                row: i + 1,
                value: format!("a row with {} columns", r.len()),
            });
        }
    }
    Ok(rows)
}

fn parse_text(text: &str, delimiter: char, null: &str) -> Result<Vec<Vec<Option<String>>>> {
    let mut rows = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line == "\\." {
            break;
        }
        let mut fields = Vec::new();
        for raw in line.split(delimiter) {
            if raw == null {
                fields.push(None);
                continue;
            }
            let mut out = String::with_capacity(raw.len());
            let mut chars = raw.chars().peekable();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('t') => out.push('\t'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('v') => out.push('\u{b}'),
                    Some(d) if d.is_digit(8) => {
                        let mut v = d.to_digit(8).expect("octal");
                        for _ in 0..2 {
                            match chars.peek().and_then(|c| c.to_digit(8)) {
                                Some(x) => {
                                    v = v * 8 + x;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        out.push(char::from_u32(v).unwrap_or('\u{FFFD}'));
                    }
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            }
            fields.push(Some(out));
        }
        rows.push(fields);
    }
    Ok(rows)
}

fn parse_csv(
    text: &str,
    delimiter: char,
    quote: char,
    escape: char,
    null: &str,
) -> Result<Vec<Vec<Option<String>>>> {
    let mut rows = Vec::new();
    let mut fields: Vec<Option<String>> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    let mut line_has_content = false;
    let end_field = |field: &mut String, quoted: &mut bool, fields: &mut Vec<Option<String>>| {
        let f = std::mem::take(field);
        if !*quoted && f == null {
            fields.push(None);
        } else {
            fields.push(Some(f));
        }
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == escape && escape != quote && chars.peek() == Some(&quote) {
                field.push(quote);
                chars.next();
            } else if c == quote {
                if chars.peek() == Some(&quote) {
                    field.push(quote);
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            c if c == quote => {
                in_quotes = true;
                quoted = true;
                line_has_content = true;
            }
            c if c == delimiter => {
                end_field(&mut field, &mut quoted, &mut fields);
                line_has_content = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if line_has_content || !field.is_empty() {
                    end_field(&mut field, &mut quoted, &mut fields);
                    if fields.len() == 1 && fields[0].as_deref() == Some("\\.") {
                        return Ok(rows);
                    }
                    rows.push(std::mem::take(&mut fields));
                }
                line_has_content = false;
            }
            c => {
                field.push(c);
                line_has_content = true;
            }
        }
    }
    if in_quotes {
        return Err(Error::Syntax(
            "unterminated quoted field in COPY CSV data".into(),
        ));
    }
    if line_has_content || !field.is_empty() {
        end_field(&mut field, &mut quoted, &mut fields);
        if !(fields.len() == 1 && fields[0].as_deref() == Some("\\.")) {
            rows.push(fields);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let rows = parse(&CopyFormat::default(), b"a\t1\t\\N\nb\\tc\t2\tx\n\\.\n", 3).unwrap();
        assert_eq!(rows[0], vec![Some("a".into()), Some("1".into()), None]);
        assert_eq!(
            rows[1],
            vec![Some("b\tc".into()), Some("2".into()), Some("x".into())]
        );
    }

    #[test]
    fn csv_format() {
        let f = CopyFormat::Csv {
            delimiter: ',',
            quote: '"',
            escape: '"',
            header: true,
            null: String::new(),
        };
        let rows = parse(&f, b"k,v,w\n\"a,b\",,\"\"\n\"x\"\"y\",2,z\n", 3).unwrap();
        assert_eq!(rows[0], vec![Some("a,b".into()), None, Some("".into())]);
        assert_eq!(
            rows[1],
            vec![Some("x\"y".into()), Some("2".into()), Some("z".into())]
        );
        assert!(parse(&f, b"k,v,w\n1,2\n", 3).is_err());
    }
}
