//! Rust source text reduced to what the compiler builds outside tests: comments and the
//! contents of string and character literals become spaces, and every item behind
//! `#[cfg(test)]` is blanked out. Newlines stay where they were, so line numbers still match
//! the file. This is a lexer for the scan, not a parser: it knows literals, comments, braces
//! and the `mod name;` declaration, which is all the scan needs.

/// A file's text with comments, literals and test-only items blanked.
#[derive(Clone)]
pub struct CodeText {
    pub text: String,
    /// `mod name;` declarations behind `#[cfg(test)]`: files only tests compile.
    pub test_modules: Vec<String>,
    /// Other `mod name;` declarations: files the crate compiles.
    pub modules: Vec<String>,
}

impl CodeText {
    pub fn new(source: &str) -> CodeText {
        let mut chars = blank_comments_and_literals(source);
        let test_modules = blank_test_items(&mut chars);
        let text: String = chars.into_iter().collect();
        let modules = module_declarations(&text);
        CodeText {
            text,
            test_modules,
            modules,
        }
    }
}

fn is_ident(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Replace comments and the inside of string, byte string, raw string and character literals
/// by spaces, keeping newlines.
fn blank_comments_and_literals(source: &str) -> Vec<char> {
    let mut chars: Vec<char> = source.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest = |k: usize| chars.get(i + k).copied();
        let starts_word = i == 0 || !is_ident(chars[i - 1]);
        if chars[i] == '/' && rest(1) == Some('/') {
            let end = (i..chars.len())
                .find(|&k| chars[k] == '\n')
                .unwrap_or(chars.len());
            blank(&mut chars, i, end);
            i = end;
        } else if chars[i] == '/' && rest(1) == Some('*') {
            let end = block_comment_end(&chars, i);
            blank(&mut chars, i, end);
            i = end;
        } else if starts_word && let Some((hashes, open)) = raw_string_start(&chars, i) {
            let end = raw_string_end(&chars, open + 1, hashes);
            blank(&mut chars, open + 1, end.saturating_sub(1 + hashes));
            i = end;
        } else if chars[i] == '"' {
            let end = string_end(&chars, i + 1);
            blank(&mut chars, i + 1, end.saturating_sub(1));
            i = end;
        } else if chars[i] == '\'' {
            match char_literal_end(&chars, i) {
                Some(end) => {
                    blank(&mut chars, i + 1, end - 1);
                    i = end;
                }
                None => i += 1, // a lifetime or a label
            }
        } else {
            i += 1;
        }
    }
    chars
}

fn blank(chars: &mut [char], from: usize, to: usize) {
    for c in chars.iter_mut().take(to).skip(from) {
        if *c != '\n' {
            *c = ' ';
        }
    }
}

/// The index after the `*/` closing the (nestable) block comment opened at `start`.
fn block_comment_end(chars: &[char], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i < chars.len() {
        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    chars.len()
}

/// `r"`, `r#"`, `br##"`… at `i`: the number of `#` and the index of the opening quote.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let r = if chars[i] == 'b' { i + 1 } else { i };
    if chars.get(r) != Some(&'r') {
        return None;
    }
    let hashes = chars[r + 1..].iter().take_while(|&&c| c == '#').count();
    let quote = r + 1 + hashes;
    (chars.get(quote) == Some(&'"')).then_some((hashes, quote))
}

/// The index after the quote and `hashes` `#` that close a raw string whose text starts at
/// `from`.
fn raw_string_end(chars: &[char], from: usize, hashes: usize) -> usize {
    (from..chars.len())
        .find(|&k| chars[k] == '"' && (1..=hashes).all(|h| chars.get(k + h) == Some(&'#')))
        .map_or(chars.len(), |k| k + 1 + hashes)
}

/// The index after the quote that closes a string whose text starts at `from`.
fn string_end(chars: &[char], from: usize) -> usize {
    let mut k = from;
    while k < chars.len() {
        match chars[k] {
            '\\' => k += 2,
            '"' => return k + 1,
            _ => k += 1,
        }
    }
    chars.len()
}

/// The index after a character literal opened at `start` (`'a'`, `'\n'`, `'\u{1F600}'`),
/// or `None` when the quote starts a lifetime or a label.
fn char_literal_end(chars: &[char], start: usize) -> Option<usize> {
    if chars.get(start + 1) == Some(&'\\') {
        let close = (start + 3..chars.len().min(start + 14)).find(|&k| chars[k] == '\'')?;
        return Some(close + 1);
    }
    (chars.get(start + 2) == Some(&'\'')).then_some(start + 3)
}

