//! Log lines that cannot be forged: every control character a formatted event
//! contains (a newline or an ANSI escape in a target's error text, a header value,
//! a path) is written escaped (`\n`, `\u{1b}`), so one event is always one line and
//! nothing in it can move the terminal's cursor or recolour it. The JSON format
//! escapes by itself; this wraps the human format's writer.
//!
//! Knows `tracing_subscriber`'s writer trait only.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

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
}
