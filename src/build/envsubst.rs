//! Flux postBuild variable substitution: a re-implementation of fluxcd/pkg `envsubst` v1.7.0 (a
//! fork of drone/envsubst) and of the var-name check and value handling in fluxcd/pkg
//! `kustomize/kustomize_varsub.go`, quirks included, so output matches Flux's byte for byte.
//! Pure: no I/O.

use std::collections::BTreeMap;

/// The regular expression Flux checks every supplied variable name against (quoted in errors).
pub const VAR_NAME_REGEX: &str = "^[_[:alpha:]][_[:alpha:][:digit:]]*$";

/// Why a substitution failed. Display strings are Flux's own where Flux has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvsubstError {
    /// Malformed `${…}` expression.
    #[error("bad substitution")]
    BadSubstitution,
    /// `${name` not followed by `}` or a known operator.
    #[error("missing closing brace")]
    MissingClosingBrace,
    /// `${` not followed by a variable name.
    #[error("unable to parse variable name")]
    ParseVariableName,
    /// An operator argument is empty or malformed (e.g. `${v#}`, `${v:}`).
    #[error("unable to parse substitution within function")]
    ParseFuncSubstitution,
    /// A default operator could not be read (unreachable in practice; kept for parity).
    #[error("unable to parse default function")]
    ParseDefaultFunction,
    /// Strict mode: the variable is referenced without a default operator and is not set.
    #[error("variable not set (strict mode): \"{name}\"")]
    VariableNotSet {
        /// The variable name as written.
        name: String,
    },
    /// `${v:off:len}` whose end falls before its start (a negative length): Go panics here.
    #[error(
        "substring of variable \"{name}\" has a negative length: slice bounds out of range [{start}:{end}] (Flux's envsubst panics)"
    )]
    SubstringOutOfRange {
        /// The variable name.
        name: String,
        /// Start byte offset.
        start: i64,
        /// End byte offset (before start).
        end: i64,
    },
    /// Byte-offset operations cut a multi-byte character; Flux's YAML parser would reject the text.
    #[error("substitution produced invalid UTF-8 (a byte offset cut a multi-byte character)")]
    InvalidUtf8Output,
    /// A supplied variable name does not match [`VAR_NAME_REGEX`].
    #[error("'{name}' var name is invalid, must match '{regex}'", regex = VAR_NAME_REGEX)]
    InvalidVarName {
        /// The offending key.
        name: String,
    },
}

type Result<T> = std::result::Result<T, EnvsubstError>;

/// Substitutes `${…}` expressions in `input` from `vars`, as `envsubst.Eval` with the mapper the
/// kustomize-controller passes: `strict` makes unset variables an error.
/// Does not check variable names; [`var_substitution`] does both as Flux does.
///
/// # Grammar and semantics (as in Flux's source, not bash)
///
/// - Only `${…}` expands; bare `$var` stays. Outside `${…}`, `$$` becomes `$` (so `$${v}` gives
///   `${v}`); `\` is not special there. Inside replace patterns and replacements, `\/`, `\\` and
///   `$$` are escapes for `/`, `\` and `$`. In default values, substring offsets and `#`/`%`
///   patterns the parser unescapes nothing (`${v:=$$}` yields `$$`; a `\` in a `#`/`%` pattern is
///   the glob's own escape).
/// - Forms: `${v}`, `${#v}` (length in **bytes**), `${v^}`, `${v^^}`, `${v,}`, `${v,,}`,
///   `${v:off}`, `${v:off:len}` (byte offsets; a negative offset counts from the end but can only
///   be written through a nested `${…}`, since `${v:-1}` is the default form and `${v: -1}` is not
///   a number; an unparsable number leaves the value unchanged), `${v#p}`, `${v##p}`, `${v%p}`,
///   `${v%%p}` (Go glob patterns where `*` also matches `/`; `%` forms reverse both value and
///   pattern), `${v/p/r}`, `${v//p/r}`, `${v/#p/r}`, `${v/%p/r}` (**literal** patterns, not globs;
///   `/#` and `/%` with an empty replacement leave the value unchanged),
///   `${v=d}`, `${v:=d}`, `${v:-d}`, `${v:?d}`, `${v:+d}` (all five: `d` when the value is empty
///   or unset). Defaults and arguments may nest `${…}`.
/// - `${v-d}` and `${v+d}` do **not** parse: Flux reports `missing closing brace`.
/// - Nested references in arguments are evaluated even when their result is unused, so in strict
///   mode `${a:=${b}}` fails when `b` is unset even if `a` is set.
/// - Strict mode: an unset variable fails with `variable not set (strict mode): "<name>"` unless
///   its own operator is one of `=`, `:=`, `:-`, `:?`, `:+`. Non-strict: unset is empty.
/// - A NUL character ends the input (Go's scanner uses rune 0 as its end marker): the rest is
///   dropped, or a `${…}` left open is an error.
///
/// Known divergences: identifier characters beyond ASCII use Rust's `is_alphabetic`/`is_numeric`
/// instead of Go's `IsLetter`/`IsDigit` (such names can never be set, as supplied names must be
/// ASCII); case mapping uses Rust's Unicode tables (Go's are Unicode 15). Where Go would panic
/// (`${v:1:${neg}}` with a negative length) or emit invalid UTF-8 (byte offsets cutting a
/// character), this module returns an error instead.
pub fn substitute(input: &str, vars: &BTreeMap<String, String>, strict: bool) -> Result<String> {
    let root = parse(input)?;
    let mut out = Vec::with_capacity(input.len());
    let env = Env { vars, strict };
    for node in &root {
        eval(node, &env, &mut out)?;
    }
    String::from_utf8(out).map_err(|_| EnvsubstError::InvalidUtf8Output)
}

/// The controller's `varSubstitution` before YAML parsing: every key of `vars` must pass
/// [`valid_var_name`], then [`substitute`] runs.
///
/// # The whole controller pipeline (what the caller must do)
///
/// For each built resource, unless it has the label or annotation
/// `kustomize.toolkit.fluxcd.io/substitute: disabled` (exact, case-sensitive value):
/// 1. variables = [`prepare_vars`] over the substituteFrom data in list order, then the inline
///    `substitute` map (later layers win, every `\n` deleted from values);
/// 2. run only if [`should_substitute`] (some variable exists, or strategy `Always`);
/// 3. [`var_substitution`] on the resource's YAML text (name check, then [`substitute`]);
/// 4. parse the result as YAML again.
///
/// Flux wraps errors as `envsubst error: variable substitution failed: <cause>` for parse and
/// strict-mode errors, and `envsubst error: <cause>` for an invalid variable name.
///
///
pub fn var_substitution(
    input: &str,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<String> {
    validate_var_names(vars)?;
    substitute(input, vars, strict)
}

/// Checks every key against [`VAR_NAME_REGEX`]; the first invalid key (in sorted order; Go's is
/// random) is reported as [`EnvsubstError::InvalidVarName`].
pub fn validate_var_names(vars: &BTreeMap<String, String>) -> Result<()> {
    match vars.keys().find(|k| !valid_var_name(k)) {
        Some(name) => Err(EnvsubstError::InvalidVarName { name: name.clone() }),
        None => Ok(()),
    }
}

/// Whether `name` matches `^[_[:alpha:]][_[:alpha:][:digit:]]*$` as Go's RE2 reads it
/// (`[:alpha:]` and `[:digit:]` are ASCII only; `$` is end of text, so no trailing newline).
pub fn valid_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b == b'_' || b.is_ascii_alphabetic() => {}
        _ => return false,
    }
    bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// Merges variable layers as the controller does: `layers` in increasing precedence (the
