//! Text cleaning applied before CLIP BPE tokenization.
//!
//! The reference tokenizer runs `ftfy.fix_text`, then `html.unescape` twice, collapses
//! whitespace and lower-cases. This module reproduces that pipeline:
//!
//! * ftfy's character-level fixes, in ftfy's order and repeated until the text stops
//!   changing: HTML entity decoding (only for lines without `<`), C1 control characters
//!   read as Windows-1252, Latin ligatures split, full-width/half-width forms folded,
//!   curly quotes straightened, line breaks unified, ANSI terminal escapes and
//!   unintended control characters removed, NFC normalisation;
//! * Python's `html.unescape` (numeric references with the HTML5 replacement rules,
//!   named references with HTML5's longest-prefix rule for legacy names);
//! * whitespace collapse with Python's `str.split()` notion of whitespace.
//!
//! Not reproduced: ftfy's mojibake repair (`fix_encoding`: re-decoding text that was
//! decoded with the wrong codec, e.g. `"cafÃ©"` → `"café"`), and named entities outside
//! the HTML 4 set (plus `&apos;`); such input is tokenized as given.

use unicode_normalization::UnicodeNormalization;

use super::html_entities::ENTITIES;

/// Windows-1252 decoding of bytes 0x80..=0x9F; undefined bytes map to themselves
/// (Python's `html` invalid-charref table and ftfy's "sloppy" Windows-1252 agree).
const CP1252_C1: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

/// The full cleaning used by the CLIP tokenizer: ftfy-like fixes, `html.unescape` twice,
/// whitespace collapse, lower-casing.
pub fn clean_lower(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    whitespace_clean(unescaped.trim_matches(is_py_whitespace)).to_lowercase()
}

/// Python's `str.isspace()`: Unicode White_Space plus the information separators
/// U+001C..U+001F.
pub fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `" ".join(text.split())`.
pub fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(is_py_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// ftfy's `fix_text` without mojibake repair: the text is split into lines (each keeps
/// its `\n`) and each line is fixed until it stops changing.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // ftfy switches HTML unescaping off for the rest of the text once a segment has `<`.
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_owned();
    loop {
        let orig = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text);
        }
        text = text
            .chars()
            .map(|c| match c {
                '\u{80}'..='\u{9f}' => CP1252_C1[c as usize - 0x80],
                _ => c,
            })
            .collect();
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = text
            .chars()
            .map(|c| match c {
                '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
                '\u{201c}'..='\u{201f}' => '"',
                _ => c,
            })
            .collect();
        text = text
            .replace("\r\n", "\n")
            .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_ftfy_control(c));
        text = text.nfc().collect();
        if text == orig {
            return text;
        }
    }
}

fn fix_latin_ligatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let rep = match c {
            '\u{132}' => "IJ",
            '\u{133}' => "ij",
            '\u{149}' => "\u{2bc}n",
            '\u{1f1}' => "DZ",
            '\u{1f2}' => "Dz",
            '\u{1f3}' => "dz",
            '\u{1c4}' => "D\u{17d}",
            '\u{1c5}' => "D\u{17e}",
            '\u{1c6}' => "d\u{17e}",
            '\u{1c7}' => "LJ",
            '\u{1c8}' => "Lj",
            '\u{1c9}' => "lj",
            '\u{1ca}' => "NJ",
            '\u{1cb}' => "Nj",
            '\u{1cc}' => "nj",
            '\u{fb00}' => "ff",
            '\u{fb01}' => "fi",
            '\u{fb02}' => "fl",
            '\u{fb03}' => "ffi",
            '\u{fb04}' => "ffl",
            '\u{fb05}' => "\u{17f}t",
            '\u{fb06}' => "st",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(rep);
    }
    out
}

/// U+3000 becomes a space; U+FF01..U+FFEF become their NFKC form.
fn fix_character_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ffef}' => out.extend(std::iter::once(c).nfkc()),
            _ => out.push(c),
        }
    }
    out
}

/// Removes `ESC [ (digits|;)* letter`.
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'[') {
            let mut j = i + 2;
            while j < bytes.len() && (bytes[j].is_ascii_digit() || bytes[j] == b';') {
                j += 1;
            }
            if j < bytes.len() && bytes[j].is_ascii_alphabetic() {
                out.push_str(&text[copied..i]);
                i = j + 1;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

fn is_ftfy_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

fn lookup_entity(name: &str) -> Option<(&'static str, bool)> {
    ENTITIES
        .binary_search_by(|(n, _, _)| n.cmp(&name))
        .ok()
        .map(|i| (ENTITIES[i].1, ENTITIES[i].2))
}

/// ftfy's `unescape_html`: only `&name;` / `&#...;` forms (1..=24 alphanumerics after an
/// optional `#`), known names, upper-cased names of lower-case entities, and numeric
/// references that consume the semicolon.
fn ftfy_unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos + 1..];
        let hash = tail.starts_with('#');
        let body_start = usize::from(hash);
        let body_len = tail[body_start..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        let semicolon = tail.as_bytes().get(body_start + body_len) == Some(&b';');
        if body_len == 0 || body_len > 24 || !semicolon {
            out.push('&');
            rest = tail;
            continue;
        }
        let body = &tail[body_start..body_start + body_len];
        let matched = &tail[..body_start + body_len + 1]; // without the leading '&'
        let replacement = if hash {
            let unescaped = html_unescape(&format!("&{matched}"));
            (!unescaped.contains(';')).then_some(unescaped)
        } else if let Some((rep, _)) = lookup_entity(body) {
            Some(rep.to_owned())
        } else {
            upper_case_entity(body)
        };
        match replacement {
            Some(rep) => out.push_str(&rep),
            None => {
                out.push('&');
                out.push_str(matched);
            }
        }
        rest = &tail[matched.len()..];
    }
    out.push_str(rest);
    out
}

