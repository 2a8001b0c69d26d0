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

/// Longest block, in lines, whose verbatim repetition is caught: a model
/// that redefines the same argparse setup, fifteen lines at a time, until
/// the token cap.
const MAX_BLOCK: usize = 48;

/// Times in a row a block of more than `MAX_PERIOD` lines must appear.
const BLOCK_REPEATS: usize = 3;

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
    repeated_block(&lines)
        || (1..=MAX_PERIOD).any(|period| {
            let needed = LOOP_LINES.max(period * 8);
            if shapes.len() < needed + period {
                return false;
            }
            let last = &shapes[shapes.len() - needed - period..];
            last.iter().any(|s| !s.is_empty())
                && (period..last.len()).all(|i| last[i] == last[i - period])
        })
}

/// Whether the last lines are one block of more than `MAX_PERIOD` lines,
/// at least four of them not blank, written `BLOCK_REPEATS` times in a row,
/// word for word (not by shape: test methods that differ only in a number
/// are not a loop).
fn repeated_block(lines: &[&str]) -> bool {
    (MAX_PERIOD + 1..=MAX_BLOCK).any(|period| {
        let needed = period * BLOCK_REPEATS;
        if lines.len() < needed {
            return false;
        }
        let last = &lines[lines.len() - needed..];
        last[..period]
            .iter()
            .filter(|l| !l.trim().is_empty())
            .count()
            >= 4
            && (period..needed).all(|i| last[i].trim_end() == last[i - period].trim_end())
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
    fn a_long_block_written_again_and_again_is_caught() {
        let block = "    parser = argparse.ArgumentParser(description='Todo app')\n    subparsers = parser.add_subparsers(dest='command')\n    add_parser = subparsers.add_parser('add', help='Add a task')\n    add_parser.add_argument('task', help='The task')\n    add_parser.set_defaults(func=add_task)\n    list_parser = subparsers.add_parser('list', help='List all tasks')\n    list_parser.set_defaults(func=list_tasks)\n\n    args = parser.parse_args()\n";
        assert!(!looping(
            format!("def main():\n{}", block.repeat(2)).as_bytes()
        ));
        assert!(looping(
            format!("def main():\n{}", block.repeat(3)).as_bytes()
        ));
    }

    #[test]
    fn ordinary_code_is_not_a_loop() {
        let code: String = (0..6)
            .map(|i| format!("import json\n\ndef load_{i}(path):\n    with open(path) as f:\n        return json.load(f)\n\n\ndef save_{i}(path, data):\n    with open(path, 'w') as f:\n        json.dump(data, f)\n"))
            .collect();
        assert!(!looping(code.as_bytes()));
        // Test methods that differ only in a number are not a loop.
        let tests: String = (0..8)
            .map(|i| format!("    def test_add_{i}(self):\n        total = add({i}, 1)\n        self.assertEqual(total, {i} + 1)\n        self.assertTrue(total > {i})\n\n"))
            .collect();
        assert!(!looping(tests.as_bytes()));
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