/// substituteFrom ConfigMap/Secret data in list order, then the inline `substitute` map), later
/// keys overwriting earlier ones, and every `\n` deleted from every value (`\r` is kept).
pub fn prepare_vars<'a, I>(layers: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = &'a BTreeMap<String, String>>,
{
    let mut vars = BTreeMap::new();
    for layer in layers {
        for (k, v) in layer {
            vars.insert(k.clone(), v.replace('\n', ""));
        }
    }
    vars
}

/// Whether the controller runs substitution at all: some variable exists, or the strategy is
/// `Always`. When false the text is left untouched (`$$` stays, defaults are not expanded).
pub fn should_substitute(vars: &BTreeMap<String, String>, always: bool) -> bool {
    !vars.is_empty() || always
}

/// Every variable name referenced in `input`, deduplicated, in order of first appearance
/// (an operator's own variable before those nested in its arguments). Fails on parse errors.
pub fn referenced_vars(input: &str) -> Result<Vec<String>> {
    let root = parse(input)?;
    let mut names = Vec::new();
    collect_refs(&root, &mut |name, _| push_unique(&mut names, name));
    Ok(names)
}

/// The referenced variables that strict mode requires to be set: those referenced at least once
/// without a default operator (nested references inside defaults count, as Go evaluates them).
pub fn required_vars(input: &str) -> Result<Vec<String>> {
    let root = parse(input)?;
    let mut names = Vec::new();
    collect_refs(&root, &mut |name, op| {
        if !is_default_op(op) {
            push_unique(&mut names, name);
        }
    });
    Ok(names)
}

fn push_unique(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_owned());
    }
}