/// ftfy also decodes all-caps spellings (`&EACUTE;` → `É`) of lower-case entity names
/// when the all-caps form means nothing to `html.unescape`.
fn upper_case_entity(body: &str) -> Option<String> {
    if body.chars().any(|c| c.is_ascii_lowercase()) {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let (rep, _) = lookup_entity(&lower)?;
    let upper_form = format!("&{body};");
    if html_unescape(&upper_form) != upper_form {
        return None;
    }
    Some(rep.to_uppercase())
}

/// Python's `html.unescape`.
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos + 1..];
        match unescape_one(tail) {
            Some((rep, consumed)) => {
                out.push_str(&rep);
                rest = &tail[consumed..];
            }
            None => {
                out.push('&');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the reference starting right after an `&`; returns the replacement and the
/// number of bytes of `tail` consumed, or `None` if no reference starts here.
fn unescape_one(tail: &str) -> Option<(String, usize)> {
    let bytes = tail.as_bytes();
    if bytes.first() == Some(&b'#') {
        let (digits_start, radix) = match bytes.get(1) {
            Some(b'x' | b'X') => (2, 16),
            _ => (1, 10),
        };
        let n_digits = bytes[digits_start..]
            .iter()
            .take_while(|b| {
                if radix == 16 {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if n_digits == 0 {
            return None;
        }
        let digits = &tail[digits_start..digits_start + n_digits];
        let mut consumed = digits_start + n_digits;
        if bytes.get(consumed) == Some(&b';') {
            consumed += 1;
        }
        // Values beyond u32 are as invalid as anything above U+10FFFF.
        let num = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
        return Some((charref(num), consumed));
    }
    // `[^\t\n\f <&#;]{1,32};?`
    let name_len: usize = tail
        .chars()
        .take_while(|c| !matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';'))
        .take(32)
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let name = &tail[..name_len];
    let has_semicolon = bytes.get(name_len) == Some(&b';');
    if has_semicolon {
        if let Some((rep, _)) = lookup_entity(name) {
            return Some((rep.to_owned(), name_len + 1));
        }
    } else if let Some((rep, true)) = lookup_entity(name) {
        return Some((rep.to_owned(), name_len));
    }
    // Longest legacy (semicolon-free) prefix of at least two characters, shorter than
    // the matched reference `s` (Python: `for x in range(len(s) - 1, 1, -1)`).
    let char_ends: Vec<usize> = name.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
    let s_chars = char_ends.len() + usize::from(has_semicolon);
    for x in (2..s_chars).rev() {
        let Some(&end) = char_ends.get(x - 1) else {
            continue;
        };
        if let Some((rep, true)) = lookup_entity(&name[..end]) {
            return Some((rep.to_owned(), end));
        }
    }
    None
}

fn charref(num: u32) -> String {
    match num {
        0 => '\u{fffd}'.to_string(),
        0x0d => '\r'.to_string(),
        0x80..=0x9f => CP1252_C1[num as usize - 0x80].to_string(),
        0xd800..=0xdfff | 0x110000.. => '\u{fffd}'.to_string(),
        0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f | 0xfdd0..=0xfdef => String::new(),
        n if n & 0xfffe == 0xfffe => String::new(),
        n => char::from_u32(n).map_or_else(|| '\u{fffd}'.to_string(), String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_unescape_matches_python_rules() {
        assert_eq!(html_unescape("&amp;"), "&");
        assert_eq!(html_unescape("&ampfoo"), "&foo");
        assert_eq!(html_unescape("&notit;"), "\u{ac}it;");
        assert_eq!(html_unescape("&#39;&#x263A;&#X41"), "'\u{263a}A");
        assert_eq!(html_unescape("&#128;&#0;&#1;"), "\u{20ac}\u{fffd}");
        assert_eq!(html_unescape("&#99999999999;"), "\u{fffd}");
        assert_eq!(html_unescape("&unknown; & &#xyz"), "&unknown; & &#xyz");
    }

    #[test]
    fn ftfy_like_fixes() {
        assert_eq!(fix_text("\u{fb01}ne \u{201c}q\u{201d}"), "fine \"q\"");
        assert_eq!(fix_text("\u{ff21}\u{3000}b"), "A b");
        assert_eq!(fix_text("\u{1b}[36;44mblue\u{1b}[0m"), "blue");
        assert_eq!(fix_text("&EACUTE;t&eacute;"), "\u{c9}t\u{e9}");
        assert_eq!(fix_text("<b>&amp;</b>"), "<b>&amp;</b>");
        assert_eq!(fix_text("e\u{301}"), "\u{e9}");
    }

    #[test]
    fn whitespace_like_python_split() {
        assert_eq!(whitespace_clean("  a\t\u{1c}b\u{a0} c\n"), "a b c");
    }
}
