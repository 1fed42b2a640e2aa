//! A cheap look at config text before any YAML parser sees it: its size and how deeply it
//! nests. The parsers are not made for hostile input: 200 KB of `[` took the position index
//! (yaml-rust2) 25 s of CPU before the error, and a config has no reason to nest deeper than a
//! handful of levels.

use super::Pos;

/// Largest config file read, bytes (16 MiB: about 100 000 stream entries).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Deepest nesting of mappings and lists, block and flow together (the schema needs 5).
pub const MAX_DEPTH: usize = 64;

/// `Err` with where the text first nests deeper than [`MAX_DEPTH`], or why it is too large.
pub fn prescan(text: &str) -> Result<(), (Pos, String)> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err((
            Pos { line: 1, col: 1 },
            format!(
                "the file is {} bytes; a config may have at most {MAX_CONFIG_BYTES}",
                text.len()
            ),
        ));
    }
    let too_deep = |line, col, depth| {
        Err((
            Pos { line, col },
            format!("nested {depth} levels deep; a config may nest at most {MAX_DEPTH} (mappings and lists)"),
        ))
    };
    // Block nesting from indentation (a stack of indents) plus compact `- - x` entries; flow
    // nesting from `[` and `{` that open a value, outside quotes and comments.
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    let mut line = 1;
    let mut col = 0;
    let mut at_line_start = true;
    // A value may start here: line start, after `: `, `- `, `? `, `[`, `{` or `,`.
    let mut value_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
            at_line_start = true;
            value_start = true;
            continue;
        }
        if let Some(q) = quote {
            match (q, c) {
                ('"', '\\') => {
                    chars.next();
                    col += 1;
                }
                ('\'', '\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    col += 1;
                }
                _ if c == q => {
                    quote = None;
                    value_start = false;
                }
                _ => {}
            }
            continue;
        }
        if at_line_start && flow == 0 {
            if c == ' ' {
                continue;
            }
            at_line_start = false;
            if c == '#' {
                skip_line(&mut chars);
                continue;
            }
            let indent = col - 1;
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last().is_none_or(|&top| top < indent) {
                indents.push(indent);
            }
            if indents.len() > MAX_DEPTH {
                return too_deep(line, col, indents.len());
            }
        }
        at_line_start = false;
        match c {
            ' ' | '\t' | '\r' => {}
            '#' => skip_line(&mut chars),
            '"' | '\'' if value_start => quote = Some(c),
            '[' | '{' if value_start || flow > 0 => {
                flow += 1;
                if flow + indents.len() > MAX_DEPTH {
                    return too_deep(line, col, flow + indents.len());
                }
                value_start = true;
            }
            ']' | '}' if flow > 0 => {
                flow -= 1;
                value_start = false;
            }
            ',' if flow > 0 => value_start = true,
            '-' | '?' | ':' if matches!(chars.peek(), Some(' ' | '\n') | None) => {
                if c == '-' && flow == 0 && value_start {
                    // A list entry: its content is one level deeper, at the column after `- `
                    // (popped by the next line at the dash's own indent or less).
                    indents.push(col);
                    if indents.len() > MAX_DEPTH {
                        return too_deep(line, col, indents.len());
                    }
                }
                value_start = true;
            }
            ':' if flow > 0 => value_start = true,
            _ => value_start = false,
        }
    }
    Ok(())
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars>) {
    while chars.peek().is_some_and(|&c| c != '\n') {
        chars.next();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configs_pass() {
        for ok in [
            include_str!("../../config/default.yaml"),
            "streams:\n  - {id: a, url: 'x[1].mp4', branches: [action, faces]}\n",
            "a:\n  b:\n    - - - x\n# [[[[ in a comment\nc: \"[[[[\"\nd: it's [\n",
        ] {
            assert_eq!(prescan(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn long_lists_are_not_deep() {
        let mut text = String::from("streams:\n");
        for i in 0..2000 {
            text += &format!("  - id: s{i}\n    url: a.mp4\n  - {{id: t{i}, url: b.mp4}}\n");
        }
        text += "sinks:\n- type: stdout\n- type: file\n  path: x\n";
        assert_eq!(prescan(&text), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_where_it_starts() {
        let flow = format!("streams: {}", "[".repeat(200_000));
        let (pos, msg) = prescan(&flow).unwrap_err();
        assert_eq!(
            pos,
            Pos {
                line: 1,
                col: 9 + MAX_DEPTH
            }
        );
        assert!(msg.contains("at most 64"), "{msg}");
        let block: String = (0..100)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(prescan(&block).unwrap_err().0.line, MAX_DEPTH + 1);
        let compact = format!("streams:\n  {}x\n", "- ".repeat(100));
        assert_eq!(prescan(&compact).unwrap_err().0.line, 2);
    }
}