const TEST_ATTRIBUTE: &str = "#[cfg(test)]";

/// Blank every item behind `#[cfg(test)]`; returns the names of `mod name;` declarations
/// among them.
fn blank_test_items(chars: &mut [char]) -> Vec<String> {
    let attribute: Vec<char> = TEST_ATTRIBUTE.chars().collect();
    let mut test_modules = Vec::new();
    let mut i = 0;
    while i + attribute.len() <= chars.len() {
        if chars[i..i + attribute.len()] != attribute[..] {
            i += 1;
            continue;
        }
        let item_start = skip_attributes(chars, i + attribute.len());
        let end = item_end(chars, item_start);
        let item: String = chars[item_start..end].iter().collect();
        if let Some(name) = declared_module(&item) {
            test_modules.push(name);
        }
        blank(chars, i, end);
        i = end;
    }
    test_modules
}

/// The index of the first character after whitespace and further `#[…]` attributes.
fn skip_attributes(chars: &[char], mut i: usize) -> usize {
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if chars.get(i) == Some(&'#') && chars.get(i + 1) == Some(&'[') {
            i = matching(chars, i + 1, '[', ']');
        } else {
            return i;
        }
    }
}

/// The index after an item starting at `start`: after its first `;` outside brackets, or
/// after the braces of its body.
fn item_end(chars: &[char], start: usize) -> usize {
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            ';' => return i + 1,
            '{' => return matching(chars, i, '{', '}'),
            '(' => i = matching(chars, i, '(', ')'),
            '[' => i = matching(chars, i, '[', ']'),
            _ => i += 1,
        }
    }
    chars.len()
}

/// The index after the `close` matching the `open` at `start`.
fn matching(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    for (k, &c) in chars.iter().enumerate().skip(start) {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return k + 1;
            }
        }
    }
    chars.len()
}

/// `name` when `item` is `mod name;` (with or without a visibility).
fn declared_module(item: &str) -> Option<String> {
    let words: Vec<&str> = item
        .split(|c: char| !is_ident(c) && c != ';')
        .filter(|word| !word.is_empty())
        .collect();
    let at = words.iter().position(|&word| word == "mod")?;
    let name = words.get(at + 1)?.strip_suffix(';')?;
    (words.len() == at + 2 && !name.is_empty()).then(|| name.to_owned())
}

/// Names of the `mod name;` declarations in blanked text (inline `mod name { … }` modules are
/// part of the same file and need no lookup).
fn module_declarations(text: &str) -> Vec<String> {
    text.split(';')
        .filter_map(|statement| {
            let tail = statement.rsplit(['{', '}']).next().unwrap_or(statement);
            declared_module(&format!("{};", tail.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_literals_are_blanked_but_lines_kept() {
        let code = CodeText::new(
            "let a = \"x.delete_table()\"; // y.delete_table()\n/* z.delete_table() */ b.c();\nlet r = r#\"q.scan()\"#; let l: &'static str = 'x'.to_string();\nlet q = ['\\'', '\"']; let s = \"k.scan()\";\n",
        );
        assert!(!code.text.contains("delete_table"), "{}", code.text);
        assert!(!code.text.contains("scan"), "{}", code.text);
        assert!(code.text.contains("b.c();"), "{}", code.text);
        assert!(code.text.contains("&'static str"), "{}", code.text);
        assert_eq!(code.text.lines().count(), 4);
    }

    #[test]
    fn test_items_are_blanked_and_test_modules_named() {
        let code = CodeText::new(
            "mod kept;\npub(crate) mod also_kept;\n#[cfg(test)]\nmod tests;\n#[cfg(test)]\n#[allow(dead_code)]\nfn helper() { if x { y.scan(); } }\nfn real() { z.query(); }\n#[cfg(test)]\nmod inline { fn t() { c.scan(); } }\n",
        );
        assert_eq!(code.test_modules, vec!["tests".to_owned()]);
        assert_eq!(
            code.modules,
            vec!["kept".to_owned(), "also_kept".to_owned()]
        );
        assert!(!code.text.contains("scan"), "{}", code.text);
        assert!(code.text.contains("z.query();"), "{}", code.text);
    }
}
