//! An incremental parser of server-sent events (the `text/event-stream`
//! format of the WHATWG HTML standard, §9.2), fed arbitrary byte chunks.
//!
//! Chunks may split the stream anywhere: inside a UTF-8 character, between
//! the `\r` and `\n` of a line end, inside a field name. The parser keeps
//! the incomplete line as bytes and decodes it only once its line end has
//! arrived, so a split never changes the events. Line ends may be `\n`,
//! `\r\n` or `\r`. An event is dispatched on a blank line; an event that
//! the stream ends before dispatching is discarded, as the standard says,
//! so a cut connection never yields half an event.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, if the event had one (the standard's default
    /// type is `message`).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last event id seen so far in the stream (`id:`), if any.
    pub id: Option<String>,
}

/// Incremental SSE parser: [`SseParser::push`] each chunk as it arrives,
/// [`SseParser::finish`] at the end of the stream.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    last_id: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' => self.end_line(&mut events),
                b'\r' => {
                    self.end_line(&mut events);
                    self.after_cr = true;
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
        events
    }

    /// Ends the stream. A final line without its line end is processed, but
    /// an event without its blank line is discarded; the parser is reset.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut events);
        }
        *self = SseParser::default();
        events
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let bytes = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_string();
            }
        }
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take().filter(|name| !name.is_empty());
        if !self.has_data {
            return;
        }
        self.has_data = false;
        events.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
            id: id.map(str::to_string),
        }
    }

    fn parse_in_pieces(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for piece in pieces {
            events.extend(parser.push(piece));
        }
        events.extend(parser.finish());
        events
    }

    /// Feeds `stream` whole, byte by byte, and split at every one and every
    /// pair of positions; every way must give `expected`.
    fn check(stream: &[u8], expected: &[SseEvent]) {
        assert_eq!(parse_in_pieces(&[stream]), expected, "whole stream");
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_in_pieces(&bytes), expected, "byte by byte");
        for i in 0..=stream.len() {
            let (a, rest) = stream.split_at(i);
            assert_eq!(parse_in_pieces(&[a, rest]), expected, "split at {i}");
            for j in 0..=rest.len() {
                let (b, c) = rest.split_at(j);
                assert_eq!(
                    parse_in_pieces(&[a, b, c]),
                    expected,
                    "split at {i} and {}",
                    i + j
                );
            }
        }
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let stream = "event: message_start\r\ndata: {\"a\":\"h\u{e9}llo \u{1f600}\"}\r\n\r\n\
                      : keep-alive comment\n\
                      id: 7\n\
                      data: line one\n\
                      data:line two\n\n\
                      event: done\rdata: [DONE]\r\r";
        check(
            stream.as_bytes(),
            &[
                ev(
                    Some("message_start"),
                    "{\"a\":\"h\u{e9}llo \u{1f600}\"}",
                    None,
                ),
                ev(None, "line one\nline two", Some("7")),
                ev(Some("done"), "[DONE]", Some("7")),
            ],
        );
    }

    #[test]
    fn openai_style_data_only_stream() {
        check(
            b"data: {\"x\":1}\n\ndata: [DONE]\n\n",
            &[ev(None, "{\"x\":1}", None), ev(None, "[DONE]", None)],
        );
    }

    #[test]
    fn field_rules() {
        // No space after the colon, a field without a colon, an empty data
        // line, unknown fields, and an event name without data (not
        // dispatched, and its name does not leak into the next event).
        check(
            b"data:x\ndata\ndata: \nretry: 10\nfoo: bar\n\nevent: lonely\n\ndata: y\n\n",
            &[ev(None, "x\n\n", None), ev(None, "y", None)],
        );
        // A leading byte-order mark is ignored.
        check("\u{feff}data: z\n\n".as_bytes(), &[ev(None, "z", None)]);
        // Only one leading space is stripped from a value.
        check(b"data:  two\n\n", &[ev(None, " two", None)]);
    }

    #[test]
    fn an_event_cut_off_by_the_end_of_the_stream_is_discarded() {
        check(
            b"data: whole\n\ndata: {\"half\":",
            &[ev(None, "whole", None)],
        );
        check(b"data: no blank line\n", &[]);
    }
}
