//! Loop detection: a small model sometimes falls into writing the same
//! shape of line over and over (`16600\n16700\n16800...` for 1,800 tokens,
//! ten minutes on two cores, until the token cap). The decoding loop asks
//! [`looping`] after each line it writes, and cuts the generation as soon
//! as the repetition is evident, so the caller can sample again instead of
//! waiting for the cap.
//!
//! Lines are compared by their *shape*: digits masked and surrounding
//! spaces trimmed, so a counting loop is caught as well as a verbatim one.
//! Inside a JSON answer a file's lines are `\n` escapes, which count as line
//! breaks too.

/// Lines of one shape in a row (or repeating with a short period) that make
/// a loop. Generous: a real table of 24 rows of one shape is rare in the
/// small programs these models write, and a false cut costs one resample.
const LOOP_LINES: usize = 24;

/// Longest period, in lines, of a repeating block that is caught.
const MAX_PERIOD: usize = 4;

/// A single line this long whose tail repeats a short unit is a loop too
/// (`1, 2, 3, 4, ...` or `aaaa...` with no line break).
const LONG_LINE: usize = 1200;

/// Bytes of the text's end that are looked at.
const WINDOW: usize = 8 * 1024;

/// Whether the end of `text` is a loop.
pub(crate) fn looping(text: &[u8]) -> bool {
    let start = text.len().saturating_sub(WINDOW);
    let tail = String::from_utf8_lossy(&text[start..]).replace("\\n", "\n");
    let mut lines: Vec<&str> = tail.split('\n').collect();
    // The last piece is a line still being written.
    let current = lines.pop().unwrap_or("");
    if current.len() >= LONG_LINE && periodic(current) {
        return true;
    }
    let shapes: Vec<String> = lines.iter().map(|l| shape(l)).collect();
    (1..=MAX_PERIOD).any(|period| {
        let needed = LOOP_LINES.max(period * 8);
        if shapes.len() < needed + period {
            return false;
        }
        let last = &shapes[shapes.len() - needed - period..];
        last.iter().any(|s| !s.is_empty())
            && (period..last.len()).all(|i| last[i] == last[i - period])
    })
}

/// A line with its digits masked and its surrounding blanks trimmed.
fn shape(line: &str) -> String {
    line.trim()
        .chars()
        .map(|c| if c.is_ascii_digit() { '0' } else { c })
        .collect()
}

/// Whether the last 400 characters of `line` (digits masked) repeat a unit
/// of at most 40 characters.
fn periodic(line: &str) -> bool {
    let masked: Vec<char> = shape(line).chars().collect();
    let tail = &masked[masked.len().saturating_sub(400)..];
    if tail.len() < 400 {
        return false;
    }
    (1..=40).any(|p| (p..tail.len()).all(|i| tail[i] == tail[i - p]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(make: impl Fn(usize) -> String, n: usize) -> String {
        (0..n).map(make).collect::<Vec<_>>().join("\n") + "\n"
    }

    #[test]
    fn a_counting_loop_is_caught_escaped_or_not() {
        let counting = lines(|i| format!("{}", 16600 + 100 * i), 30);
        assert!(looping(counting.as_bytes()));
        let escaped = format!("{{\"content\": \"{}", counting.replace('\n', "\\n"));
        assert!(looping(escaped.as_bytes()));
        // Not yet evident after a few lines.
        let short = lines(|i| format!("{}", 16600 + 100 * i), 10);
        assert!(!looping(short.as_bytes()));
    }

    #[test]
    fn a_repeating_block_of_a_few_lines_is_caught() {
        let block = lines(
            |i| {
                if i % 2 == 0 {
                    "    self.assertEqual(f(1), 1)".into()
                } else {
                    "".into()
                }
            },
            60,
        );
        assert!(looping(block.as_bytes()));
    }

    #[test]
    fn ordinary_code_is_not_a_loop() {
        let code = "import json\n\ndef load(path):\n    with open(path) as f:\n        return json.load(f)\n\n\ndef save(path, data):\n    with open(path, 'w') as f:\n        json.dump(data, f)\n"
            .repeat(6);
        assert!(!looping(code.as_bytes()));
        // A table of 20 rows of one shape is still below the bar.
        let table = lines(|i| format!("    ({i}, {}),", i * i), 20);
        assert!(!looping(table.as_bytes()));
        // Blank lines alone are no loop.
        assert!(!looping("\n".repeat(100).as_bytes()));
    }

    #[test]
    fn one_endless_line_is_caught() {
        let line: String = (0..400).map(|i| format!("{i}, ")).collect();
        assert!(looping(line.as_bytes()));
        // A long line of varied text is not.
        let mut seed = 7u32;
        let prose: String = (0..2000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                char::from(b'a' + ((seed >> 16) % 26) as u8)
            })
            .collect();
        assert!(prose.len() >= LONG_LINE);
        assert!(!looping(prose.as_bytes()));
    }
}
