//! Splitting upstream bodies into events as bytes arrive: server-sent events framed by a blank
//! line (`\n\n` or `\r\n\r\n`, as Gemini sends them), with comment lines (`: keep-alive`) and
//! other fields skipped; and newline-delimited JSON (Ollama). Pieces may split an event, a
//! line or a CRLF anywhere.

/// The largest event accepted; an upstream that never ends an event is cut off here.
pub const MAX_EVENT: usize = 8 << 20;

/// What the splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// The `data` of one event (multi-line data joined with `\n`).
    Data(String),
    /// An event too large to hold.
    TooLarge,
}

/// Incremental server-sent-events parser.
#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
    /// Where the next search for a line end starts.
    scanned: usize,
    data: Option<String>,
}

impl SseSplitter {
    /// Adds bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Framed>) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                // A lone `\r` at the end may be the first half of a CRLF still on its way.
                if b == b'\r' && i + 1 == self.buf.len() {
                    break;
                }
                let line_end = i;
                let next = if b == b'\r' && self.buf.get(i + 1) == Some(&b'\n') {
                    i + 2
                } else {
                    i + 1
                };
                data_line(&mut self.data, &self.buf[start..line_end], out);
                start = next;
                i = next;
                continue;
            }
            i += 1;
        }
        self.buf.drain(..start);
        self.scanned = self
            .buf
            .len()
            .saturating_sub(usize::from(self.buf.last() == Some(&b'\r')));
        if self.buf.len() > MAX_EVENT || self.data.as_ref().is_some_and(|d| d.len() > MAX_EVENT) {
            self.buf.clear();
            self.scanned = 0;
            self.data = None;
            out.push(Framed::TooLarge);
        }
    }
}

/// One line of an event stream: a blank line ends the event, `data:` lines add to it.
fn data_line(data: &mut Option<String>, line: &[u8], out: &mut Vec<Framed>) {
    if line.is_empty() {
        if let Some(data) = data.take() {
            out.push(Framed::Data(data));
        }
        return;
    }
    if line[0] == b':' {
        return;
    }
    let (name, value) = match line.iter().position(|&b| b == b':') {
        Some(p) => {
            let v = &line[p + 1..];
            (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
        }
        None => (line, &[][..]),
    };
    if name != b"data" {
        return;
    }
    let value = String::from_utf8_lossy(value);
    match data {
        Some(d) => {
            d.push('\n');
            d.push_str(&value);
        }
        None => *data = Some(value.into_owned()),
    }
}

impl SseSplitter {
    /// At the end of the body: an event the upstream did not end with a blank line.
    pub fn finish(&mut self, out: &mut Vec<Framed>) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
            data_line(&mut self.data, rest, out);
        }
        if let Some(data) = self.data.take() {
            out.push(Framed::Data(data));
        }
    }
}

/// Incremental newline-delimited JSON splitter.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Framed>) {
        let searched = self.buf.len();
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        if let Some(first) = self.buf[searched..].iter().position(|&b| b == b'\n') {
            let mut i = searched + first;
            loop {
                let line = self.buf[start..i].trim_ascii();
                if !line.is_empty() {
                    out.push(Framed::Data(String::from_utf8_lossy(line).into_owned()));
                }
                start = i + 1;
                match self.buf[start..].iter().position(|&b| b == b'\n') {
                    Some(p) => i = start + p,
                    None => break,
                }
            }
            self.buf.drain(..start);
        }
        if self.buf.len() > MAX_EVENT {
            self.buf.clear();
            out.push(Framed::TooLarge);
        }
    }

    pub fn finish(&mut self, out: &mut Vec<Framed>) {
        let line = std::mem::take(&mut self.buf);
        let line = line.trim_ascii();
        if !line.is_empty() {
            out.push(Framed::Data(String::from_utf8_lossy(line).into_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse_in_pieces(text: &str, piece: usize) -> Vec<Framed> {
        let mut s = SseSplitter::default();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            s.push(chunk, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn sse_events_split_on_lf_and_crlf_whatever_the_pieces() {
        let lf = "data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        let crlf = lf.replace('\n', "\r\n");
        let want = vec![
            Framed::Data("{\"a\":1}".into()),
            Framed::Data("{\"b\":2}".into()),
            Framed::Data("[DONE]".into()),
        ];
        for text in [lf.to_owned(), crlf] {
            for piece in 1..=text.len() {
                assert_eq!(sse_in_pieces(&text, piece), want, "piece {piece}: {text:?}");
            }
        }
    }

    #[test]
    fn sse_multiline_data_other_fields_and_an_unterminated_last_event() {
        let text = "event: message\nid: 7\ndata: one\ndata: two\nretry: 10\n\ndata:three";
        assert_eq!(
            sse_in_pieces(text, 3),
            vec![
                Framed::Data("one\ntwo".into()),
                Framed::Data("three".into())
            ]
        );
    }

    #[test]
    fn ndjson_lines_in_any_pieces() {
        let text = "{\"a\":1}\n\n{\"b\":\"é\"}\r\n{\"c\":3}";
        for piece in 1..=text.len() {
            let mut s = LineSplitter::default();
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(piece) {
                s.push(chunk, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(
                out,
                vec![
                    Framed::Data("{\"a\":1}".into()),
                    Framed::Data("{\"b\":\"é\"}".into()),
                    Framed::Data("{\"c\":3}".into()),
                ],
                "piece {piece}"
            );
        }
    }

    #[test]
    fn an_endless_event_is_cut_off() {
        let mut s = SseSplitter::default();
        let mut out = Vec::new();
        let big = vec![b'x'; 1 << 20];
        s.push(b"data: ", &mut out);
        for _ in 0..9 {
            s.push(&big, &mut out);
        }
        assert_eq!(out, vec![Framed::TooLarge]);
    }
}
