//! A longest-match lexer reproducing the token boundaries and normalisations of
//! Stanford CoreNLP 3.4.1's `PTBLexer` with its default options, which is what
//! pycocoevalcap's `PTBTokenizer` runs (`-preserveLines -lowerCase`).
//!
//! The lexer works like a JFlex scanner: at each position every rule is tried,
//! the longest match wins and, among equally long matches, the earlier rule. A
//! rule may carry trailing context, which counts towards the match length but
//! is not consumed. Rules are written with a tiny set-of-end-positions matcher
//! ([`P`]) so that each pattern reads like the regular expression it stands for.
//!
//! A few rules (which characters may follow a file name, which abbreviations
//! need a capital letter, ...) were set by comparing with the 3.4.1 jar, as
//! noted where they are defined. Known gaps are listed in `docs/metrics.md`:
//! characters outside the Basic Multilingual Plane are dropped as the Java
//! lexer drops them; the Unicode letter class follows Rust's tables rather than
//! Java 6's; soft hyphens inside file-name-like tokens differ.

/// A character predicate.
type Pred = fn(char) -> bool;

/// A pattern: matching it at a position yields every position where a match can end.
enum P {
    /// One character satisfying the predicate.
    C(Pred),
    /// This character, ignoring ASCII case (the scanner is `%caseless`,
    /// which applies to literals but not to character classes).
    Ch(char),
    /// This string, ignoring ASCII case.
    Lit(&'static str),
    /// Exactly this character (a one-character class).
    Exact(char),
    Seq(Vec<P>),
    Alt(Vec<P>),
    /// Between `min` and `max` repetitions (`u32::MAX` for unbounded).
    Rep(Box<P>, u32, u32),
}

const INF: u32 = u32::MAX;

thread_local! {
    /// Spare end-position buffers for [`P::ends`]: matching recurses through
    /// sequences and repetitions on every character the fast paths leave to
    /// the general path, and allocating two vectors per level dominated
    /// tokenizing captions with unusual punctuation.
    static BUFFERS: std::cell::RefCell<Vec<Vec<usize>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer from the pool (or a new one).
fn take_buf() -> Vec<usize> {
    BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_default()
}

/// Returns a buffer to the pool, emptied.
fn give_buf(mut v: Vec<usize>) {
    v.clear();
    BUFFERS.with(|b| b.borrow_mut().push(v));
}

fn sort_dedup(v: &mut Vec<usize>) {
    v.sort_unstable();
    v.dedup();
}

impl P {
    fn ends(&self, s: &[char], i: usize, out: &mut Vec<usize>) {
        match self {
            P::C(f) => {
                if i < s.len() && f(s[i]) {
                    out.push(i + 1);
                }
            }
            P::Ch(c) => {
                if i < s.len() && s[i].eq_ignore_ascii_case(c) {
                    out.push(i + 1);
                }
            }
            P::Exact(c) => {
                if i < s.len() && s[i] == *c {
                    out.push(i + 1);
                }
            }
            P::Lit(l) => {
                let mut j = i;
                for c in l.chars() {
                    if j >= s.len() || !s[j].eq_ignore_ascii_case(&c) {
                        return;
                    }
                    j += 1;
                }
                out.push(j);
            }
            P::Seq(ps) => {
                let Some((head, rest)) = ps.split_first() else {
                    out.push(i);
                    return;
                };
                let mut cur = take_buf();
                let mut next = take_buf();
                head.ends(s, i, &mut cur);
                sort_dedup(&mut cur);
                for p in rest {
                    if cur.is_empty() {
                        break;
                    }
                    next.clear();
                    for &c in &cur {
                        p.ends(s, c, &mut next);
                    }
                    sort_dedup(&mut next);
                    std::mem::swap(&mut cur, &mut next);
                }
                out.extend_from_slice(&cur);
                give_buf(cur);
                give_buf(next);
            }
            P::Alt(ps) => {
                for p in ps {
                    p.ends(s, i, out);
                }
            }
            P::Rep(p, min, max) if p.is_single_char() => {
                // A run of matching characters: every length in range ends a match.
                let mut j = i;
                let limit = (*max as usize).min(s.len() - i.min(s.len()));
                while j - i < limit && p.matches_char(s[j]) {
                    j += 1;
                }
                let run = j - i;
                for k in (*min as usize)..=run {
                    out.push(i + k);
                }
            }
            P::Rep(p, min, max) => {
                let mut accepted = take_buf();
                if *min == 0 {
                    accepted.push(i);
                }
                let mut frontier = take_buf();
                frontier.push(i);
                let mut next = take_buf();
                let mut count = 0u32;
                while !frontier.is_empty() && count < *max {
                    count += 1;
                    next.clear();
                    for &f in &frontier {
                        p.ends(s, f, &mut next);
                    }
                    sort_dedup(&mut next);
                    if count >= *min {
                        next.retain(|e| !accepted.contains(e));
                        accepted.extend_from_slice(&next);
                    }
                    std::mem::swap(&mut frontier, &mut next);
                }
                out.extend_from_slice(&accepted);
                give_buf(accepted);
                give_buf(frontier);
                give_buf(next);
            }
        }
    }

    fn is_single_char(&self) -> bool {
        matches!(self, P::C(_) | P::Ch(_) | P::Exact(_))
    }

    /// For single-character patterns: whether `c` matches.
    fn matches_char(&self, c: char) -> bool {
        match self {
            P::C(f) => f(c),
            P::Ch(x) => c.eq_ignore_ascii_case(x),
            P::Exact(x) => c == *x,
            _ => false,
        }
    }

    /// Characters a non-empty match can start with: an ASCII bitmap and
    /// whether non-ASCII characters may start one; plus whether the pattern
    /// matches the empty string.
    fn first(&self) -> (u128, bool, bool) {
        fn bit(c: char) -> u128 {
            if c.is_ascii() {
                1u128 << (c as u32)
            } else {
                0
            }
        }
        match self {
            P::C(f) => {
                let mut b = 0u128;
                for x in 0u8..128 {
                    if f(x as char) {
                        b |= 1u128 << x;
                    }
                }
                (b, true, false)
            }
            P::Ch(c) => (
                bit(c.to_ascii_lowercase()) | bit(c.to_ascii_uppercase()),
                !c.is_ascii(),
                false,
            ),
            P::Exact(c) => (bit(*c), !c.is_ascii(), false),
            P::Lit(l) => match l.chars().next() {
                Some(c) => (
                    bit(c.to_ascii_lowercase()) | bit(c.to_ascii_uppercase()),
                    !c.is_ascii(),
                    false,
                ),
                None => (0, false, true),
            },
            P::Seq(ps) => {
                let (mut b, mut na) = (0u128, false);
                for p in ps {
                    let (pb, pna, nullable) = p.first();
                    b |= pb;
                    na |= pna;
                    if !nullable {
                        return (b, na, false);
                    }
                }
                (b, na, true)
            }
            P::Alt(ps) => ps.iter().fold((0, false, false), |(b, na, nul), p| {
                let (pb, pna, pnul) = p.first();
                (b | pb, na || pna, nul || pnul)
            }),
            P::Rep(p, min, _) => {
                let (b, na, nul) = p.first();
                (b, na, nul || *min == 0)
            }
        }
    }

    /// Longest end position, if the pattern matches at `i` at all.
    fn longest(&self, s: &[char], i: usize) -> Option<usize> {
        let mut v = take_buf();
        self.ends(s, i, &mut v);
        let best = v.iter().copied().max();
        give_buf(v);
        best
    }
}

// ---- pattern constructors -------------------------------------------------

fn seq(v: Vec<P>) -> P {
    P::Seq(v)
}
fn alt(v: Vec<P>) -> P {
    P::Alt(v)
}
fn rep(p: P, min: u32, max: u32) -> P {
    P::Rep(Box::new(p), min, max)
}
fn plus(p: P) -> P {
    rep(p, 1, INF)
}
fn star(p: P) -> P {
    rep(p, 0, INF)
}
fn opt(p: P) -> P {
    rep(p, 0, 1)
}
fn ch(c: char) -> P {
    P::Ch(c)
}
fn c(f: Pred) -> P {
    P::C(f)
}
fn lit(s: &'static str) -> P {
    P::Lit(s)
}
fn alt_lit(words: &[&'static str]) -> P {
    alt(words.iter().map(|w| lit(w)).collect())
}

// ---- character classes ----------------------------------------------------

fn in_ranges(c: char, ranges: &[(u32, u32)]) -> bool {
    let x = c as u32;
    ranges.iter().any(|&(a, b)| a <= x && x <= b)
}

/// Java's `Character.isLetter` on a UTF-16 code unit, approximated with Rust's
/// alphabetic property minus letter-numbers (e.g. Roman numerals), which Java
/// does not count as letters.
fn is_letter(c: char) -> bool {
    (c as u32) <= 0xFFFF
        && c.is_alphabetic()
        && !in_ranges(
            c,
            &[
                (0x16EE, 0x16F0),
                (0x2160, 0x2188),
                (0x3007, 0x3007),
                (0x3021, 0x3029),
                (0x3038, 0x303A),
                (0xA6E6, 0xA6EF),
                (0x0345, 0x0345),
            ],
        )
}

/// Decimal digits of the Basic Multilingual Plane (Java's `isDigit`), plus N'Ko digits.
fn is_digit(c: char) -> bool {
    if c.is_ascii_digit() {
        return true;
    }
    (c as u32) > 0x7F
        && in_ranges(
            c,
            &[
                (0x0660, 0x0669),
                (0x06F0, 0x06F9),
                (0x07C0, 0x07C9),
                (0x0966, 0x096F),
                (0x09E6, 0x09EF),
                (0x0A66, 0x0A6F),
                (0x0AE6, 0x0AEF),
                (0x0B66, 0x0B6F),
                (0x0BE6, 0x0BEF),
                (0x0C66, 0x0C6F),
                (0x0CE6, 0x0CEF),
                (0x0D66, 0x0D6F),
                (0x0E50, 0x0E59),
                (0x0ED0, 0x0ED9),
                (0x0F20, 0x0F29),
                (0x1040, 0x1049),
                (0x1090, 0x1099),
                (0x17E0, 0x17E9),
                (0x1810, 0x1819),
                (0x1946, 0x194F),
                (0x19D0, 0x19D9),
                (0x1A80, 0x1A89),
                (0x1A90, 0x1A99),
                (0x1B50, 0x1B59),
                (0x1BB0, 0x1BB9),
                (0x1C40, 0x1C49),
                (0x1C50, 0x1C59),
                (0xA620, 0xA629),
                (0xA8D0, 0xA8D9),
                (0xA900, 0xA909),
                (0xA9D0, 0xA9D9),
                (0xAA50, 0xAA59),
                (0xABF0, 0xABF9),
                (0xFF10, 0xFF19),
            ],
        )
}

fn is_letter_or_digit(c: char) -> bool {
    is_letter(c) || is_digit(c)
}

/// Marks and symbols that the lexer accepts inside words even though Java does
/// not classify them as letters.
fn is_word_extra(c: char) -> bool {
    in_ranges(
        c,
        &[
            (0x00AD, 0x00AD),
            (0x0237, 0x024F),
            (0x02C2, 0x02C5),
            (0x02D2, 0x02DF),
            (0x02E5, 0x02FF),
            (0x0300, 0x036F),
            (0x0370, 0x037D),
            (0x0384, 0x0385),
            (0x03CF, 0x03CF),
            (0x03F6, 0x03F6),
            (0x03FC, 0x03FF),
            (0x0483, 0x0487),
            (0x04CF, 0x04CF),
            (0x04F6, 0x04FF),
            (0x0510, 0x0525),
            (0x055A, 0x055F),
            (0x0591, 0x05BD),
            (0x05BF, 0x05BF),
            (0x05C1, 0x05C2),
            (0x05C4, 0x05C5),
            (0x05C7, 0x05C7),
            (0x0615, 0x061A),
            (0x063B, 0x063F),
            (0x064B, 0x065E),
            (0x0670, 0x0670),
            (0x06D6, 0x06EF),
            (0x06FA, 0x06FF),
            (0x070F, 0x070F),
            (0x0711, 0x0711),
            (0x0730, 0x077F),
            (0x07A6, 0x07B1),
            (0x07CA, 0x07F5),
            (0x07FA, 0x07FA),
            (0x0900, 0x0903),
            (0x093C, 0x093C),
            (0x093E, 0x094E),
            (0x0951, 0x0955),
            (0x0962, 0x0963),
            (0x0981, 0x0983),
            (0x09BC, 0x09C4),
            (0x09C7, 0x09C8),
            (0x09CB, 0x09CD),
            (0x09D7, 0x09D7),
            (0x09E2, 0x09E3),
            (0x0A01, 0x0A03),
            (0x0A3C, 0x0A3C),
            (0x0A3E, 0x0A4F),
            (0x0A81, 0x0A83),
            (0x0ABC, 0x0ACF),
            (0x0B82, 0x0B82),
            (0x0BBE, 0x0BC2),
            (0x0BC6, 0x0BC8),
            (0x0BCA, 0x0BCD),
            (0x0C01, 0x0C03),
            (0x0C3E, 0x0C56),
            (0x0D3E, 0x0D44),
            (0x0D46, 0x0D48),
            (0x0E30, 0x0E3A),
            (0x0E47, 0x0E4E),
            (0x0EB1, 0x0EBC),
            (0x0EC8, 0x0ECD),
        ],
    )
}

fn is_ascii_alpha(c: char) -> bool {
    c.is_ascii_alphabetic()
}
fn is_ascii_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}
fn is_ascii_digit(c: char) -> bool {
    c.is_ascii_digit()
}
fn is_ascii_upper(c: char) -> bool {
    c.is_ascii_uppercase()
}
/// Horizontal spaces the lexer skips.
fn is_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{3000}'
    )
}
fn is_newline_char(c: char) -> bool {
    matches!(
        c,
        '\r' | '\n' | '\u{2028}' | '\u{2029}' | '\u{0B}' | '\u{0C}' | '\u{85}'
    )
}
fn is_space_or_nl(c: char) -> bool {
    is_space(c) || is_newline_char(c)
}
/// Apostrophes: straight, CP1252 right single quote, Unicode right single quote.
fn is_apos_char(c: char) -> bool {
    matches!(c, '\'' | '\u{92}' | '\u{2019}')
}
/// Apostrophe-like characters accepted inside words.
fn is_apos_etc_char(c: char) -> bool {
    is_apos_char(c) || matches!(c, '`' | '\u{91}' | '\u{2018}' | '\u{201B}')
}
fn is_hyphen(c: char) -> bool {
    matches!(c, '-' | '_' | '\u{58A}' | '\u{2010}' | '\u{2011}')
}
fn is_insentp(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '\u{3001}')
}
fn is_url_body(c: char) -> bool {
    !matches!(
        c,
        ' ' | '\t' | '\n' | '\u{0C}' | '\r' | '"' | '<' | '>' | '|' | '(' | ')'
    )
}
fn is_url_end(c: char) -> bool {
    is_url_body(c) && !matches!(c, '.' | '!' | '?' | '{' | '}' | ',' | '-')
}
fn is_www_part(c: char) -> bool {
    is_url_body(c) && !matches!(c, '.' | '!' | '?' | '{' | '}' | ',')
}
/// Domain label characters for bare `name.com` URLs. The original class
/// contains the range `,-_`, which also excludes digits, upper case and `/:;`.
fn is_domain_part(c: char) -> bool {
    is_url_body(c)
        && !matches!(c, '`' | '\'' | '.' | '!' | '?' | '{' | '}' | '$')
        && !(','..='_').contains(&c)
}
fn is_email_local(c: char) -> bool {
    !matches!(
        c,
        ' ' | '\t'
            | '\n'
            | '\u{0C}'
            | '\r'
            | '"'
            | '<'
            | '>'
            | '|'
            | '('
            | ')'
            | '{'
            | '}'
            | '\u{A0}'
    )
}
fn is_email_domain(c: char) -> bool {
    is_email_local(c) && c != '.'
}

