//! Log lines that cannot be forged: every control character a formatted event
//! contains (a newline or an ANSI escape in a target's error text, a header value,
//! a path) is written escaped (`\n`, `\u{1b}`), so one event is always one line and
//! nothing in it can move the terminal's cursor or recolour it. The JSON format
//! escapes by itself; this wraps the human format's writer. The human format's
//! fields are written as plain values (`token=entra`), quoted only where a value
//! could otherwise read as two fields (`resource_name="All staff"`).
//! Also holds the id of the HTTP request a task is answering, so that the lines
//! written on its behalf deeper down (the audit entry, a failed authentication)
//! carry the `request_id` of its request line.
//!
//! Knows `tracing_subscriber`'s writer and field-formatting traits only.

use std::fmt;
use std::io::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::MakeWriter;

tokio::task_local! {
    /// The id of the request this task answers (`in_request`).
    static REQUEST_ID: u64;
}

/// Runs `f` as the answer to request `id`: `request_id()` returns `id` within it.
pub(crate) async fn in_request<F: std::future::Future>(id: u64, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// The id of the request the current task answers (the `request_id` field of its
/// `request` line); `None` outside one (the CLI, background tasks).
pub(crate) fn request_id() -> Option<u64> {
    REQUEST_ID.try_with(|id| *id).ok()
}

/// Wraps a `MakeWriter` so that each event it writes is escaped.
pub(crate) struct Escaping<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.make_writer())
    }
}

/// The writer of one event: the formatter hands it the whole line, ending in `\n`.
pub(crate) struct EscapingWriter<W>(W);

/// `line` with every control character but a final newline escaped.
pub(crate) fn escape_line(line: &[u8]) -> Vec<u8> {
    let (body, newline) = match line.strip_suffix(b"\n") {
        Some(b) => (b, true),
        None => (line, false),
    };
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    if newline {
        out.push('\n');
    }
    out.into_bytes()
}

/// Text from outside (a remote server's error `detail`) made safe to show on one
/// line of a terminal, a log or a page: control characters and bidirectional
/// overrides escaped as `escape_line` does, at most `max_chars` characters of the
/// text kept (then `…`).
pub(crate) fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars) + 3);
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        // Bidirectional overrides reorder what a reader sees.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            out.push_str(&format!("\\u{{{:x}}}", c as u32))
        }
        c => out.push(c),
    }
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The human format's fields: the message as it is, then `name=value` with the value
/// written plainly (`token=entra`, `status=201`), not as Rust's `Debug` would
/// (`"entra"`). A value that is empty or holds a space, `"`, `=` or `\\` is quoted
/// and escaped (`reason="wrong name or password"`), so that a name an identity
/// provider chose can never read as another field.
pub(crate) struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> PlainVisitor<'a> {
        PlainVisitor {
            writer,
            empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's (or span's) fields for `PlainFields`.
pub(crate) struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: no separating space before the next field.
    empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn write_field(&mut self, name: &str, value: &str) {
        if self.result.is_err() {
            return;
        }
        let space = if std::mem::replace(&mut self.empty, false) {
            ""
        } else {
            " "
        };
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = if name == "message" {
            write!(self.writer, "{space}{value}")
        } else if needs_quotes(value) {
            write!(self.writer, "{space}{name}={value:?}")
        } else {
            write!(self.writer, "{space}{name}={value}")
        };
    }
}

/// Whether `value` written bare could be misread: empty, or holding a separator.
fn needs_quotes(value: &str) -> bool {
    value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '=' | '\\'))
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write_field(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` values and numbers arrive here; their `Debug` is their plain text.
        self.write_field(field.name(), &format!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_escapes_inside_a_line_are_escaped() {
        let forged = b"WARN push failed: error 500\nINFO admin signed in\x1b[2K\r\n";
        let out = String::from_utf8(escape_line(forged)).unwrap();
        assert_eq!(
            out,
            "WARN push failed: error 500\\nINFO admin signed in\\u{1b}[2K\\r\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
    }

    #[test]
    fn printable_text_is_one_line_and_bounded() {
        assert_eq!(
            printable("bad\nINFO forged\x1b[31m", 100),
            "bad\\nINFO forged\\u{1b}[31m"
        );
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("café", 4), "café");
    }

    #[test]
    fn plain_text_and_unicode_pass_through() {
        let line = "INFO user café created\n".as_bytes();
        assert_eq!(escape_line(line), line);
        assert_eq!(
            String::from_utf8(escape_line("a\u{202e}b\u{85}c".as_bytes())).unwrap(),
            "a\\u{202e}b\\u{85}c"
        );
    }

    /// The human format's fields of one event logged with `log`.
    fn human_line(log: impl FnOnce()) -> String {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .fmt_fields(PlainFields)
            .with_writer(move || SharedBuf(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text
    }

    struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn human_fields_are_plain_values_and_absent_options_are_left_out() {
        let token: Option<&str> = Some("entra");
        let reason: Option<&str> = None;
        let line = human_line(|| {
            tracing::info!(
                token,
                reason,
                name = "pw@contoso.com",
                shown = %"okta",
                status = 201u16,
                "SCIM request refused"
            )
        });
        assert_eq!(
            line,
            "SCIM request refused token=entra name=pw@contoso.com shown=okta status=201\n"
        );
    }

    #[test]
    fn human_values_that_could_read_as_two_fields_are_quoted() {
        let line = human_line(|| {
            tracing::info!(
                name = "All staff outcome=done",
                empty = "",
                quote = "a\"b",
                "audit"
            )
        });
        assert_eq!(
            line,
            "audit name=\"All staff outcome=done\" empty=\"\" quote=\"a\\\"b\"\n"
        );
    }
}