fn collect_refs(nodes: &[Node], f: &mut dyn FnMut(&str, &str)) {
    for node in nodes {
        if let Node::Func { param, name, args } = node {
            f(param, name);
            collect_refs(args, f);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parse tree

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// Literal bytes (escapes already removed).
    Text(Vec<u8>),
    /// `${param<name>args…}`; `name` is the operator ("" for a plain reference).
    Func {
        param: String,
        name: String,
        args: Vec<Node>,
    },
}

// ---------------------------------------------------------------------------------------------
// Go helpers

/// Go's `utf8.DecodeRune`: invalid or truncated input yields (U+FFFD, 1), empty (U+FFFD, 0).
fn decode_rune(b: &[u8]) -> (char, usize) {
    if b.is_empty() {
        return (char::REPLACEMENT_CHARACTER, 0);
    }
    for w in 1..=b.len().min(4) {
        if let Ok(s) = std::str::from_utf8(&b[..w])
            && let Some(c) = s.chars().next()
        {
            return (c, w);
        }
    }
    (char::REPLACEMENT_CHARACTER, 1)
}

/// Go's `[]rune(s)`: invalid bytes become U+FFFD.
fn runes(mut b: &[u8]) -> Vec<char> {
    let mut out = Vec::with_capacity(b.len());
    while !b.is_empty() {
        let (c, w) = decode_rune(b);
        out.push(c);
        b = &b[w..];
    }
    out
}

/// Go's `strconv.Atoi` on a 64-bit platform.
fn atoi(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Go's `unicode.ToUpper` (simple case mapping).
fn go_to_upper(c: char) -> char {
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        // Full mappings that expand; Go keeps the character unless a simple mapping exists.
        _ => match c as u32 {
            0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => {
                char::from_u32(c as u32 + 8).unwrap_or(c)
            }
            0x1FB3 => '\u{1FBC}',
            0x1FC3 => '\u{1FCC}',
            0x1FF3 => '\u{1FFC}',
            _ => c,
        },
    }
}

/// Go's `unicode.ToLower` (simple case mapping).
fn go_to_lower(c: char) -> char {
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(l), None) => l,
        _ if c == '\u{130}' => 'i',
        _ => c,
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Go's `strings.Replace(s, old, new, n)` (n < 0: all), including the empty-`old` case.
fn go_replace(s: &[u8], old: &[u8], new: &[u8], n: i64) -> Vec<u8> {
    if old == new || n == 0 {
        return s.to_vec();
    }
    let m = if old.is_empty() {
        runes(s).len() as i64 + 1
    } else {
        count(s, old) as i64
    };
    if m == 0 {
        return s.to_vec();
    }
    let n = if n < 0 || m < n { m } else { n };
    let mut out = Vec::with_capacity(s.len());
    let mut start = 0usize;
    for i in 0..n {
        let mut j = start;
        if old.is_empty() {
            if i > 0 {
                j += decode_rune(&s[start..]).1;
            }
        } else {
            j += find(&s[start..], old).unwrap_or(0);
        }
        out.extend_from_slice(&s[start..j]);
        out.extend_from_slice(new);
        start = j + old.len();
    }
    out.extend_from_slice(&s[start..]);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Non-overlapping occurrences of a non-empty `needle`.
fn count(mut hay: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    while let Some(i) = find(hay, needle) {
        n += 1;
        hay = &hay[i + needle.len()..];
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Scanner: a port of envsubst/parse/scan.go, including its in-place removal of escape characters.

/// Rune returned at the end of input; a real NUL character reads the same (as in Go).
const EOF: char = '\0';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Illegal,
    Eof,
    Ident,
    Lbrack,
    Rbrack,
}

const SCAN_IDENT: u8 = 1;
const SCAN_LBRACK: u8 = 1 << 1;
const SCAN_RBRACK: u8 = 1 << 2;
const SCAN_ESCAPE: u8 = 1 << 3;

const ESC_DOLLAR: u8 = 1;
const ESC_BACKSLASH: u8 = 1 << 1;
const ESC_ALL: u8 = ESC_DOLLAR | ESC_BACKSLASH;

type Accept = fn(char, usize) -> bool;

struct Scanner {
    buf: Vec<u8>,
    pos: usize,
    start: usize,
    width: usize,
    mode: u8,
    escape_chars: u8,
    accept: Accept,
}

impl Scanner {
    fn new(input: &str) -> Self {
        Scanner {
            buf: input.as_bytes().to_vec(),
            pos: 0,
            start: 0,
            width: 0,
            mode: 0,
            escape_chars: 0,
            accept: accept_rune,
        }
    }

    fn read(&mut self) -> char {
        if self.pos >= self.buf.len() {
            self.width = 0;
            return EOF;
        }
        let (r, w) = decode_rune(&self.buf[self.pos..]);
        self.width = w;
        self.pos += w;
        r
    }

    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(self.width);
    }

    /// Removes the byte just read (always a one-byte `$` or `\`) without moving `pos`, so the
    /// escaped character that follows is taken as already consumed.
    fn skip(&mut self) {
        if self.pos > 0 && self.pos <= self.buf.len() {
            self.buf.remove(self.pos - 1);
        }
    }

    fn peek(&mut self) -> char {
        let r = self.read();
        self.unread();
        r
    }

    fn string(&self) -> Vec<u8> {
        let end = self.pos.min(self.buf.len());
        self.buf[self.start.min(end)..end].to_vec()
    }

    fn accepts(&self, r: char) -> bool {
        (self.accept)(r, self.pos.saturating_sub(self.start))
    }

    fn scan(&mut self) -> Token {
        self.start = self.pos;
        let r = self.read();
        if r == EOF {
            Token::Eof
        } else if self.scan_lbrack(r) {
            Token::Lbrack
        } else if self.scan_rbrack(r) {
            Token::Rbrack
        } else if self.scan_ident(r) {
            Token::Ident
        } else {
            Token::Illegal
        }
    }

    fn scan_ident(&mut self, r: char) -> bool {
        if self.mode & SCAN_IDENT == 0 {
            return false;
        }
        if self.scan_escaped(r) {
            self.skip();
        } else if !self.accepts(r) {
            return false;
        }
        loop {
            let r = self.read();
            if r == EOF {
                self.unread();
                break;
            }
            if self.scan_lbrack(r) {
                self.unread();
                self.unread();
                break;
            }
            if self.scan_escaped(r) {
                self.skip();
                continue;
            }
            if !self.accepts(r) {
                self.unread();
                break;
            }
        }
        true
    }

    fn scan_lbrack(&mut self, r: char) -> bool {
        if self.mode & SCAN_LBRACK == 0 {
            return false;
        }
        if r == '$' {
            if self.read() == '{' {
                return true;
            }
            self.unread();
        }
        false
    }

    fn scan_rbrack(&self, r: char) -> bool {
        self.mode & SCAN_RBRACK != 0 && r == '}'
    }

    fn scan_escaped(&mut self, r: char) -> bool {
        if self.mode & SCAN_ESCAPE == 0 {
            return false;
        }
        if r == '$' && self.escape_chars & ESC_DOLLAR != 0 && self.peek() == '$' {
            return true;
        }
        if r == '\\' && self.escape_chars & ESC_BACKSLASH != 0 {
            return matches!(self.peek(), '/' | '\\');
        }
        false
    }
}

fn accept_rune(_: char, _: usize) -> bool {
    true
}
fn accept_ident(r: char, _: usize) -> bool {
    r == '_' || r.is_alphabetic() || r.is_numeric()
}
fn accept_colon(r: char, _: usize) -> bool {
    r == ':'
}
fn accept_one_hash(r: char, i: usize) -> bool {
    r == '#' && i == 1
}
fn accept_not_closing(r: char, _: usize) -> bool {
    r != '}'
}
fn accept_hash_func(r: char, i: usize) -> bool {
    r == '#' && i < 3
}
fn accept_percent_func(r: char, i: usize) -> bool {
    r == '%' && i < 3
}
fn accept_default_func(r: char, i: usize) -> bool {
    (i == 1 && r == ':') || (i == 2 && matches!(r, '=' | '-' | '?' | '+'))
}
fn accept_replace_func(r: char, i: usize) -> bool {
    (i == 1 && r == '/') || (i == 2 && matches!(r, '/' | '#' | '%'))
}
fn accept_one_equal(r: char, i: usize) -> bool {
    i == 1 && r == '='
}
fn accept_one_colon(r: char, i: usize) -> bool {
    i == 1 && r == ':'
}
fn reject_colon_close(r: char, _: usize) -> bool {
    r != ':' && r != '}'
}
fn accept_slash(r: char, _: usize) -> bool {
    r == '/'
}
fn accept_not_slash(r: char, _: usize) -> bool {
    r != '/'
}
fn accept_casing_func(r: char, i: usize) -> bool {
    (r == ',' || r == '^') && i < 3
}

// ---------------------------------------------------------------------------------------------
// Parser: a port of envsubst/parse/parse.go.

fn parse(input: &str) -> Result<Vec<Node>> {
    Parser {
        s: Scanner::new(input),
    }
    .parse_any()
}

struct Parser {
    s: Scanner,
}

fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl Parser {
    /// Go's recursive `parseAny`, as a loop.
    fn parse_any(&mut self) -> Result<Vec<Node>> {
        let mut nodes = Vec::new();
        loop {
            self.s.accept = accept_rune;
            self.s.mode = SCAN_IDENT | SCAN_LBRACK | SCAN_ESCAPE;
            self.s.escape_chars = ESC_DOLLAR;
            match self.s.scan() {
                Token::Ident => nodes.push(Node::Text(self.s.string())),
                Token::Eof => return Ok(nodes),
                Token::Lbrack => nodes.push(self.parse_func()?),
                _ => return Err(EnvsubstError::BadSubstitution),
            }
        }
    }

    fn parse_func(&mut self) -> Result<Node> {
        self.s.escape_chars = ESC_ALL;
        if self.s.peek() == '#' {
            return self.parse_len_func();
        }
        self.s.accept = accept_ident;
        self.s.mode = SCAN_IDENT;
        let name = match self.s.scan() {
            Token::Ident => lossy(self.s.string()),
            _ => return Err(EnvsubstError::ParseVariableName),
        };
        match self.s.peek() {
            ':' => return self.parse_default_or_substr(name),
            '=' => return self.parse_default_func(name),
            ',' | '^' => return self.parse_casing_func(name),
            '/' => return self.parse_replace_func(name),
            '#' => return self.parse_remove_func(name, accept_hash_func),
            '%' => return self.parse_remove_func(name, accept_percent_func),
            _ => {}
        }
        self.s.accept = accept_ident;
        self.s.mode = SCAN_RBRACK;
        match self.s.scan() {
            Token::Rbrack => Ok(Node::Func {
                param: name,
                name: String::new(),
                args: Vec::new(),
            }),
            _ => Err(EnvsubstError::MissingClosingBrace),
        }
    }

    fn parse_param(&mut self, accept: Accept, mode: u8) -> Result<Node> {
        self.s.accept = accept;
        self.s.mode = mode | SCAN_LBRACK;
        match self.s.scan() {
            Token::Lbrack => self.parse_func(),
            Token::Ident | Token::Rbrack => Ok(Node::Text(self.s.string())),
            _ => Err(EnvsubstError::ParseFuncSubstitution),
        }
    }

    /// Scans an operator token with `accept`; `err` if there is none.
    fn scan_op(&mut self, accept: Accept, err: EnvsubstError) -> Result<String> {
        self.s.accept = accept;
        self.s.mode = SCAN_IDENT;
        match self.s.scan() {
            Token::Ident => Ok(lossy(self.s.string())),
            _ => Err(err),
        }
    }

    fn parse_default_or_substr(&mut self, name: String) -> Result<Node> {
        // Go reads ':', peeks, then unreads by the width of the *peeked* rune; kept as is.
        self.s.read();
        let r = self.s.peek();
        self.s.unread();
        match r {
            '=' | '-' | '?' | '+' => self.parse_default_func(name),
            _ => self.parse_substr_func(name),
        }
    }

    fn parse_substr_func(&mut self, param: String) -> Result<Node> {
        let name = self.scan_op(accept_one_colon, EnvsubstError::BadSubstitution)?;
        let mut args = vec![self.parse_param(reject_colon_close, SCAN_IDENT)?];
        self.s.accept = accept_colon;
        self.s.mode = SCAN_IDENT | SCAN_RBRACK;
        match self.s.scan() {
            Token::Rbrack => return Ok(Node::Func { param, name, args }),
            Token::Ident => {}
            _ => return Err(EnvsubstError::BadSubstitution),
        }
        args.push(self.parse_param(accept_not_closing, SCAN_IDENT)?);
        self.consume_rbrack()?;
        Ok(Node::Func { param, name, args })
    }

    fn parse_remove_func(&mut self, param: String, accept: Accept) -> Result<Node> {
        let name = self.scan_op(accept, EnvsubstError::BadSubstitution)?;
        let args = vec![self.parse_param(accept_not_closing, SCAN_IDENT)?];
        self.consume_rbrack()?;
        Ok(Node::Func { param, name, args })
    }

    fn parse_replace_func(&mut self, param: String) -> Result<Node> {
        let name = self.scan_op(accept_replace_func, EnvsubstError::BadSubstitution)?;
        let mut args = vec![self.parse_param(accept_not_slash, SCAN_IDENT | SCAN_ESCAPE)?];
        self.scan_op(accept_slash, EnvsubstError::BadSubstitution)?;
        if self.s.peek() != '}' {
            args.push(self.parse_param(accept_not_closing, SCAN_IDENT | SCAN_ESCAPE)?);
        }
        self.consume_rbrack()?;
        Ok(Node::Func { param, name, args })
    }

    fn parse_default_func(&mut self, param: String) -> Result<Node> {
        let accept: Accept = if self.s.peek() == '=' {
            accept_one_equal
        } else {
            accept_default_func
        };
        let name = self.scan_op(accept, EnvsubstError::ParseDefaultFunction)?;
        let mut args = Vec::new();
        while self.s.peek() != '}' {
            args.push(self.parse_param(accept_not_closing, SCAN_IDENT)?);
        }
        self.consume_rbrack()?;
        Ok(Node::Func { param, name, args })
    }

    fn parse_casing_func(&mut self, param: String) -> Result<Node> {
        let name = self.scan_op(accept_casing_func, EnvsubstError::BadSubstitution)?;
        self.consume_rbrack()?;
        Ok(Node::Func {
            param,
            name,
            args: Vec::new(),
        })
    }

    fn parse_len_func(&mut self) -> Result<Node> {
        let name = self.scan_op(accept_one_hash, EnvsubstError::BadSubstitution)?;
        let param = self.scan_op(accept_ident, EnvsubstError::BadSubstitution)?;
        self.consume_rbrack()?;
        Ok(Node::Func {
            param,
            name,
            args: Vec::new(),
        })
    }

    fn consume_rbrack(&mut self) -> Result<()> {
        self.s.mode = SCAN_RBRACK;
        if self.s.scan() == Token::Rbrack {
            Ok(())
        } else {
            Err(EnvsubstError::BadSubstitution)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation: a port of envsubst/template.go and funcs.go.

fn is_default_op(name: &str) -> bool {
    matches!(name, "-" | "+" | "=" | "?" | ":-" | ":+" | ":=" | ":?")
}

/// The controller's mapper: strict reports unset variables, non-strict reads them as empty.
struct Env<'a> {
    vars: &'a BTreeMap<String, String>,
    strict: bool,
}

impl Env<'_> {
    /// (value, exists) as Go's mapper returns them.
    fn lookup(&self, name: &str) -> (&str, bool) {
        match self.vars.get(name) {
            Some(v) => (v.as_str(), true),
            None => ("", !self.strict),
        }
    }
}

fn eval(node: &Node, env: &Env<'_>, out: &mut Vec<u8>) -> Result<()> {
    let (param, name, arg_nodes) = match node {
        Node::Text(t) => {
            out.extend_from_slice(t);
            return Ok(());
        }
        Node::Func { param, name, args } => (param, name, args),
    };
    let mut args = Vec::with_capacity(arg_nodes.len());
    for n in arg_nodes {
        let mut buf = Vec::new();
        eval(n, env, &mut buf)?;
        args.push(buf);
    }
    let (v, exists) = env.lookup(param);
    if !exists && !is_default_op(name) {
        return Err(EnvsubstError::VariableNotSet {
            name: param.clone(),
        });
    }
    let res = match (name.as_str(), args.len()) {
        (",", _) => map_first(v, go_to_lower),
        (",,", _) => v.chars().map(go_to_lower).collect::<String>().into_bytes(),
        ("^", _) => map_first(v, go_to_upper),
        ("^^", _) => v.chars().map(go_to_upper).collect::<String>().into_bytes(),
        ("#", 0) => v.len().to_string().into_bytes(),
        ("#", _) => trim_shortest(v.as_bytes(), &args[0]),
        ("##", _) => trim_longest(v.as_bytes(), &args[0]),
        ("%", _) => trim_suffix(v, &args[0], trim_shortest),
        ("%%", _) => trim_suffix(v, &args[0], trim_longest),
        (":", _) => to_substr(param, v.as_bytes(), &args)?,
        ("/#", 2) if v.as_bytes().starts_with(&args[0]) => {
            go_replace(v.as_bytes(), &args[0], &args[1], 1)
        }
        ("/%", 2) if v.as_bytes().ends_with(&args[0]) => {
            let mut s = v.as_bytes()[..v.len() - args[0].len()].to_vec();
            s.extend_from_slice(&args[1]);
            s
        }
        ("/#" | "/%", _) => v.as_bytes().to_vec(),
        ("/" | "//", 0) => v.as_bytes().to_vec(),
        ("/" | "//", n) => {
            let count = if name == "/" { 1 } else { -1 };
            let new: &[u8] = if n == 1 { b"" } else { &args[1] };
            go_replace(v.as_bytes(), &args[0], new, count)
        }
        // toDefault, also the fallback for unknown operators such as `^,`.
        _ if v.is_empty() && !args.is_empty() => args.concat(),
        _ => v.as_bytes().to_vec(),
    };
    out.extend_from_slice(&res);
    Ok(())
}

fn map_first(v: &str, f: fn(char) -> char) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut chars = v.chars();
    if let Some(c) = chars.next() {
        push_char(&mut out, f(c));
    }
    out.extend_from_slice(chars.as_str().as_bytes());
    out
}

fn to_substr(param: &str, s: &[u8], args: &[Vec<u8>]) -> Result<Vec<u8>> {
    let Some(first) = args.first() else {
        return Ok(s.to_vec());
    };
    let Some(mut pos) = atoi(first) else {
        return Ok(s.to_vec());
    };
    let len = s.len() as i64;
    if pos < 0 {
        pos = (len + pos).max(0);
    }
    let tail = |pos: i64| -> Vec<u8> {
        if pos < len {
            s[pos as usize..].to_vec()
        } else {
            Vec::new()
        }
    };
    let Some(second) = args.get(1) else {
        return Ok(tail(pos));
    };
    let Some(length) = atoi(second) else {
        return Ok(s.to_vec());
    };
    let end = pos.wrapping_add(length);
    if end >= len {
        return Ok(tail(pos));
    }
    if end < pos {
        return Err(EnvsubstError::SubstringOutOfRange {
            name: param.to_owned(),
            start: pos,
            end,
        });
    }
    Ok(s[pos as usize..end as usize].to_vec())
}

/// `%`/`%%`: Go reverses value and pattern (by runes), trims the prefix, reverses back.
fn trim_suffix(v: &str, pat: &[u8], trim: fn(&[u8], &[u8]) -> Vec<u8>) -> Vec<u8> {
    let rev = |b: &[u8]| -> Vec<u8> { runes(b).into_iter().rev().collect::<String>().into_bytes() };
    rev(&trim(&rev(v.as_bytes()), &rev(pat)))
}

fn trim_shortest(s: &[u8], pat: &[u8]) -> Vec<u8> {
    let mut shortest = 0;
    for i in 0..s.len() {
        match glob_match(pat, &s[..s.len() - i]) {
            Err(()) => return s.to_vec(),
            Ok(true) => shortest = s.len() - i,
            Ok(false) => {}
        }
    }
    s[shortest..].to_vec()
}

fn trim_longest(s: &[u8], pat: &[u8]) -> Vec<u8> {
    for i in 0..s.len() {
        match glob_match(pat, &s[..s.len() - i]) {
            Err(()) => return s.to_vec(),
            Ok(true) => return s[s.len() - i..].to_vec(),
            Ok(false) => {}
        }
    }
    s.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Glob: a port of envsubst/path/match.go (Go's path.Match, except `*` also matches `/`).

/// Whether `name` matches all of `pattern`; `Err` for a malformed pattern.
fn glob_match(mut pattern: &[u8], mut name: &[u8]) -> std::result::Result<bool, ()> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(true);
        }
        let (t, ok) = match_chunk(chunk, name)?;
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            for i in 0..name.len() {
                let (t, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    let mut p = pattern;
    while let [b'*', rest @ ..] = p {
        p = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' if i + 1 < p.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &p[..i], &p[i..])
}

/// Matches `chunk` against the start of `s`: Ok((rest, matched)), Err on a bad pattern.
/// Like the Go original, a bad pattern after `s` is exhausted is not reported.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> std::result::Result<(&'a [u8], bool), ()> {
    const NO: (&[u8], bool) = (b"", false);
    while let Some(&c) = chunk.first() {
        if s.is_empty() {
            return Ok(NO);
        }
        match c {
            b'[' => {
                let (r, n) = decode_rune(s);
                s = &s[n..];
                chunk = &chunk[1..];
                let mut negated = false;
                if let [b'^', rest @ ..] = chunk {
                    negated = true;
                    chunk = rest;
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if let [b']', rest @ ..] = chunk
                        && nrange > 0
                    {
                        chunk = rest;
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let [b'-', rest @ ..] = chunk {
                        let (h, rest) = get_esc(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    return Ok(NO);
                }
            }
            b'?' => {
                s = &s[decode_rune(s).1..];
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(());
                    }
                }
                if chunk[0] != s[0] {
                    return Ok(NO);
                }
                s = &s[1..];
                chunk = &chunk[1..];
            }
        }
    }
    Ok((s, true))
}

/// A possibly escaped character of a character class; Err if malformed or last in the chunk.
fn get_esc(chunk: &[u8]) -> std::result::Result<(char, &[u8]), ()> {
    let mut chunk = match chunk {
        [] | [b'-' | b']', ..] => return Err(()),
        [b'\\', rest @ ..] => rest,
        _ => chunk,
    };
    if chunk.is_empty() {
        return Err(());
    }
    let (r, n) = decode_rune(chunk);
    if r == char::REPLACEMENT_CHARACTER && n == 1 {
        return Err(());
    }
    chunk = &chunk[n..];
    if chunk.is_empty() {
        return Err(());
    }
    Ok((r, chunk))
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sub(input: &str, pairs: &[(&str, &str)]) -> String {
        substitute(input, &vars(pairs), false).unwrap()
    }

    fn err(input: &str, pairs: &[(&str, &str)]) -> EnvsubstError {
        substitute(input, &vars(pairs), false).unwrap_err()
    }

    fn strict(input: &str, pairs: &[(&str, &str)]) -> std::result::Result<String, EnvsubstError> {
        substitute(input, &vars(pairs), true)
    }

    fn not_set(name: &str) -> EnvsubstError {
        EnvsubstError::VariableNotSet {
            name: name.to_string(),
        }
    }

    /// TestExpand from fluxcd/pkg envsubst/eval_test.go (non-strict mapper).
    #[test]
    fn flux_eval_test_expand() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (&[], "abcdEFGH28ij", "abcdEFGH28ij"),
            (&[("var01", "abcdEFGH28ij")], "${#var01}", "12"),
            (&[("var01", "abcdEFGH28ij")], "${var01^}", "AbcdEFGH28ij"),
            (&[("var01", "abcdEFGH28ij")], "${var01^^}", "ABCDEFGH28IJ"),
            (&[("var01", "ABCDEFGH28IJ")], "${var01,}", "aBCDEFGH28IJ"),
            (&[("var01", "ABCDEFGH28IJ")], "${var01,,}", "abcdefgh28ij"),
            (
                &[("path_name", "/home/bozo/ideas/thoughts.for.today")],
                "${path_name:11}",
                "ideas/thoughts.for.today",
            ),
            (
                &[("path_name", "/home/bozo/ideas/thoughts.for.today")],
                "${path_name:11:5}",
                "ideas",
            ),
            (&[("var", "abc")], "${var=xyz}", "abc"),
            (&[], "${var=xyz}", "xyz"),
            (
                &[("default_var", "foo")],
                "something ${var=${default_var}}",
                "something foo",
            ),
            (
                &[("default_var", "foo1")],
                "foo: ${var=${default_var}-suffix}",
                "foo: foo1-suffix",
            ),
            (
                &[("default_var", "foo1")],
                "foo: ${var=prefix${default_var}-suffix}",
                "foo: prefixfoo1-suffix",
            ),
            (&[], "${var:=xyz}", "xyz"),
            (
                &[("stringZ", "abcABC123ABCabc")],
                "${stringZ/%abc/XYZ}",
                "abcABC123ABCXYZ",
            ),
            (
                &[("stringZ", "abcABC123ABCabc")],
                "${stringZ/#abc/XYZ}",
                "XYZABC123ABCabc",
            ),
            (
                &[("stringZ", "abcABC123ABCabc")],
                "${stringZ//abc/xyz}",
                "xyzABC123ABCxyz",
            ),
            (
                &[("stringZ", "abcABC123ABCabc")],
                "${stringZ/abc/xyz}",
                "xyzABC123ABCabc",
            ),
            (
                &[("filename", "bash.string.txt")],
                "${filename#*.}",
                "string.txt",
            ),
            (&[("filename", "path/to/file")], "${filename#*/}", "to/file"),
            (
                &[("filename", "/path/to/file")],
                "${filename#*/}",
                "path/to/file",
            ),
            (&[("filename", "bash.string.txt")], "${filename##*.}", "txt"),
            (&[("filename", "path/to/file")], "${filename##*/}", "file"),
            (&[("filename", "/path/to/file")], "${filename##*/}", "file"),
            (
                &[("filename", "bash.string.txt")],
                "${filename%.*}",
                "bash.string",
            ),
            (
                &[("filename", "bash.string.txt")],
                "${filename%%.*}",
                "bash",
            ),
            (
                &[("var01", "abcdEFGH28ij")],
                "${var=${var01^^}}",
                "ABCDEFGH28IJ",
            ),
            (&[("var01", "abcdEFGH28ij")], "$${var01}", "${var01}"),
            (
                &[("var01", "abcdEFGH28ij")],
                "some text ${var01}$${var$${var01}$var01${var01}",
                "some text abcdEFGH28ij${var${var01}$var01abcdEFGH28ij",
            ),
            (
                &[("default_var", "foo")],
                "something $${var=${default_var}}",
                "something ${var=foo}",
            ),
            (&[("stringZ", "foo/bar")], r"${stringZ/\//-}", "foo-bar"),
            (
                &[("stringZ", "foo/bar/baz")],
                r"${stringZ//\//-}",
                "foo-bar-baz",
            ),
            (
                &[("default_var", "foo")],
                r"\\something ${var=${default_var}}",
                r"\\something foo",
            ),
            (&[("stringZ", "foo.bar")], "${stringZ/./}", "foobar"),
        ];
        for (pairs, input, want) in cases {
            assert_eq!(sub(input, pairs), *want, "input {input:?}");
        }
    }

    /// TestExpandStrict from fluxcd/pkg envsubst/eval_test.go.
    #[test]
    fn flux_eval_test_expand_strict() {
        assert_eq!(strict("abcdEFGH28ij", &[]).unwrap(), "abcdEFGH28ij");
        assert_eq!(strict("${foo}", &[("foo", "bar")]).unwrap(), "bar");
        assert_eq!(strict("${foo}", &[("foo", "")]).unwrap(), "");
        assert_eq!(strict("${missing}", &[]).unwrap_err(), not_set("missing"));
        assert_eq!(
            strict("${missing:=default}", &[("foo", "bar")]).unwrap(),
            "default"
        );
        for input in [
            "${#missing}",
            "${missing^}",
            "${missing^^}",
            "${missing,}",
            "${missing,,}",
            "${missing:0}",
            "${missing:0:10}",
            "${missing/pattern/replacement}",
            "${missing//pattern/replacement}",
            "${missing/#pattern/replacement}",
            "${missing/%pattern/replacement}",
            "${missing#pattern}",
            "${missing##pattern}",
            "${missing%pattern}",
            "${missing%%pattern}",
        ] {
            assert_eq!(
                strict(input, &[]).unwrap_err(),
                not_set("missing"),
                "{input}"
            );
        }
        assert_eq!(strict("${missing:-fallback}", &[]).unwrap(), "fallback");
        assert_eq!(strict("${missing:=assigned}", &[]).unwrap(), "assigned");
        assert_eq!(strict("${missing=assigned}", &[]).unwrap(), "assigned");
        assert_eq!(strict("${missing:?x}", &[]).unwrap(), "x");
        assert_eq!(strict("${missing:+x}", &[]).unwrap(), "x");
        assert_eq!(strict("${missing:=}", &[]).unwrap(), "");
    }

    #[test]
    fn strict_error_message() {
        assert_eq!(
            strict("a: ${cluster_name}", &[]).unwrap_err().to_string(),
            r#"variable not set (strict mode): "cluster_name""#
        );
    }

    #[test]
    fn strict_evaluates_nested_defaults_eagerly() {
        assert_eq!(
            strict("${a:=${b}}", &[("a", "x")]).unwrap_err(),
            not_set("b")
        );
        assert_eq!(strict("${a:=${b:=y}}", &[("a", "x")]).unwrap(), "x");
        assert_eq!(strict("${a:=${b:=y}}", &[]).unwrap(), "y");
    }

    /// Parse cases from fluxcd/pkg envsubst/parse/parse_test.go, checked through the tree.
    #[test]
    fn flux_parse_test_trees() {
        let text = |s: &str| Node::Text(s.as_bytes().to_vec());
        let func = |p: &str, n: &str, args: Vec<Node>| Node::Func {
            param: p.into(),
            name: n.into(),
            args,
        };
        let cases: Vec<(&str, Vec<Node>)> = vec![
            ("text", vec![text("text")]),
            ("}text", vec![text("}text")]),
            ("http://github.com", vec![text("http://github.com")]),
            ("$${string}", vec![text("${string}")]),
            ("$$string", vec![text("$string")]),
            (r"\\.\pipe\pipename", vec![text(r"\\.\pipe\pipename")]),
            ("${string}", vec![func("string", "", vec![])]),
            ("${string,}", vec![func("string", ",", vec![])]),
            ("${string^^}", vec![func("string", "^^", vec![])]),
            (
                "${string:position:length}",
                vec![func("string", ":", vec![text("position"), text("length")])],
            ),
            (
                "${string##substring}",
                vec![func("string", "##", vec![text("substring")])],
            ),
            (
                "${string/%substring/replacement}",
                vec![func(
                    "string",
                    "/%",
                    vec![text("substring"), text("replacement")],
                )],
            ),
            (
                "${string:?default}",
                vec![func("string", ":?", vec![text("default")])],
            ),
            (
                "${string:+default}",
                vec![func("string", ":+", vec![text("default")])],
            ),
            ("${#string}", vec![func("string", "#", vec![])]),
            (
                "${string#$%:*{}",
                vec![func("string", "#", vec![text("$%:*{")])],
            ),
            (
                r"\\ hello ${#string} world \\",
                vec![
                    text(r"\\ hello "),
                    func("string", "#", vec![]),
                    text(r" world \\"),
                ],
            ),
            (
                r"${string/\/position\\/length}",
                vec![func(
                    "string",
                    "/",
                    vec![text("/position\\"), text("length")],
                )],
            ),
            (
                r"${string/position/\/leng\\th}",
                vec![func(
                    "string",
                    "/",
                    vec![text("position"), text("/leng\\th")],
                )],
            ),
            (
                "${string:${stringy:position:length}:${stringz,,}}",
                vec![func(
                    "string",
                    ":",
                    vec![
                        func("stringy", ":", vec![text("position"), text("length")]),
                        func("stringz", ",,", vec![]),
                    ],
                )],
            ),
            (
                "${string=prefix${var} suffix}",
                vec![func(
                    "string",
                    "=",
                    vec![text("prefix"), func("var", "", vec![]), text(" suffix")],
                )],
            ),
            (
                "${string//${stringy}/${stringz}}",
                vec![func(
                    "string",
                    "//",
                    vec![func("stringy", "", vec![]), func("stringz", "", vec![])],
                )],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).unwrap(), want, "input {input:?}");
        }
    }

    /// funcs_test.go: substring cases.
    #[test]
    fn flux_funcs_test_substr() {
        let s = "123456789123456789";
        let sub = |args: &[&str]| {
            let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
            String::from_utf8(to_substr("v", s.as_bytes(), &args).unwrap()).unwrap()
        };
        assert_eq!(sub(&["0", "8"]), "12345678");
        assert_eq!(sub(&["1", "8"]), "23456789");
        assert_eq!(sub(&["9"]), "123456789");
        assert_eq!(sub(&["9", "50"]), "123456789");
        assert_eq!(sub(&["-3", "2"]), "78");
        assert_eq!(sub(&["-300", "3"]), "123");
        assert_eq!(sub(&["x"]), s);
        assert_eq!(sub(&["1", "x"]), s);
        assert_eq!(sub(&["+2", "+1"]), "3");
        assert_eq!(sub(&["99"]), "");
        assert_eq!(sub(&["99", "1"]), "");
    }

    #[test]
    fn substring_offsets() {
        let v = &[("v", "abcdef"), ("neg", "-2"), ("one", "1")];
        assert_eq!(sub("${v:2}", v), "cdef");
        assert_eq!(sub("${v:2:2}", v), "cd");
        assert_eq!(sub("${v:${neg}}", v), "ef");
        assert_eq!(sub("${v:${one}:${one}}", v), "b");
        // `${v:-2}` is the default operator; `${v: -2}` is not a number.
        assert_eq!(sub("${v:-2}", v), "abcdef");
        assert_eq!(sub("${v: -2}", v), "abcdef");
        assert_eq!(sub("${v:(-2)}", v), "abcdef");
        assert_eq!(sub("${v:1:0}", v), "");
        assert!(matches!(
            err("${v:3:${neg}}", v),
            EnvsubstError::SubstringOutOfRange {
                start: 3,
                end: 1,
                ..
            }
        ));
        assert_eq!(err("${v:}", v), EnvsubstError::ParseFuncSubstitution);
        assert_eq!(sub("${v:1x:2}", v), "abcdef"); // "1x" does not parse: value unchanged
        assert_eq!(sub("${v:1::2}", v), "bc"); // any run of colons delimits
        assert_eq!(err("${v:${one}x}", v), EnvsubstError::BadSubstitution);
        // Go unreads by the width of the peeked rune: a multi-byte rune after ':' breaks parsing.
        assert_eq!(err("${v:é}", v), EnvsubstError::BadSubstitution);
    }

    #[test]
    fn byte_semantics() {
        let v = &[("v", "héllo")];
        assert_eq!(sub("${#v}", v), "6");
        assert_eq!(sub("${v:3}", v), "llo");
        assert_eq!(err("${v:2}", v), EnvsubstError::InvalidUtf8Output);
    }

    #[test]
    fn casing() {
        let v = &[("v", "éclair ß İx ᾳ")];
        assert_eq!(sub("${v^}", v), "Éclair ß İx ᾳ");
        assert_eq!(sub("${v^^}", v), "ÉCLAIR ß İX ᾼ");
        assert_eq!(sub("${v,,}", v), "éclair ß ix ᾳ");
        assert_eq!(sub("${e^}${e,}", &[("e", "")]), "");
        // Unknown combination falls back to toDefault: the value unchanged.
        assert_eq!(sub("${v^,}", &[("v", "aB")]), "aB");
        assert_eq!(
            err("${v^^^}", &[("v", "a")]),
            EnvsubstError::BadSubstitution
        );
    }

    #[test]
    fn defaults_all_forms() {
        for op in ["=", ":=", ":-", ":?", ":+"] {
            let input = format!("${{v{op}d}}");
            assert_eq!(sub(&input, &[]), "d", "{input}");
            assert_eq!(sub(&input, &[("v", "")]), "d", "{input}");
            assert_eq!(sub(&input, &[("v", "x")]), "x", "{input}");
        }
        assert_eq!(sub("${v:=}", &[]), "");
        assert_eq!(sub("${v:=a:b=c d}", &[]), "a:b=c d");
        assert_eq!(sub("${v==x}", &[]), "=x");
        // No escapes in default values.
        assert_eq!(sub("${v:=$$}", &[]), "$$");
        assert_eq!(sub(r"${v:=a\/b}", &[]), r"a\/b");
        assert_eq!(sub("${v:=$${b}}", &[("b", "B")]), "$B");
        assert_eq!(err("${v:=x", &[]), EnvsubstError::ParseFuncSubstitution);
    }

    #[test]
    fn bash_only_forms_do_not_parse() {
        assert_eq!(err("${v-d}", &[]), EnvsubstError::MissingClosingBrace);
        assert_eq!(err("${v+d}", &[]), EnvsubstError::MissingClosingBrace);
        assert_eq!(err("${v?d}", &[]), EnvsubstError::MissingClosingBrace);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(err("${}", &[]), EnvsubstError::ParseVariableName);
        assert_eq!(err("${", &[]), EnvsubstError::ParseVariableName);
        assert_eq!(err("a ${ v}", &[]), EnvsubstError::ParseVariableName);
        assert_eq!(err("${-v}", &[]), EnvsubstError::ParseVariableName);
        assert_eq!(err("${v", &[]), EnvsubstError::MissingClosingBrace);
        assert_eq!(err("${v w}", &[]), EnvsubstError::MissingClosingBrace);
        assert_eq!(err("${v.w}", &[]), EnvsubstError::MissingClosingBrace);
        assert_eq!(err("${#}", &[]), EnvsubstError::BadSubstitution);
        assert_eq!(err("${#v:1}", &[]), EnvsubstError::BadSubstitution);
        assert_eq!(err("${v#}", &[]), EnvsubstError::ParseFuncSubstitution);
        assert_eq!(err("${v/a}", &[]), EnvsubstError::BadSubstitution);
        assert_eq!(err("${v///x}", &[]), EnvsubstError::ParseFuncSubstitution);
    }

    #[test]
    fn error_strings() {
        assert_eq!(
            EnvsubstError::BadSubstitution.to_string(),
            "bad substitution"
        );
        assert_eq!(
            EnvsubstError::MissingClosingBrace.to_string(),
            "missing closing brace"
        );
        assert_eq!(
            EnvsubstError::ParseVariableName.to_string(),
            "unable to parse variable name"
        );
        assert_eq!(
            EnvsubstError::InvalidVarName { name: "a-b".into() }.to_string(),
            "'a-b' var name is invalid, must match '^[_[:alpha:]][_[:alpha:][:digit:]]*$'"
        );
    }

    #[test]
    fn dollar_handling() {
        assert_eq!(sub("$v ${v}", &[("v", "x")]), "$v x");
        assert_eq!(sub("$", &[]), "$");
        assert_eq!(sub("a$", &[]), "a$");
        assert_eq!(sub("$$$", &[]), "$$");
        assert_eq!(sub("$$$$", &[]), "$$");
        assert_eq!(sub("$$${v}", &[("v", "x")]), "$x");
        assert_eq!(sub("${v}${v}", &[("v", "x")]), "xx");
        assert_eq!(sub("{v} $ {v}", &[("v", "x")]), "{v} $ {v}");
        assert_eq!(sub("price: $5", &[]), "price: $5");
        assert_eq!(sub(r"a\${v}", &[("v", "x")]), r"a\x");
        assert_eq!(sub("é${v}ü", &[("v", "x")]), "éxü");
        assert_eq!(sub("", &[]), "");
    }

    #[test]
    fn nul_ends_input() {
        assert_eq!(sub("ab\0cd ${v}", &[("v", "x")]), "ab");
        assert_eq!(err("${v\0}", &[]), EnvsubstError::MissingClosingBrace);
    }

    #[test]
    fn non_strict_unset_is_empty() {
        assert_eq!(sub("a${x}b${#x}", &[]), "ab0");
        assert_eq!(sub("${x/a/b}", &[]), "");
    }

    #[test]
    fn replace_forms() {
        let v = &[("v", "a.b.c"), ("e", "")];
        assert_eq!(sub("${v/./-}", v), "a-b.c");
        assert_eq!(sub("${v//./-}", v), "a-b-c");
        // Without the second '/', the pattern runs past '}' to the end: no delimiter.
        assert_eq!(err("${v//.}", v), EnvsubstError::BadSubstitution);
        assert_eq!(err("${v/.} ${v}", v), EnvsubstError::BadSubstitution);
    }

    #[test]
    fn replace_details() {
        let v = &[("v", "a.b.c"), ("e", ""), ("s", "a*b")];
        // Patterns are literal, not globs.
        assert_eq!(sub("${s/*/x}", v), "axb");
        assert_eq!(sub("${v/*/x}", v), "a.b.c");
        // Blank replacement removes; for /# and /% it leaves the value unchanged.
        assert_eq!(sub("${v//./}", v), "abc");
        assert_eq!(sub("${v/#a/}", v), "a.b.c");
        assert_eq!(sub("${v/%c/}", v), "a.b.c");
        assert_eq!(sub("${v/#b/x}", v), "a.b.c");
        assert_eq!(sub("${v/%b/x}", v), "a.b.c");
        // Empty pattern through a nested reference: Go's strings.Replace semantics.
        assert_eq!(sub("${v//${e}/-}", v), "-a-.-b-.-c-");
        assert_eq!(sub("${v/${e}/-}", v), "-a.b.c");
        assert_eq!(sub("${v/#${e}/-}", v), "-a.b.c");
        assert_eq!(sub("${v/%${e}/-}", v), "a.b.c-");
        // Escapes in pattern and replacement.
        assert_eq!(sub(r"${v//./\/}", v), "a/b/c");
        assert_eq!(sub(r"${v//./\\}", v), r"a\b\c");
        assert_eq!(sub("${v//./$$}", v), "a$b$c");
        // The pattern may contain '}'.
        assert_eq!(sub("${v/c}/x}", &[("v", "c}")]), "x");
        // Nested expansions in replace arguments.
        assert_eq!(
            sub("${v//${d}/${r}}", &[("v", "a.b"), ("d", "."), ("r", "_")]),
            "a_b"
        );
    }

    #[test]
    fn remove_forms() {
        let v = &[("v", "a/b/c.tar.gz")];
        assert_eq!(sub("${v#*/}", v), "b/c.tar.gz");
        assert_eq!(sub("${v##*/}", v), "c.tar.gz");
        assert_eq!(sub("${v%.*}", v), "a/b/c.tar");
        assert_eq!(sub("${v%%.*}", v), "a/b/c");
        assert_eq!(sub("${v#a}", v), "/b/c.tar.gz");
        assert_eq!(sub("${v#x}", v), "a/b/c.tar.gz");
        assert_eq!(sub("${v#?}", v), "/b/c.tar.gz");
        assert_eq!(sub("${v#[a-c]/}", v), "b/c.tar.gz");
        assert_eq!(sub("${v###*/}", &[("v", "#x/y")]), "y");
        // Whole-value match removes everything (shortest prefix of length >= 1).
        assert_eq!(sub("${v#*}", v), "/b/c.tar.gz");
        assert_eq!(sub("${v##*}", v), "");
        // A malformed pattern leaves the value unchanged.
        assert_eq!(sub("${v#[}", v), "a/b/c.tar.gz");
        assert_eq!(sub(r"${v#a\}", v), "a/b/c.tar.gz");
        // Pattern characters are reversed for `%`: a class `[a-z]` becomes `]z-a[`.
        assert_eq!(sub("${v%[a-z]}", &[("v", "ab")]), "ab");
        assert_eq!(sub("${v%z}", &[("v", "xyz")]), "xy");
        // No parser escapes in `#`/`%` patterns; `\` is the glob's escape.
        assert_eq!(sub(r"${v#*\/}", &[("v", "a/b")]), "b");
        assert_eq!(sub(r"${v#\*}", &[("v", "*a")]), "a");
    }

    #[test]
    fn glob() {
        assert_eq!(glob_match(b"*", b"a/b"), Ok(true));
        assert_eq!(glob_match(b"a*c", b"a/b/c"), Ok(true));
        assert_eq!(glob_match(b"a?c", b"abc"), Ok(true));
        assert_eq!(glob_match(b"a[^b]c", b"abc"), Ok(false));
        assert_eq!(glob_match(b"a[^b]c", b"axc"), Ok(true));
        assert_eq!(glob_match(br"a\*", b"a*"), Ok(true));
        assert_eq!(glob_match(b"[", b"a"), Err(()));
        assert_eq!(glob_match(b"a[", b"b"), Ok(false));
        assert_eq!(glob_match("[é]".as_bytes(), "é".as_bytes()), Ok(true));
        assert_eq!(glob_match(b"*.txt", b"a.b.txt"), Ok(true));
        assert_eq!(glob_match(b"*x", b"abc"), Ok(false));
    }

    #[test]
    fn go_replace_matches_go() {
        assert_eq!(go_replace(b"abc", b"", b"-", -1), b"-a-b-c-");
        assert_eq!(
            go_replace("aé".as_bytes(), b"", b"-", -1),
            "-a-é-".as_bytes()
        );
        assert_eq!(go_replace(b"aaa", b"a", b"b", 2), b"bba");
        assert_eq!(go_replace(b"aaa", b"aa", b"b", -1), b"ba");
        assert_eq!(go_replace(b"abc", b"x", b"y", -1), b"abc");
    }

    #[test]
    fn var_names() {
        for ok in ["a", "_", "A_1", "_9", "cluster_name", "CLUSTER"] {
            assert!(valid_var_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a.b", "é", "aé", "a\n", " a", "a b"] {
            assert!(!valid_var_name(bad), "{bad:?}");
        }
        let e = var_substitution("x", &vars(&[("ok", "1"), ("b-ad", "2")]), false).unwrap_err();
        assert_eq!(
            e,
            EnvsubstError::InvalidVarName {
                name: "b-ad".into()
            }
        );
        assert_eq!(
            var_substitution("${ok}", &vars(&[("ok", "1")]), true).unwrap(),
            "1"
        );
    }

    #[test]
    fn prepare_and_should() {
        let cm = vars(&[("a", "1\n"), ("b", "x\r\ny\n")]);
        let secret = vars(&[("b", "2"), ("c", "3\n3")]);
        let inline = vars(&[("c", "inline\n")]);
        let v = prepare_vars([&cm, &secret, &inline]);
        assert_eq!(v, vars(&[("a", "1"), ("b", "2"), ("c", "inline")]));
        assert_eq!(prepare_vars([&cm])["b"], "x\ry");
        assert!(should_substitute(&v, false));
        assert!(!should_substitute(&BTreeMap::new(), false));
        assert!(should_substitute(&BTreeMap::new(), true));
    }

    #[test]
    fn references() {
        let input = "a: ${x}\nb: ${y:=${z}}\nc: $${w}\nd: ${#x} ${q/${r}/s} $bare";
        assert_eq!(referenced_vars(input).unwrap(), ["x", "y", "z", "q", "r"]);
        assert_eq!(required_vars(input).unwrap(), ["x", "z", "q", "r"]);
        assert_eq!(referenced_vars("${"), Err(EnvsubstError::ParseVariableName));
        assert!(referenced_vars("no refs").unwrap().is_empty());
    }

    #[test]
    fn yaml_document() {
        let input = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${app}-cfg\n  namespace: ${ns:=default}\ndata:\n  script: |\n    echo $HOME $${HOME}\n  ver: \"${ver}\"\n";
        let out = sub(input, &[("app", "web"), ("ver", "1.2")]);
        assert_eq!(
            out,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-cfg\n  namespace: default\ndata:\n  script: |\n    echo $HOME ${HOME}\n  ver: \"1.2\"\n"
        );
    }
}