fn is_sgml_body(c: char) -> bool {
    !matches!(c, '>' | '\r' | '\n')
}
fn is_period_like(c: char) -> bool {
    matches!(
        c,
        '.' | '¡' | '¿' | '\u{37E}' | '\u{589}' | '\u{61F}' | '\u{6D4}' | '\u{700}'
            ..='\u{702}' | '\u{7FA}' | '\u{3002}'
    )
}
fn is_quote_char(c: char) -> bool {
    matches!(
        c,
        '`' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{201C}' | '\u{201D}' | '\u{91}'
            ..='\u{94}' | '\u{201E}' | '\u{201F}' | '\u{2039}' | '\u{203A}' | '\u{AB}' | '\u{BB}'
    )
}
fn is_misc_symbol(c: char) -> bool {
    matches!(
        c,
        '+' | '%' | '&' | '~' | '^' | '|' | '\\' | '¦' | '§' | '¨' | '©' | '¬' | '®' | '¯'
    ) || in_ranges(
        c,
        &[
            (0xB0, 0xBA),
            (0xD7, 0xD7),
            (0xF7, 0xF7),
            (0x387, 0x387),
            (0x5BE, 0x5BE),
            (0x5C0, 0x5C0),
            (0x5C3, 0x5C3),
            (0x5C6, 0x5C6),
            (0x5F3, 0x5F4),
            (0x600, 0x603),
            (0x606, 0x60A),
            (0x60C, 0x60C),
            (0x614, 0x614),
            (0x61B, 0x61B),
            (0x61E, 0x61E),
            (0x66A, 0x66A),
            (0x66D, 0x66D),
            (0x703, 0x70D),
            (0x7F6, 0x7F8),
            (0x964, 0x965),
            (0xE4F, 0xE4F),
            (0x1FBD, 0x1FBD),
            (0x2016, 0x2017),
            (0x2020, 0x2023),
            (0x2030, 0x2038),
            (0x203B, 0x203B),
            (0x203E, 0x2042),
            (0x2044, 0x2044),
            (0x207A, 0x207F),
            (0x208A, 0x208E),
            (0x2100, 0x214F),
            (0x2190, 0x21FF),
            (0x2200, 0x2BFF),
            (0x3012, 0x3012),
            (0x30FB, 0x30FB),
            (0xFF01, 0xFF0F),
            (0xFF1A, 0xFF20),
            (0xFF3B, 0xFF40),
            (0xFF5B, 0xFF65),
        ],
    )
}
fn is_currency2(c: char) -> bool {
    matches!(
        c,
        '\u{A2}'
            | '\u{A3}'
            | '\u{A4}'
            | '\u{A5}'
            | '\u{80}'
            | '\u{20A0}'
            | '\u{20AC}'
            | '\u{60B}'
            | '\u{E3F}'
            | '\u{20A4}'
            | '\u{FFE0}'
            | '\u{FFE1}'
            | '\u{FFE5}'
            | '\u{FFE6}'
    )
}

// ---- macros ---------------------------------------------------------------

/// How the rules are built. Entities such as `&eacute;` or `&apos;` can only
/// match where the line contains `&`; without them, letters and apostrophes
/// are single-character classes, which match much faster.
#[derive(Clone, Copy)]
struct Cx {
    entities: bool,
}

fn apos(cx: Cx) -> P {
    if cx.entities {
        alt(vec![c(is_apos_char), lit("&apos;")])
    } else {
        c(is_apos_char)
    }
}
fn apos_etc(cx: Cx) -> P {
    if cx.entities {
        alt(vec![c(is_apos_etc_char), lit("&apos;")])
    } else {
        c(is_apos_etc_char)
    }
}
/// `&eacute;`-style entities, kept inside words.
fn splet() -> P {
    seq(vec![
        ch('&'),
        c(|c| "aeiouAEIOU".contains(c)),
        alt_lit(&["acute", "grave", "uml"]),
        ch(';'),
    ])
}
fn letter(cx: Cx) -> P {
    if cx.entities {
        alt(vec![c(is_letter_or_extra), splet()])
    } else {
        c(is_letter_or_extra)
    }
}
fn is_letter_or_extra(c: char) -> bool {
    is_letter(c) || is_word_extra(c)
}
fn is_word_char(c: char) -> bool {
    is_letter_or_extra(c) || is_digit(c)
}
/// Letters and digits starting with a letter, possibly joined by `.`, `!` or `?`
/// (so `foo.bar` and `hello!world` are single tokens).
fn word(cx: Cx) -> P {
    let part = || {
        let rest = if cx.entities {
            star(alt(vec![letter(cx), c(is_digit)]))
        } else {
            star(c(is_word_char))
        };
        seq(vec![letter(cx), rest])
    };
    seq(vec![
        part(),
        star(seq(vec![c(|c| matches!(c, '.' | '!' | '?')), part()])),
    ])
}
/// Reduced auxiliaries: 's 'm 'd 're 've 'll.
fn redaux(cx: Cx) -> P {
    seq(vec![
        apos(cx),
        alt(vec![
            c(|c| "msdMSD".contains(c)),
            alt_lit(&["re", "ve", "ll"]),
        ]),
    ])
}
/// Stem before n't (cannot end in n).
fn sword() -> P {
    seq(vec![
        star(c(|c| c.is_ascii_alphabetic() || c == '\u{AD}')),
        c(|c| c.is_ascii_alphabetic() && c != 'n' && c != 'N'),
        star(ch('\u{AD}')),
    ])
}
fn sredaux(cx: Cx) -> P {
    seq(vec![ch('n'), apos_etc(cx), ch('t')])
}
fn digits(min: u32, max: u32) -> P {
    rep(c(is_digit), min, max)
}
fn num() -> P {
    alt(vec![
        digits(1, INF),
        seq(vec![
            digits(0, INF),
            plus(seq(vec![
                c(|c| matches!(c, '.' | ':' | ',' | '\u{AD}' | '\u{66B}' | '\u{66C}')),
                digits(1, INF),
            ])),
        ]),
    ])
}
fn number() -> P {
    seq(vec![opt(c(|c| c == '-' || c == '+')), num()])
}
fn acro() -> P {
    acro_min(1)
}
/// Dotted initialisms (`U.S`, `a.k.a`); `min_dots` is 0 to allow a single letter.
fn acro_min(min_dots: u32) -> P {
    alt(vec![
        seq(vec![
            c(is_ascii_alpha),
            rep(seq(vec![ch('.'), c(is_ascii_alpha)]), min_dots, INF),
        ]),
        seq(vec![
            alt_lit(&["Canada", "Sino", "Korean", "EU", "Japan", "non"]),
            lit("-U.S"),
        ]),
        seq(vec![lit("U.S.-"), alt_lit(&["U.K", "U.S.S.R"])]),
    ])
}
/// Abbreviations usually followed by a lower-case word (months, days,
/// states, company words, ...), matched ignoring case.
const ABBREV1_WORDS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec", "Mon",
    "Tue", "Tues", "Wed", "Thu", "Thurs", "Fri", "Ala", "Ariz", "Calif", "Colo", "Conn", "Dak",
    "Del", "Fla", "Ga", "Ind", "Kan", "Kans", "Ky", "Md", "Mich", "Minn", "Mo", "Mont", "Neb",
    "Nev", "Okla", "Pa", "Penn", "Tenn", "Tex", "Va", "Vt", "Wis", "Wisc", "Wyo", "Inc", "Co",
    "Cos", "Corp", "Pty", "Ptys", "Ppty", "Pptys", "Ltd", "Plc", "Bancorp", "Dept", "Bhd", "Assn",
    "Univ", "Intl", "Sys", "Nos", "Ph", "tel", "est", "ext", "sq", "ft", "Jr", "Sr", "Bros",
    "Ed.D", "Ph.D", "Blvd", "Rd", "Esq", "etc", "al", "seq",
];
/// State abbreviations that are also common words: capital first letter only.
const ABBREV1_CAPITALISED: &[&str] = &["Ark", "Ill", "La", "Mass", "Miss", "Ore", "Wash"];
/// Titles and other abbreviations usually followed by a capitalised word.
const ABBREV4_WORDS: &[&str] = &[
    "Mr", "Mrs", "Ms", "Dr", "Drs", "Prof", "Profs", "Sen", "Sens", "Rep", "Reps", "Atty", "Attys",
    "Lt", "Col", "Gen", "Messrs", "Gov", "Govs", "Adm", "Rev", "Maj", "Sgt", "Cpl", "Pvt", "Mt",
    "Capt", "St", "Ste", "Ave", "Pres", "Lieut", "Hon", "Brig", "Cmdr", "Comdr", "Pfc", "Spc",
    "Supt", "Supts", "Det", "vs", "Alex", "Wm", "Jos", "Cie", "a.k.a", "cf", "TREAS", "Invt",
    "Elec", "Natl", "Mfg", "Mtg",
];
const ABBREV4_CAPITALISED: &[&str] = &["Miss"];
/// Abbreviations kept with their period only before a number ("No. 5").
const ABBREV3_WORDS: &[&str] = &[
    "ca", "fig", "figs", "prop", "no", "nos", "art", "bldg", "pp", "op",
];

/// Whether some abbreviation rule could claim `word` followed by a period.
fn is_abbreviation(word: &str) -> bool {
    [
        ABBREV1_WORDS,
        ABBREV1_CAPITALISED,
        ABBREV4_WORDS,
        ABBREV4_CAPITALISED,
        ABBREV3_WORDS,
    ]
    .iter()
    .any(|list| list.iter().any(|w| w.eq_ignore_ascii_case(word)))
}

/// Abbreviations usually followed by a lower-case word.
fn abbrev1() -> P {
    seq(vec![
        alt(vec![
            alt_lit(ABBREV1_WORDS),
            capitalised(ABBREV1_CAPITALISED),
        ]),
        ch('.'),
    ])
}
/// Abbreviations usually followed by a capitalised word (titles etc.).
fn abbrev4() -> P {
    alt(vec![
        c(is_ascii_alpha),
        capitalised(ABBREV4_CAPITALISED),
        alt_lit(ABBREV4_WORDS),
        acro(),
    ])
}
/// Simple tags: `<b>`, `</p>`, `<br/>`, `<a b>`, `<!-- x -->`, `<?xml?>`.
fn sgml() -> P {
    let name = || {
        seq(vec![
            c(is_ascii_alpha),
            star(c(|c| {
                c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '-' | '_')
            })),
        ])
    };
    seq(vec![
        ch('<'),
        alt(vec![
            seq(vec![
                c(|c| c == '!' || c == '?'),
                c(|c| c.is_ascii_alphabetic() || c == '-'),
                star(c(is_sgml_body)),
            ]),
            seq(vec![
                opt(ch('/')),
                name(),
                star(seq(vec![plus(ch(' ')), name()])),
                star(ch(' ')),
                opt(ch('/')),
            ]),
        ]),
        ch('>'),
    ])
}
/// Capitalised words that usually start a sentence; only the first letter
/// must be upper case.
const SENTENCE_STARTERS: [&str; 50] = [
    "About",
    "According",
    "Additionally",
    "After",
    "An",
    "A",
    "As",
    "At",
    "But",
    "Earlier",
    "He",
    "Her",
    "Here",
    "However",
    "If",
    "In",
    "It",
    "Last",
    "Many",
    "More",
    "Mr.",
    "Ms.",
    "Now",
    "Once",
    "One",
    "Other",
    "Our",
    "She",
    "Since",
    "So",
    "Some",
    "Such",
    "That",
    "The",
    "Then",
    "There",
    "These",
    "They",
    "This",
    "We",
    "When",
    "While",
    "What",
    "Yet",
    "You",
    "Its",
    "His",
    "Their",
    "Both",
    "Each",
];

fn sentence_starter() -> P {
    capitalised(&SENTENCE_STARTERS)
}

/// Any of these ASCII words with exactly their capital first letter (the
/// rest of the word ignores case).
fn capitalised(words: &[&'static str]) -> P {
    alt(words
        .iter()
        .map(|w| {
            let first = w.chars().next().unwrap_or('A');
            seq(vec![P::Exact(first), lit(&w[1..])])
        })
        .collect())
}

/// What follows an initialism that ends a sentence: white space, then a tag
/// or a word that usually starts a sentence.
fn sentend() -> P {
    seq(vec![
        plus(c(is_space_or_nl)),
        alt(vec![
            seq(vec![sentence_starter(), c(is_space_or_nl)]),
            sgml(),
        ]),
    ])
}
/// Abbreviations kept with their period only before a number ("No. 5", "fig. 3").
fn abbrev3() -> P {
    seq(vec![alt_lit(ABBREV3_WORDS), ch('.')])
}
/// Western emoticons such as `:)`, `;-D`, `:p`.
fn smiley() -> P {
    seq(vec![
        opt(c(|c| c == '<' || c == '>')),
        c(|c| matches!(c, ':' | ';' | '=')),
        opt(c(|c| matches!(c, '-' | 'o' | '*' | '\''))),
        c(|c| "()DPdpO\\{@|[]".contains(c)),
    ])
}
/// Eastern emoticons such as `^_^` and `(-_-)`.
fn asian_smiley() -> P {
    let eye = || c(|c| "-^x=~<>'".contains(c));
    alt(vec![
        seq(vec![eye(), ch('_'), eye()]),
        seq(vec![
            ch('('),
            eye(),
            opt(c(|c| c == '_' || c == '.')),
            eye(),
            ch(')'),
        ]),
    ])
}
fn thing_part(cx: Cx) -> P {
    seq(vec![
        opt(seq(vec![
            c(|c| "dDoOlL".contains(c)),
            apos_etc(cx),
            c(is_letter_or_digit),
        ])),
        plus(c(is_letter_or_digit)),
    ])
}
/// Alphanumeric words, optionally joined by hyphens or underscores.
fn thing(cx: Cx) -> P {
    seq(vec![
        thing_part(cx),
        star(seq(vec![c(is_hyphen), thing_part(cx)])),
    ])
}
/// Hyphenated words whose parts may contain periods and commas.
fn hthing() -> P {
    seq(vec![
        c(is_ascii_alnum),
        star(c(|c| {
            c.is_ascii_alphanumeric() || c == '.' || c == ',' || c == '\u{AD}'
        })),
        plus(seq(vec![
            ch('-'),
            alt(vec![
                plus(c(|c| c.is_ascii_alphanumeric() || c == '\u{AD}')),
                seq(vec![acro(), ch('.')]),
            ]),
        ])),
    ])
}
/// Upper-case words joined by `&` or `+` (AT&T).
fn thinga() -> P {
    seq(vec![
        plus(c(is_ascii_upper)),
        plus(seq(vec![
            alt(vec![c(|c| c == '+' || c == '&'), lit("&amp;")]),
            plus(c(is_ascii_upper)),
        ])),
    ])
}
/// Slash-joined words (and/or, w/o).
fn thing3() -> P {
    let part = || {
        seq(vec![
            plus(c(is_ascii_alnum)),
            rep(seq(vec![ch('-'), plus(c(is_ascii_alpha))]), 0, 2),
        ])
    };
    seq(vec![
        part(),
        rep(seq(vec![opt(ch('\\')), ch('/'), part()]), 1, 2),
    ])
}
fn apoword(cx: Cx) -> P {
    alt(vec![
        seq(vec![apos(cx), ch('n'), opt(apos(cx))]),
        seq(vec![c(|c| "lLdDjJ".contains(c)), apos(cx)]),
        seq(vec![alt_lit(&["Dunkin", "somethin", "ol"]), apos(cx)]),
        seq(vec![apos(cx), lit("em")]),
        seq(vec![
            c(|c| matches!(c, 'A'..='H' | 'J'..='X' | 'Z' | 'n')),
            apos_etc(cx),
            c(is_letter),
            plus(c(is_letter)),
        ]),
        seq(vec![
            apos(cx),
            c(|c| ('2'..='9').contains(&c)),
            ch('0'),
            ch('s'),
        ]),
        seq(vec![apos(cx), lit("til"), opt(ch('l'))]),
        seq(vec![
            plus(c(is_letter)),
            c(|c| "aeiouyAEIOUY".contains(c)),
            apos_etc(cx),
            c(|c| "aeiou".contains(c) || c.is_ascii_uppercase()),
            star(c(is_letter)),
        ]),
        seq(vec![apos(cx), lit("cause")]),
        seq(vec![lit("cont'd"), opt(ch('.'))]),
        alt_lit(&[
            "nor'easter",
            "c'mon",
            "e'er",
            "s'mores",
            "ev'ry",
            "li'l",
            "nat'l",
        ]),
    ])
}
fn phone() -> P {
    let sep = || c(|c| c == '-' || c == ' ' || c == '\u{A0}');
    let d = |a, b| rep(c(is_ascii_digit), a, b);
    let plus_prefix = || opt(seq(vec![ch('+'), opt(ch('+'))]));
    alt(vec![
        seq(vec![
            alt(vec![
                seq(vec![
                    ch('('),
                    d(2, 3),
                    ch(')'),
                    opt(c(|c| c == ' ' || c == '\u{A0}')),
                ]),
                seq(vec![
                    plus_prefix(),
                    opt(seq(vec![d(2, 4), sep()])),
                    d(2, 4),
                    sep(),
                ]),
            ]),
            d(3, 4),
            opt(sep()),
            d(3, 5),
        ]),
        seq(vec![
            opt(seq(vec![plus_prefix(), d(2, 4), ch('.')])),
            d(2, 4),
            ch('.'),
            d(3, 4),
            ch('.'),
            d(3, 5),
        ]),
    ])
}
fn ldots() -> P {
    alt(vec![
        rep(ch('.'), 3, 5),
        seq(vec![
            rep(seq(vec![ch('.'), c(|c| c == ' ' || c == '\u{A0}')]), 2, 4),
            ch('.'),
        ]),
        c(|c| c == '\u{85}' || c == '\u{2026}'),
    ])
}

// ---- rules ----------------------------------------------------------------

/// What to emit for a matched rule.
#[derive(Clone, Copy)]
enum Act {
    /// The matched text as is.
    Keep,
    /// Nothing (whitespace, deleted characters).
    Skip,
    /// A fixed string.
    Fixed(&'static str),
    /// Emit and consume only the first `n` characters (assimilations like gonna → gon na).
    Prefix(usize),
    /// Remove soft hyphens.
    Soft,
    /// `&amp;` → `&`.
    Amp,
    /// Quote normalisation to LaTeX style; `true` when the quote probably opens.
    Quote(bool),
    /// Runs of hyphens: three or four become `--`.
    Hyphens,
    Currency,
    Fraction,
    /// Spaces inside the token become U+00A0.
    Nbsp,
    Phone,
    /// Parentheses inside the token become -LRB-/-RRB- (emoticons).
    Parens,
    /// An initialism ending a sentence: a single letter loses its period;
    /// a longer one keeps it and the period is scanned again as a token.
    AcronymEnd,
}

struct Rule {
    pat: P,
    trail: Option<P>,
    act: Act,
    /// ASCII characters a match can start with (a cheap pre-filter).
    first_ascii: u128,
    /// Whether a match can start with a non-ASCII character.
    first_other: bool,
}

impl Rule {
    fn can_start_with(&self, c: char) -> bool {
        if c.is_ascii() {
            self.first_ascii & (1u128 << (c as u32)) != 0
        } else {
            self.first_other
        }
    }
}

fn r(pat: P, act: Act) -> Rule {
    let (first_ascii, first_other, _) = pat.first();
    Rule {
        pat,
        trail: None,
        act,
        first_ascii,
        first_other,
    }
}
fn rt(pat: P, trail: P, act: Act) -> Rule {
    let mut rule = r(pat, act);
    rule.trail = Some(trail);
    rule
}

fn assimilation(whole: &'static str, keep: usize) -> Rule {
    r(lit(whole), Act::Prefix(keep))
}

fn rules(cx: Cx) -> Vec<Rule> {
    vec![
        r(
            alt(vec![
                lit("c++"),
                seq(vec![c(|c| "cCfF".contains(c)), ch('#')]),
            ]),
            Act::Keep,
        ),
        assimilation("cannot", 3),
        assimilation("gimme", 3),
        assimilation("gonna", 3),
        assimilation("gotta", 3),
        assimilation("lemme", 3),
        assimilation("wanna", 3),
        assimilation("more'n", 4),
        assimilation("'tis", 2),
        assimilation("'twas", 2),
        // SGML-ish tags
        r(sgml(), Act::Nbsp),
        // dashes
        r(
            alt(vec![
                seq(vec![ch('&'), alt_lit(&["MD", "mdash", "ndash"]), ch(';')]),
                c(|c| {
                    matches!(
                        c,
                        '\u{96}' | '\u{97}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
                    )
                }),
            ]),
            Act::Fixed("--"),
        ),
        r(lit("&amp;"), Act::Amp),
        r(
            seq(vec![
                ch('&'),
                alt(vec![
                    alt_lit(&["HT", "TL", "UR", "LR", "QC", "QL", "QR", "odq", "cdq"]),
                    seq(vec![ch('#'), plus(c(is_ascii_digit))]),
                ]),
                ch(';'),
            ]),
            Act::Keep,
        ),
        rt(word(cx), redaux(cx), Act::Soft),
        rt(sword(), sredaux(cx), Act::Soft),
        r(word(cx), Act::Soft),
        r(apoword(cx), Act::Keep),
        rt(seq(vec![ch('y'), apos(cx)]), c(is_letter), Act::Keep),
        // URLs
        r(
            seq(vec![
                lit("http"),
                opt(ch('s')),
                lit("://"),
                plus(c(is_url_body)),
                c(is_url_end),
            ]),
            Act::Keep,
        ),
        r(
            seq(vec![
                alt(vec![
                    seq(vec![
                        lit("www."),
                        plus(seq(vec![plus(c(is_www_part)), ch('.')])),
                        rep(c(is_ascii_alpha), 2, 4),
                    ]),
                    seq(vec![
                        plus(seq(vec![plus(c(is_domain_part)), ch('.')])),
                        alt_lit(&["com", "net", "org", "edu"]),
                    ]),
                ]),
                opt(seq(vec![ch('/'), plus(c(is_url_body)), c(is_url_end)])),
            ]),
            Act::Keep,
        ),
        // e-mail, optionally in angle brackets
        r(
            seq(vec![
                opt(alt(vec![ch('<'), lit("&lt;")])),
                c(is_ascii_alnum),
                star(c(is_email_local)),
                ch('@'),
                star(seq(vec![plus(c(is_email_domain)), ch('.')])),
                plus(c(is_email_domain)),
                opt(alt(vec![ch('>'), lit("&gt;")])),
            ]),
            Act::Keep,
        ),
        rt(
            redaux(cx),
            c(|c| !c.is_ascii_alphabetic()),
            Act::Quote(false),
        ),
        r(sredaux(cx), Act::Quote(false)),
        // dates
        r(
            seq(vec![
                digits(1, 2),
                c(|c| c == '-' || c == '/'),
                digits(1, 2),
                c(|c| c == '-' || c == '/'),
                digits(2, 4),
            ]),
            Act::Keep,
        ),
        r(number(), Act::Soft),
        r(
            seq(vec![
                opt(c(|c| {
                    matches!(c, '\u{207A}' | '\u{207B}' | '\u{208A}' | '\u{208B}')
                })),
                alt(vec![
                    plus(c(|c| {
                        matches!(
                            c,
                            '\u{2070}' | '\u{B9}' | '\u{B2}' | '\u{B3}' | '\u{2074}'..='\u{2079}'
                        )
                    })),
                    plus(c(|c| ('\u{2080}'..='\u{2089}').contains(&c))),
                ]),
            ]),
            Act::Keep,
        ),
        // fractions
        r(
            seq(vec![
                opt(seq(vec![
                    digits(1, 4),
                    c(|c| c == '-' || c == ' ' || c == '\u{A0}'),
                ])),
                digits(1, 4),
                alt(vec![seq(vec![opt(ch('\\')), ch('/')]), ch('\u{2044}')]),
                digits(1, 4),
            ]),
            Act::Nbsp,
        ),
        r(
            c(|c| matches!(c, '\u{BC}' | '\u{BD}' | '\u{BE}' | '\u{2153}'..='\u{215E}')),
            Act::Fraction,
        ),
        // treebank specials
        r(
            alt(vec![
                seq(vec![
                    ch('-'),
                    alt_lit(&["RRB", "LRB", "RCB", "LCB", "RSB", "LSB"]),
                    ch('-'),
                ]),
                alt_lit(&[
                    "C.D.s",
                    "pro-",
                    "anti-",
                    "S&P-500",
                    "S&amp;P-500",
                    "S&Ls",
                    "S&amp;Ls",
                ]),
                seq(vec![lit("Cap"), apos(cx), ch('n')]),
                seq(vec![ch('c'), apos(cx), lit("est")]),
            ]),
            Act::Amp,
        ),
        r(thing3(), Act::Keep),
        r(
            alt(vec![seq(vec![star(c(is_ascii_upper)), ch('$')]), ch('#')]),
            Act::Keep,
        ),
        r(c(is_currency2), Act::Currency),
        // abbreviations
        rt(seq(vec![acro_min(0), ch('.')]), sentend(), Act::AcronymEnd),
        rt(abbrev1(), seq(vec![c(|_| true), c(|_| true)]), Act::Keep),
        r(abbrev1(), Act::Keep),
        rt(
            abbrev3(),
            seq(vec![opt(c(is_space)), c(is_digit)]),
            Act::Keep,
        ),
        r(seq(vec![abbrev4(), ch('.')]), Act::Keep),
        rt(abbrev4(), c(is_space), Act::Keep),
        rt(acro(), c(is_space_or_nl), Act::Keep),
        rt(
            seq(vec![apos(cx), c(is_ascii_digit), c(is_ascii_digit)]),
            c(is_space_or_nl),
            Act::Keep,
        ),
        // file names
        rt(
            seq(vec![
                plus(c(is_ascii_alnum)),
                star(seq(vec![ch('.'), plus(c(is_ascii_alnum))])),
                ch('.'),
                alt_lit(&[
                    "bat", "bmp", "bz2", "c", "class", "cgi", "cpp", "dll", "doc", "docx", "exe",
                    "gif", "gz", "h", "htm", "html", "jar", "java", "jpeg", "jpg", "mov", "mp3",
                    "pdf", "php", "pl", "png", "ppt", "ps", "py", "sql", "tar", "txt", "wav", "x",
                    "xml", "zip",
                ]),
            ]),
            // Observed: only white space or . , ! ? may follow.
            c(|c| is_space_or_nl(c) || matches!(c, '.' | ',' | '!' | '?')),
            Act::Keep,
        ),
        // twitter names and hashtags
        r(
            alt(vec![
                seq(vec![
                    ch('@'),
                    c(|c| c.is_ascii_alphabetic() || c == '_'),
                    star(c(|c| c.is_ascii_alphanumeric() || c == '_')),
                ]),
                seq(vec![ch('#'), plus(letter(cx))]),
            ]),
            Act::Keep,
        ),
        rt(seq(vec![word(cx), ch('.')]), c(is_insentp), Act::Soft),
        r(phone(), Act::Phone),
        rt(smiley(), c(|c| !c.is_ascii_alphanumeric()), Act::Parens),
        r(asian_smiley(), Act::Parens),
        // double quotes
        rt(
            alt(vec![ch('"'), lit("&quot;")]),
            c(|c| c.is_ascii_alphanumeric() || c == '$'),
            Act::Quote(true),
        ),
        r(alt(vec![ch('"'), lit("&quot;")]), Act::Quote(false)),
        // brackets
        r(alt(vec![ch('<'), lit("&lt;")]), Act::Fixed("<")),
        r(alt(vec![ch('>'), lit("&gt;")]), Act::Fixed(">")),
        r(ch('['), Act::Fixed("-LSB-")),
        r(ch(']'), Act::Fixed("-RSB-")),
        r(ch('{'), Act::Fixed("-LCB-")),
        r(ch('}'), Act::Fixed("-RCB-")),
        r(ch('('), Act::Fixed("-LRB-")),
        r(ch(')'), Act::Fixed("-RRB-")),
        r(plus(ch('-')), Act::Hyphens),
        r(ldots(), Act::Fixed("...")),
        r(
            alt(vec![plus(ch('@')), plus(ch('#')), plus(ch('_'))]),
            Act::Keep,
        ),
        r(alt(vec![plus(ch('*')), rep(lit("\\*"), 1, 3)]), Act::Keep),
        r(c(is_insentp), Act::Keep),
        r(plus(c(|c| c == '?' || c == '!')), Act::Keep),
        r(c(is_period_like), Act::Keep),
        r(ch('='), Act::Keep),
        r(ch('/'), Act::Keep),
        rt(seq(vec![hthing(), ch('.')]), c(is_insentp), Act::Soft),
        r(hthing(), Act::Soft),
        rt(seq(vec![thing(cx), ch('.')]), c(is_insentp), Act::Keep),
        r(thing(cx), Act::Keep),
        rt(seq(vec![thinga(), ch('.')]), c(is_insentp), Act::Amp),
        r(thinga(), Act::Amp),
        rt(
            ch('\''),
            seq(vec![
                c(is_ascii_alpha),
                c(|c| !matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{A0}')),
            ]),
            Act::Quote(true),
        ),
        r(redaux(cx), Act::Quote(false)),
        r(
            alt(vec![apos(cx), lit("''"), rep(c(is_quote_char), 1, 2)]),
            Act::Quote(false),
        ),
        r(alt(vec![lit("<<"), lit(">>")]), Act::Keep),
        r(c(is_misc_symbol), Act::Keep),
        r(
            alt(vec![
                ch('\0'),
                plus(c(is_space)),
                c(|c| matches!(c, '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{FEFF}')),
            ]),
            Act::Skip,
        ),
        r(alt(vec![lit("\r\n"), c(is_newline_char)]), Act::Skip),
        r(lit("&nbsp;"), Act::Skip),
    ]
}

// ---- actions --------------------------------------------------------------

fn remove_soft_hyphens(s: &str) -> String {
    let out: String = s.chars().filter(|&c| c != '\u{AD}').collect();
    if out.is_empty() {
        "-".to_string()
    } else {
        out
    }
}

fn replace_ignore_ascii_case(s: &str, from: &str, to: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(k) = lower[i..].find(from) {
        out.push_str(&s[i..i + k]);
        out.push_str(to);
        i += k + from.len();
    }
    out.push_str(&s[i..]);
    out
}

fn latex_quotes(s: &str, probably_left: bool) -> String {
    let s = if probably_left {
        s.replace("&apos;", "`")
            .replace('\'', "`")
            .replace('"', "``")
            .replace("&quot;", "``")
    } else {
        s.replace("&apos;", "'")
            .replace('"', "''")
            .replace("&quot;", "''")
    };
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{91}' | '\u{2018}' | '\u{201B}' | '\u{2039}' => out.push('`'),
            '\u{92}' | '\u{2019}' | '\u{203A}' => out.push('\''),
            '\u{93}' | '\u{201C}' | '\u{AB}' => out.push_str("``"),
            '\u{94}' | '\u{201D}' | '\u{BB}' => out.push_str("''"),
            _ => out.push(c),
        }
    }
    out
}

fn apply(act: Act, text: &str) -> Option<String> {
    Some(match act {
        Act::Keep | Act::Prefix(_) => text.to_string(),
        Act::Parens => text.replace('(', "-LRB-").replace(')', "-RRB-"),
        Act::AcronymEnd => {
            if text.chars().count() == 2 {
                text.chars().take(1).collect()
            } else {
                text.to_string()
            }
        }
        Act::Skip => return None,
        Act::Fixed(f) => f.to_string(),
        Act::Soft => remove_soft_hyphens(text),
        Act::Amp => replace_ignore_ascii_case(text, "&amp;", "&"),
        Act::Quote(left) => latex_quotes(text, left),
        Act::Hyphens => {
            let n = text.chars().count();
            if (3..=4).contains(&n) {
                "--".to_string()
            } else {
                text.to_string()
            }
        }
        Act::Currency => match text {
            "\u{A2}" => "cents".to_string(),
            "\u{A3}" => "#".to_string(),
            "\u{80}" | "\u{A4}" | "\u{20A0}" | "\u{20AC}" => "$".to_string(),
            _ => text.to_string(),
        },
        Act::Fraction => match text {
            "\u{BC}" => "1/4".to_string(),
            "\u{BD}" => "1/2".to_string(),
            "\u{BE}" => "3/4".to_string(),
            "\u{2153}" => "1/3".to_string(),
            "\u{2154}" => "2/3".to_string(),
            _ => text.to_string(),
        },
        Act::Nbsp => text.replace(' ', "\u{A0}"),
        Act::Phone => text
            .replace(' ', "\u{A0}")
            .replace('(', "-LRB-")
            .replace(')', "-RRB-"),
    })
}

// ---- driver ---------------------------------------------------------------

/// The compiled rule set. Building it allocates; reuse one per thread.
pub(crate) struct Lexer {
    /// All rules, for lines containing `&`.
    with_entities: RuleSet,
    /// The same rules without entity alternatives, for all other lines.
    plain: RuleSet,
}

/// Rules with, per possible first character, the rules that can match there.
struct RuleSet {
    rules: Vec<Rule>,
    /// For each ASCII character, the indices of rules that can start with it.
    by_ascii: Vec<Vec<usize>>,
    /// Rules that can start with a non-ASCII character.
    other: Vec<usize>,
    /// For each ASCII character, the action of the one rule that can match
    /// there when that rule is this single character without trailing
    /// context and with an action of its text alone (`[` → `-LSB-`, `/`):
    /// the longest match is then that character, so the scan takes it
    /// without running the matcher.
    single: Vec<Option<Act>>,
}

impl RuleSet {
    fn new(rules: Vec<Rule>) -> Self {
        let by_ascii: Vec<Vec<usize>> = (0u8..128)
            .map(|c| {
                (0..rules.len())
                    .filter(|&k| rules[k].can_start_with(c as char))
                    .collect()
            })
            .collect();
        let other = (0..rules.len()).filter(|&k| rules[k].first_other).collect();
        let single = (0u8..128)
            .map(|c| match by_ascii[c as usize].as_slice() {
                &[k] => {
                    let rule: &Rule = &rules[k];
                    let context_free = matches!(rule.act, Act::Fixed(_) | Act::Keep);
                    (context_free
                        && rule.trail.is_none()
                        && rule.pat.is_single_char()
                        && rule.pat.matches_char(c as char))
                    .then_some(rule.act)
                }
                _ => None,
            })
            .collect();
        RuleSet {
            rules,
            by_ascii,
            other,
            single,
        }
    }

    fn candidates(&self, c: char) -> &[usize] {
        if c.is_ascii() {
            &self.by_ascii[c as usize]
        } else {
            &self.other
        }
    }
}

impl Lexer {
    pub(crate) fn new() -> Self {
        Lexer {
            with_entities: RuleSet::new(rules(Cx { entities: true })),
            plain: RuleSet::new(rules(Cx { entities: false })),
        }
    }

    /// Tokens of one line, before lower-casing and punctuation removal.
    ///
    /// `after` is the text that follows the line in the tokenizer's input
    /// (empty at the end of the input): a few rules look past the end of a
    /// token, and an initialism at the end of a line is split differently when
    /// the next line starts a sentence. No token spans a line break.
    pub(crate) fn tokens(&self, line: &str, after: &str, out: &mut Vec<String>) {
        self.scan(line, after, out, true);
    }

    /// [`Lexer::tokens`], with or without the fast paths (which must not
    /// change the result).
    fn scan(&self, line: &str, after: &str, out: &mut Vec<String>, fast: bool) {
        let mut s: Vec<char> = line.chars().collect();
        let n = s.len();
        s.extend(after.chars());
        let rules = if s.contains(&'&') {
            &self.with_entities
        } else {
            &self.plain
        };
        let mut i = 0;
        let mut ends = Vec::new();
        while i < n {
            if fast {
                if let Some(next) = fast_word(&s, i, out)
                    .or_else(|| fast_punct(&s, i, out))
                    .or_else(|| fast_context(&s, i, out))
                    .or_else(|| fast_number(&s, i, out))
                {
                    i = next;
                    continue;
                }
                if let Some(act) = s[i]
                    .is_ascii()
                    .then(|| rules.single[s[i] as usize])
                    .flatten()
                {
                    out.extend(apply(act, s[i].encode_utf8(&mut [0; 4])));
                    i += 1;
                    continue;
                }
            }
            let mut best: Option<(usize, usize, usize)> = None; // (total, token end, rule)
            for &idx in rules.candidates(s[i]) {
                let rule = &rules.rules[idx];
                ends.clear();
                rule.pat.ends(&s, i, &mut ends);
                let cand = match &rule.trail {
                    None => ends.iter().copied().max().map(|e| (e, e)),
                    Some(t) => {
                        let mut b: Option<(usize, usize)> = None;
                        for &e in &ends {
                            if let Some(total) = t.longest(&s, e) {
                                if b.is_none_or(|(bt, be)| (total, e) > (bt, be)) {
                                    b = Some((total, e));
                                }
                            }
                        }
                        b
                    }
                };
                if let Some((total, end)) = cand {
                    if end > i && best.is_none_or(|(bt, _, _)| total > bt) {
                        best = Some((total, end, idx));
                    }
                }
            }
            match best {
                None => {
                    // Untokenizable: the Java lexer drops it (with a warning).
                    i += 1;
                }
                Some((_, end, idx)) => {
                    let act = rules.rules[idx].act;
                    let text: String = match act {
                        Act::Prefix(k) => s[i..i + k].iter().collect(),
                        _ => s[i..end].iter().collect(),
                    };
                    let end = match act {
                        Act::Prefix(k) => i + k,
                        Act::AcronymEnd => end - 1,
                        _ => end,
                    };
                    if let Some(tok) = apply(act, &text) {
                        out.push(tok);
                    }
                    i = end;
                }
            }
        }
    }
}

/// Fast path for spaces and common punctuation where no rule but the
/// obvious one can match: a space or tab; a period ending the line or followed
/// by a space or tab and no further period (`. . .` is an ellipsis); a comma
/// not followed by a digit (`,5` is a number); a run of hyphens before a
/// break. (Every rule that can start here or before reads a tab as it reads a
/// space: both are in each white-space class the rules use; only SGML tags,
/// which start with `<`, name the space alone.)
fn fast_punct(s: &[char], i: usize, out: &mut Vec<String>) -> Option<usize> {
    let at = |k: usize| s.get(k).copied();
    match s[i] {
        ' ' | '\t' => {
            // The white-space rule takes the whole run, U+00A0 and the other
            // spaces of `is_space` included (a U+00A0 left alone could start
            // a domain name: ` \u{a0}no.com`).
            let mut k = i;
            while k < s.len() && is_space(s[k]) {
                k += 1;
            }
            Some(k)
        }
        '.' => match (at(i + 1), at(i + 2)) {
            (None | Some('\n'), _) | (Some(' ' | '\t'), None) => {
                out.push(".".to_string());
                Some(i + 1)
            }
            (Some(' ' | '\t'), Some(c)) if c != '.' => {
                out.push(".".to_string());
                Some(i + 1)
            }
            _ => None,
        },
        ',' => match at(i + 1) {
            Some(c) if is_digit(c) => None,
            _ => {
                out.push(",".to_string());
                Some(i + 1)
            }
        },
        '-' => {
            let mut j = i;
            while at(j) == Some('-') {
                j += 1;
            }
            match at(j) {
                None | Some(' ' | '\t' | '\n') => {
                    let text: String = s[i..j].iter().collect();
                    out.extend(apply(Act::Hyphens, &text));
                    Some(j)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Fast path for the common case of a run of ASCII letters, optionally with
/// a clitic (`'s`, `n't`), followed by a space or tab, the end of the line, or a
/// punctuation mark that ends the line or precedes a space. No rule can match
/// more than these tokens there. (The differential tests against the Java
/// tokenizer run through this path as well as the general one.)
fn fast_word(s: &[char], i: usize, out: &mut Vec<String>) -> Option<usize> {
    let mut j = i;
    while j < s.len() && s[j].is_ascii_alphabetic() {
        j += 1;
    }
    if j == i {
        return None;
    }
    let is_break = |k: usize| k >= s.len() || matches!(s[k], ' ' | '\t' | '\n');
    // After the tokens: a break, or one punctuation mark and a break.
    let ends_well = |k: usize, period_ok: bool| {
        is_break(k)
            || (is_break(k + 1)
                && match s[k] {
                    ',' | ';' | ':' | '!' | '?' => true,
                    '.' => period_ok,
                    _ => false,
                })
    };
    let w = &s[i..j];
    // Words that rules other than WORD split or treat specially.
    // Lower-cased for the word lists below, whose words have at most 8
    // letters (a longer word matches none of them: it is left empty).
    let mut buf = [0u8; 8];
    let lower: &str = if w.len() <= buf.len() {
        for (b, c) in buf.iter_mut().zip(w) {
            *b = c.to_ascii_lowercase() as u8;
        }
        std::str::from_utf8(&buf[..w.len()]).unwrap_or("")
    } else {
        ""
    };
    if matches!(
        lower,
        "cannot" | "gimme" | "gonna" | "gotta" | "lemme" | "wanna"
    ) {
        return None;
    }
    let at = |k: usize, c: char| k < s.len() && s[k] == c;
    if at(j, '\'') && at(j + 1, 's') && ends_well(j + 2, true) {
        // "dog's": the word, then the reduced auxiliary.
        out.push(w.iter().collect());
        out.push("'s".to_string());
        return Some(j + 2);
    }
    if at(j, '\'') && at(j + 1, 't') && ends_well(j + 2, true) && w.len() >= 2 {
        // "isn't": the stem, then n't; the stem must not end in n.
        let stem = &w[..w.len() - 1];
        if w[w.len() - 1] == 'n' && !matches!(stem[stem.len() - 1], 'n' | 'N') {
            out.push(stem.iter().collect());
            out.push("n't".to_string());
            return Some(j + 2);
        }
        return None;
    }
    // A period may belong to an abbreviation or an initial.
    // (Looked up only before a period: most words are followed by a space.)
    let period_ok = at(j, '.') && w.len() > 1 && !is_abbreviation(lower);
    if !ends_well(j, period_ok) && !closed_by_tail(s, j, w, lower) {
        return None;
    }
    out.push(w.iter().collect());
    Some(j)
}

/// Characters that may follow a word in [`closed_by_tail`]: closing brackets,
/// quotes, sentence punctuation and periods.
fn is_tail_char(c: char) -> bool {
    matches!(
        c,
        ')' | ']' | '}' | '"' | '\'' | '!' | '?' | ',' | ';' | ':' | '.'
    )
}

/// Whether the word `w` (ASCII letters, lower-cased `lower`, ending at `j`)
/// is the whole token when a run of [`is_tail_char`] characters follows it up
/// to a space, a tab, a line break or the end (`dog)`, `dog",`, `dog!!`,
/// `dog'`, `dog..`).
///
/// Why no rule takes more: the tail holds no letter, digit, `@`, `&`, `-`,
/// `/`, `+`, `#` or `$`, and it ends at white space, so no rule can continue
/// the word into it (WORD needs a letter after `.` `!` `?`; e-mail needs `@`;
/// URLs, domains and file names need letters after `:` or `.`; hyphenated,
/// slashed and `&`-joined words need their joiner; trailing contexts after an
/// abbreviation need white space or a digit right after it). What remains is
/// the first tail character:
/// - `'`: the contractions `l'` `d'` `j'` (one letter) and `Dunkin'`
///   `somethin'` `ol'` take it; every other rule needs a letter or digit
///   after it.
/// - `.`: an initial (one letter), an abbreviation (`Mr.`, `etc.`) or a word
///   before `,` `;` `:` keeps the period; a longer word before another tail
///   character or white space does not.
fn closed_by_tail(s: &[char], j: usize, w: &[char], lower: &str) -> bool {
    let Some(&first) = s.get(j) else {
        return false;
    };
    let mut k = j;
    while k < s.len() && is_tail_char(s[k]) {
        k += 1;
    }
    if k == j || (k < s.len() && !matches!(s[k], ' ' | '\t' | '\n')) {
        return false;
    }
    match first {
        '\'' => {
            let contraction = (w.len() == 1 && "lLdDjJ".contains(w[0]))
                || matches!(lower, "dunkin" | "somethin" | "ol");
            !contraction
        }
        '.' => {
            w.len() > 1 && !is_abbreviation(lower) && !s.get(j + 1).is_some_and(|&c| is_insentp(c))
        }
        _ => true,
    }
}

/// Fast path for characters whose rule depends on the next character only,
/// in the cases listed here (every other case goes to the general path):
/// - `"`: an opening quote ``` `` ``` before an ASCII letter or digit or `$`,
///   otherwise a closing one `''` (the two rules that can start with `"`);
/// - `'` before white space, the end or a closing bracket, quote or sentence
///   punctuation other than `'` and `:`: the quote `'`;
/// - `'` before two or more ASCII letters that do not start `'tis`, `'twas`,
///   `'til`, `'em`, `'cause`, `'re`, `'ve`, `'ll`: an opening quote `` ` ``
///   (the quote rule's trailing context, a letter and a non-space, makes it
///   the longest match; the reduced auxiliaries need a non-letter after them);
/// - `(` before anything but an ASCII digit (a phone area code) or an
///   emoticon eye (`(-_-)`): `-LRB-`;
/// - a period before anything but a period, a space, U+00A0 or a digit: a
///   period;
/// - two or more periods: `...` for three to five (the ellipsis), a period
///   for two (`..`: no number, no spaced ellipsis can start there);
/// - `!` and `?`: the run of them, the one rule that can start there;
/// - `;` and `:` before white space or the end: themselves.
fn fast_context(s: &[char], i: usize, out: &mut Vec<String>) -> Option<usize> {
    let next = s.get(i + 1).copied();
    let is_break = |c: Option<char>| matches!(c, None | Some(' ' | '\t' | '\n'));
    match s[i] {
        '"' => {
            let open = next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '$');
            out.push(if open { "``" } else { "''" }.to_string());
            Some(i + 1)
        }
        '\'' => {
            if is_break(next)
                || matches!(
                    next,
                    Some(')' | ']' | '}' | '"' | '!' | '?' | ',' | ';' | '.')
                )
            {
                out.push("'".to_string());
                return Some(i + 1);
            }
            let mut k = i + 1;
            while k < s.len() && s[k].is_ascii_alphabetic() {
                k += 1;
            }
            if k - i - 1 < 2 {
                return None;
            }
            let lower: String = s[i + 1..k.min(i + 6)]
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect();
            let special = ["tis", "twas", "til", "em", "cause", "re", "ve", "ll"]
                .iter()
                .any(|p| lower.starts_with(p));
            if special {
                return None;
            }
            out.push("`".to_string());
            Some(i + 1)
        }
        '(' => match next {
            Some(c) if c.is_ascii_digit() || "-^x=~<>'".contains(c) => None,
            _ => {
                out.push("-LRB-".to_string());
                Some(i + 1)
            }
        },
        // A period before anything but a period, a space or U+00A0 (a
        // spaced ellipsis) or a digit (a number `.5`): the period alone.
        '.' if !next.is_some_and(|c| matches!(c, '.' | ' ' | '\u{A0}') || is_digit(c)) => {
            out.push(".".to_string());
            Some(i + 1)
        }
        '.' if next == Some('.') => {
            let mut k = i;
            while k < s.len() && s[k] == '.' {
                k += 1;
            }
            if k - i >= 3 {
                out.push("...".to_string());
                Some(i + (k - i).min(5))
            } else {
                out.push(".".to_string());
                Some(i + 1)
            }
        }
        '!' | '?' => {
            let mut k = i;
            while k < s.len() && matches!(s[k], '!' | '?') {
                k += 1;
            }
            out.push(s[i..k].iter().collect());
            Some(k)
        }
        ';' | ':' if is_break(next) => {
            out.push(s[i].to_string());
            Some(i + 1)
        }
        _ => None,
    }
}

/// Fast path for a number of ASCII digits, possibly grouped or decimal
/// (`2012`, `1,000`, `3.5`, `3:30`: every `.` `,` `:` between digits), before
/// a tab, a line break, the end, or a space that a digit does not follow
/// (phone numbers and fractions such as `1 1/2` may continue past a space).
/// NUMBER takes it whole, unchanged; no rule takes more. Also before a run
/// of closing brackets, quotes and punctuation up to white space, as
/// [`closed_by_tail`] allows after a word.
fn fast_number(s: &[char], i: usize, out: &mut Vec<String>) -> Option<usize> {
    let digit = |k: usize| s.get(k).is_some_and(|c| c.is_ascii_digit());
    if !digit(i) {
        return None;
    }
    let mut k = i;
    loop {
        while digit(k) {
            k += 1;
        }
        if matches!(s.get(k), Some('.' | ',' | ':')) && digit(k + 1) {
            k += 1;
        } else {
            break;
        }
    }
    let ends = match s.get(k) {
        None | Some('\t' | '\n') => true,
        Some(' ') => !s.get(k + 1).is_some_and(|c| is_digit(*c)),
        Some(&c) if is_tail_char(c) => {
            // `2012)`, `5!`, `3.5".`: as after a word (see `closed_by_tail`);
            // a number keeps a period only before `,` `;` `:` (THING then
            // `.` with that trailing context).
            let mut t = k;
            while t < s.len() && is_tail_char(s[t]) {
                t += 1;
            }
            (t == s.len() || matches!(s[t], ' ' | '\t' | '\n'))
                && !(c == '.' && s.get(k + 1).is_some_and(|&n| is_insentp(n)))
        }
        _ => false,
    };
    if !ends {
        return None;
    }
    out.push(s[i..k].iter().collect());
    Some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast paths assume that only the obvious rule can start with these
    /// characters (beyond the cases they leave to the general path).
    #[test]
    fn fast_path_assumptions_hold() {
        let lexer = Lexer::new();
        for set in [&lexer.plain, &lexer.with_entities] {
            let acts = |c: char| -> Vec<&'static str> {
                set.candidates(c)
                    .iter()
                    .map(|&k| match set.rules[k].act {
                        Act::Skip => "skip",
                        Act::Hyphens => "hyphens",
                        Act::Soft => "soft",
                        Act::Keep => "keep",
                        _ => "other",
                    })
                    .collect()
            };
            assert_eq!(acts(' '), vec!["skip"]);
            assert_eq!(acts('\t'), vec!["skip"]);
            // Comma: numbers (",5") and the comma itself.
            assert_eq!(set.candidates(',').len(), 2);
            // Closing brackets and `[`, `{`: one rule each, taken without the matcher.
            for c in [')', '[', ']', '{', '}'] {
                assert!(set.single[c as usize].is_some(), "{c:?}");
            }
            for c in ['(', '"', '\'', '!', '?', '.', 'a', '1'] {
                assert!(set.single[c as usize].is_none(), "{c:?}");
            }
        }
    }

    /// `fast_word` compares words of at most 8 letters with the word lists.
    #[test]
    fn word_lists_fit_the_fast_path_buffer() {
        for list in [
            ABBREV1_WORDS,
            ABBREV1_CAPITALISED,
            ABBREV4_WORDS,
            ABBREV4_CAPITALISED,
            ABBREV3_WORDS,
        ] {
            for w in list {
                assert!(w.len() <= 8, "{w}");
            }
        }
    }

    /// The context fast paths (`fast_context`) assume these rule counts.
    #[test]
    fn context_fast_path_assumptions_hold() {
        let lexer = Lexer::new();
        for set in [&lexer.plain, &lexer.with_entities] {
            // `"`: the opening quote (with its trailing context) and the closing one.
            assert_eq!(set.candidates('"').len(), 2);
            // `(`: -LRB-, phone numbers `(555) 123-4567`, emoticons `(-_-)`.
            assert_eq!(set.candidates('(').len(), 3);
            // `.`: the ellipsis, a number `.5`, the period.
            assert_eq!(set.candidates('.').len(), 3);
            // `!` `?`: their runs only.
            assert_eq!(set.candidates('!').len(), 1);
            assert_eq!(set.candidates('?').len(), 1);
        }
    }

    /// A small deterministic generator (SplitMix64) for the property test.
    struct Mix(u64);
    impl Mix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
            v[self.below(v.len())]
        }
    }

    /// Strings that mix words, the characters the fast paths look at and the
    /// characters that rules could take after them.
    fn tricky_line(g: &mut Mix) -> String {
        const WORDS: &[&str] = &[
            "dog",
            "DOG",
            "Dog",
            "dOg",
            "a",
            "A",
            "I",
            "x",
            "l",
            "d",
            "j",
            "J",
            "y",
            "n",
            "t",
            "s",
            "ol",
            "Dunkin",
            "somethin",
            "Mr",
            "etc",
            "no",
            "No",
            "Calif",
            "fig",
            "Ed",
            "gonna",
            "cannot",
            "http",
            "https",
            "www",
            "com",
            "org",
            "tis",
            "twas",
            "til",
            "em",
            "cause",
            "re",
            "ve",
            "ll",
            "isn",
            "can",
            "The",
            "He",
            "rock",
            "USA",
            "AT",
            "T",
            "c",
            "C",
            "f",
            "pro",
            "anti",
            "cont",
            "nor",
            "Cap",
            "est",
            "mon",
            "caf\u{e9}",
            "na\u{ef}ve",
            "S",
            "P",
            "U",
            "K",
            "e",
            "g",
        ];
        const MARKS: &[&str] = &[
            "\"", "'", "''", "`", "``", "(", ")", "[", "]", "{", "}", "!", "?", "!!", "?!", ".",
            "..", "...", "....", "......", ",", ";", ":", "-", "--", "---", "_", "&", "&amp;",
            "&apos;", "&quot;", "@", "$", "#", "%", "/", "\\", "+", "*", "=", "~", "^", "<", ">",
            "|", "0", "1", "5", "12", "2012", "3.5", "1,000", "3:30", "1/2", "90", "'90s",
            "\u{a0}", "\u{ad}", "\u{2019}", "\u{201c}", "\u{2026}", "\u{e9}", "\u{ff10}", "-_-",
            "^_^", "x_x", ":)", ";-)", "=D", "'s", "n't", "'re", "'ll", "'em", ".com", "@b.com",
            "://x.org", ".jpg", ".D", "-U.S", ".S.", "\r", ".,", ".;", ".:", ").", "\".", "'.",
            "!)", "',", ",\"", "?'",
        ];
        const SPACES: &[&str] = &[" ", " ", " ", "", "", "", "", "", "\t", "  ", "\n"];
        let mut s = String::new();
        for _ in 0..1 + g.below(12) {
            match g.below(3) {
                0 => s.push_str(g.pick(WORDS)),
                1 => s.push_str(g.pick(MARKS)),
                _ => {
                    s.push_str(g.pick(MARKS));
                    s.push_str(g.pick(WORDS));
                    s.push_str(g.pick(MARKS));
                }
            }
            s.push_str(g.pick(SPACES));
        }
        s
    }

    /// Property test: on many generated strings mixing the characters the
    /// fast paths handle, the scan with fast paths gives the tokens of the
    /// general matcher alone (the reference here; it is checked against the
    /// Java tokenizer by `tests/metrics_parity.rs` and
    /// `tests/fixtures/metrics/ptb_differential.py`).
    #[test]
    fn fast_paths_agree_with_general_matcher_on_generated_strings() {
        let lexer = Lexer::new();
        let mut g = Mix(20261130);
        let mut lines: Vec<String> = (0..30_000).map(|_| tricky_line(&mut g)).collect();
        // Lines have no line breaks inside (the tokenizer makes them spaces).
        for l in &mut lines {
            *l = l.replace(['\n', '\r'], " ");
        }
        let mut fast_taken = 0usize;
        for (k, line) in lines.iter().enumerate() {
            let after = lines.get(k + 1).map_or(String::new(), |n| format!("\n{n}"));
            let (mut fast, mut general) = (Vec::new(), Vec::new());
            lexer.scan(line, &after, &mut fast, true);
            lexer.scan(line, &after, &mut general, false);
            assert_eq!(fast, general, "{line:?} followed by {after:?}");
            fast_taken += fast.len();
        }
        assert!(fast_taken > 100_000, "{fast_taken} tokens");
    }

    #[test]
    fn fast_and_general_paths_agree() {
        let lexer = Lexer::new();
        let lines = [
            "a dog's bone isn't here, is it? yes. no! maybe; fine: ok -- done ---",
            "Mr. Smith a. I. etc. the end. Co. co. no. fig. Calif. vs. e.g. U.S.",
            "cannot gonna Gotta x-ray . . . 1,000 ,5 -5 --5 ---x .5 ..",
            "the dog's. the dogs'. isn't. ISN'T can't, ain't! don't? won't: nn't n't",
            "y's o's d's l's gonna's cannot's 'tis a. b. A. The",
            "photo.jpg 5.x. a.jpg, the end.The x.. y... z.,",
            "a\tdog's\tbone. isn't\tMr.\tSmith a.\tI.\tend.\t. .\t. x --\ty -\t, z.\t",
            "\tThe\t\tcat\t.\tNo.\t5 fig.\t3 U.S.\tA. photo.jpg\ta.jpg\t, e.g.\tok",
            "(a [dog] {on} grass) \"x\" 'y' [(z)] ]a] }b{ )c( = / 1/2 a/b x=y :) :] ;} (-_-)",
            "[DOG's] (isn't) {Mr.} [a.] &amp; [&lt;] (c) (2) (12) 3:30 $5 10% #1 U.S.]",
            "2012., 3.5.; dog.: 1,000.) dog.) l' ol' dunkin' x' (x_x) (-_-) (5 ( \"a \" \"$ '' ' 'em",
            "'tis 'twas 'till 'cause 're 've 'll 'sun 'Dog' dog'. a.. dog.. ...... .... .5 ..5 .com",
        ];
        for (k, line) in lines.iter().enumerate() {
            let after = lines.get(k + 1).map_or(String::new(), |n| format!("\n{n}"));
            for after in ["", after.as_str(), "\nThe next", "\n a"] {
                let (mut fast, mut general) = (Vec::new(), Vec::new());
                lexer.scan(line, after, &mut fast, true);
                lexer.scan(line, after, &mut general, false);
                assert_eq!(fast, general, "{line:?} followed by {after:?}");
            }
        }
        let mut t = Vec::new();
        lexer.tokens("dog's isn't Mr. a. end.", "", &mut t);
        assert_eq!(t, vec!["dog", "'s", "is", "n't", "Mr.", "a.", "end", "."]);
    }
}
