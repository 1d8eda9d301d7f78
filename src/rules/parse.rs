//! SQL text to one sqlparser `Select`, with errors as positions and hints.
//!
//! The GenericDialect is used as it is. The platform documents strings with backslash-escaped
//! quotes (`'yyyy-MM-dd\'T\'HH:mm'`), which GenericDialect rejects; they are rewritten to the
//! standard `''` before parsing. The rewrite keeps every character's position, so errors still
//! point at the right column.

use sqlparser::ast::{Select, SetExpr, Statement};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};

use super::error::CompileError;

/// Nesting depth sqlparser may recurse to: deep enough for any real rule, shallow enough that a
/// hostile rule cannot exhaust the stack.
const RECURSION_LIMIT: usize = 64;

/// Longest rule text: 50 fields with long expressions fit many times over; the bound keeps
/// hostile input from building huge syntax trees.
pub const MAX_SQL: usize = 32 * 1024;

/// Words GenericDialect reserves that devices commonly use as field names.
const RESERVED: &[&str] = &[
    "order",
    "group",
    "limit",
    "offset",
    "interval",
    "from",
    "where",
    "all",
    "select",
    "by",
    "having",
    "join",
    "union",
    "on",
    "as",
    "and",
    "or",
    "not",
    "in",
    "is",
    "like",
    "between",
    "case",
    "when",
    "then",
    "else",
    "end",
    "null",
    "true",
    "false",
    "distinct",
    "with",
    "into",
    "table",
    "values",
    "set",
    "left",
    "right",
    "inner",
    "outer",
    "cross",
    "natural",
    "using",
    "except",
    "intersect",
    "fetch",
    "top",
    "window",
    "qualify",
];

/// Rewrites `\'` inside single-quoted strings to `''` (same length).
pub fn rewrite_backslash_quotes(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut in_str = false;
    let mut in_ident = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            // `\\` is kept as it is, so that `'a\\'` still ends at its last quote.
            if c == b'\\' && b.get(i + 1) == Some(&b'\\') {
                out.extend_from_slice(b"\\\\");
                i += 2;
                continue;
            }
            if c == b'\\' && b.get(i + 1) == Some(&b'\'') {
                out.extend_from_slice(b"''");
                i += 2;
                continue;
            }
            if c == b'\'' {
                if b.get(i + 1) == Some(&b'\'') {
                    out.extend_from_slice(b"''");
                    i += 2;
                    continue;
                }
                in_str = false;
            }
        } else if in_ident {
            if c == b'"' {
                in_ident = false;
            }
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            // A comment runs to the end of the line.
            while i < b.len() && b[i] != b'\n' {
                out.push(b[i]);
                i += 1;
            }
            continue;
        } else if c == b'\'' {
            in_str = true;
        } else if c == b'"' {
            in_ident = true;
        }
        out.push(c);
        i += 1;
    }
    // Only ASCII bytes were replaced by ASCII bytes.
    String::from_utf8(out).unwrap_or_else(|_| sql.to_string())
}

/// Parses `sql` (a whole rule file: header comments are SQL comments) into one SELECT.
///
/// # Errors
/// Syntax errors, several statements, statements other than a plain SELECT.
pub fn parse_select(sql: &str) -> Result<Box<Select>, CompileError> {
    if sql.len() > MAX_SQL {
        return Err(CompileError::at(1, 1, format!("the rule is longer than {MAX_SQL} bytes")));
    }
    let text = rewrite_backslash_quotes(sql);
    let dialect = GenericDialect {};
    // Before the parser: its error for `WHERE t > AND x` is at `x`, after it read AND as a field.
    strict(&dialect, &text)?;
    let mut statements = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| parser_error(&e, sql))?;
    if statements.is_empty() {
        let lines = sql.lines().count().max(1) as u64;
        return Err(CompileError::at(lines, 1, "the rule has no SQL statement")
            .hint("write one statement: SELECT fields FROM \"topic\" [WHERE condition]"));
    }
    if statements.len() > 1 {
        let (line, col) = after_first_semicolon(&text);
        return Err(CompileError::at(line, col, "a rule holds exactly one SQL statement")
            .hint("remove the ';' and what follows, or put the second statement in its own file"));
    }
    let stmt = statements.remove(0);
    // Spans of whole statements are computed by walking the tree, which recurses as deep as the
    // expression is long; the first token's position is cheap and as useful.
    let (line, col) = code_start(&text, 0);
    let Statement::Query(q) = stmt else {
        return Err(CompileError::at(line, col, "only SELECT statements are allowed in rules"));
    };
    let extra = [
        (q.with.is_some(), "WITH"),
        (q.order_by.is_some(), "ORDER BY"),
        (q.limit_clause.is_some(), "LIMIT/OFFSET"),
        (q.fetch.is_some(), "FETCH"),
        (!q.locks.is_empty(), "FOR UPDATE"),
        (q.for_clause.is_some(), "FOR"),
        (q.settings.is_some(), "SETTINGS"),
        (q.format_clause.is_some(), "FORMAT"),
        (!q.pipe_operators.is_empty(), "pipe operators"),
    ];
    if let Some((_, what)) = extra.iter().find(|(present, _)| *present) {
        return Err(CompileError::at(line, col, format!("{what} is not supported in rules"))
            .hint("a rule is SELECT fields FROM \"topic\" [WHERE condition]"));
    }
    match *q.body {
        SetExpr::Select(s) => Ok(s),
        _ => Err(CompileError::at(
            line,
            col,
            "only a plain SELECT is allowed (no UNION, VALUES or subqueries)",
        )),
    }
}

/// What GenericDialect accepts and the platform's SQL does not: a comma before FROM
/// (`SELECT a, FROM ...`), and an operator keyword where a value belongs (`WHERE t > AND`, which
/// GenericDialect reads as a field named `AND`, so the rule silently never matches). `*` is left
/// out: `SELECT * FROM` is the wildcard.
fn strict(dialect: &GenericDialect, text: &str) -> Result<(), CompileError> {
    use sqlparser::keywords::Keyword;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(dialect, text).tokenize_with_location() else {
        return Ok(()); // the parser reports the tokenizer's error
    };
    let mut previous: Option<&sqlparser::tokenizer::TokenWithSpan> = None;
    for t in tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))) {
        let keyword = match &t.token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
            _ => None,
        };
        if let Some(p) = previous {
            let at =
                |span: &sqlparser::tokenizer::TokenWithSpan| (span.span.start.line, span.span.start.column);
            if p.token == Token::Comma && keyword == Some(Keyword::FROM) {
                let (line, col) = at(p);
                return Err(CompileError::at(
                    line,
                    col,
                    "a comma before FROM: the field list ends without a field",
                )
                .hint("remove the ',' or write the missing field"));
            }
            let operator = matches!(
                p.token,
                Token::Eq
                    | Token::DoubleEq
                    | Token::Neq
                    | Token::Lt
                    | Token::Gt
                    | Token::LtEq
                    | Token::GtEq
                    | Token::Plus
                    | Token::Minus
                    | Token::Div
                    | Token::Mod
            );
            let misplaced = [Keyword::AND, Keyword::OR, Keyword::FROM, Keyword::WHERE, Keyword::SELECT];
            if operator && keyword.is_some_and(|k| misplaced.contains(&k)) {
                let (line, col) = at(t);
                return Err(CompileError::at(
                    line,
                    col,
                    format!("a value is missing after '{}': found the keyword {}", p.token, t.token),
                )
                .hint(format!(
                    "write a value after '{}'; a field named {} goes in double quotes",
                    p.token, t.token
                )));
            }
        }
        previous = Some(t);
    }
    Ok(())
}

/// Line and column of the first character at or after `from` that is not blank or a comment.
fn code_start(text: &str, from: usize) -> (u64, u64) {
    let mut i = from;
    let b = text.as_bytes();
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
        } else {
            break;
        }
    }
    line_col(text, i.min(text.len()))
}

/// Line and column (1-based, in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset];
    let line = before.matches('\n').count() as u64 + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    (line, col)
}

/// Where the statement after the first top-level `;` starts.
fn after_first_semicolon(text: &str) -> (u64, u64) {
    let b = text.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' || c == b'`' => quote = Some(c),
            None if b[i..].starts_with(b"--") => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            None if c == b';' => return code_start(text, i + 1),
            None => {}
        }
        i += 1;
    }
    (1, 1)
}

/// Turns a sqlparser error into a positioned error with a hint.
fn parser_error(e: &ParserError, sql: &str) -> CompileError {
    let msg = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => {
            return CompileError::at(
                1,
                1,
                format!("the SQL is nested too deeply (more than {RECURSION_LIMIT} levels)"),
            )
        }
    };
    let (text, line, col) = match msg.rsplit_once(" at Line: ") {
        Some((text, pos)) => {
            let mut it = pos.split(", Column: ");
            let line = it.next().and_then(|l| l.trim().parse().ok()).unwrap_or(1);
            let col = it.next().and_then(|c| c.trim().parse().ok()).unwrap_or(1);
            (text.to_string(), line, col)
        }
        None => (msg.clone(), 1, 1),
    };
    let mut err = CompileError::at(line, col, format!("syntax error: {text}"));
    if let Some(found) = text.rsplit_once("found: ").map(|(_, f)| f.trim()) {
        let word = found.trim_matches(|c: char| !c.is_alphanumeric() && c != '_');
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word)) && !word.is_empty() {
            err = err.hint(format!(
                "{word} is a reserved word; if it is a field name, write it in double quotes: \"{}\"",
                word.to_ascii_lowercase()
            ));
        } else if found == "EOF" {
            err = err.hint("the statement ends early; is a closing ')' or a quote missing?");
        } else if found.starts_with('\\') || sql.contains("\\\"") {
            err = err.hint("use '' for a quote inside a string");
        }
    }
    if text.ends_with("found: EOF") {
        // sqlparser reports the end of input at 0:0; point just after the last character.
        let lines: Vec<&str> = sql.trim_end().lines().collect();
        err.line = lines.len().max(1) as u64;
        err.col = lines.last().map_or(1, |l| l.chars().count() as u64 + 1);
    }
    if err.hint.is_none() {
        if let Some(word) = bare_reserved_word(sql) {
            err = err.hint(format!(
                "{word} is a reserved word; if it is a field name, write it in double quotes: \"{word}\""
            ));
        }
    }
    if err.hint.is_none() && text.contains("Unterminated string") {
        err = err.hint("strings use single quotes and end with a single quote; topics use double quotes");
    }
    err
}

/// Reserved words that are also common field names, found unquoted in the SQL.
fn bare_reserved_word(sql: &str) -> Option<&'static str> {
    const FIELD_LIKE: &[&str] = &["order", "group", "limit", "offset", "interval", "all", "having", "window"];
    let mut in_quote: Option<char> = None;
    let mut word = String::new();
    // Comments (the header) are prose: "all" or "order" there is no mistake.
    let code: String = sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    for c in code.chars().chain(std::iter::once(' ')) {
        match in_quote {
            Some(q) if c == q => in_quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' || c == '`' => in_quote = Some(c),
            None if c.is_alphanumeric() || c == '_' => {
                word.push(c);
                continue;
            }
            None => {}
        }
        if !word.is_empty() {
            if let Some(w) = FIELD_LIKE.iter().find(|w| w.eq_ignore_ascii_case(&word)) {
                return Some(w);
            }
            word.clear();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backslash_quotes_are_rewritten_in_place() {
        let sql = r"SELECT timestamp('yyyy-MM-dd\'T\'HH') AS t, 'a\\b' AS x FROM t -- it\'s";
        let out = rewrite_backslash_quotes(sql);
        assert_eq!(out.len(), sql.len());
        assert!(out.contains("'yyyy-MM-dd''T''HH'"));
        assert!(out.ends_with(r"-- it\'s"));
        assert!(parse_select(sql).is_ok());
    }

    #[test]
    fn what_generic_sql_allows_and_the_platform_does_not_is_refused() {
        let e = parse_select("SELECT a AS t,\nFROM \"/a/+/user/update\"").unwrap_err();
        assert_eq!((e.line, e.col, e.message.contains("comma before FROM")), (1, 14, true), "{}", e.message);
        let e = parse_select("SELECT a FROM \"t\"\nWHERE temperature > AND").unwrap_err();
        assert_eq!((e.line, e.col), (2, 21), "{}", e.message);
        assert!(e.message.contains("keyword AND"), "{}", e.message);
        // A field named like a keyword, quoted, and the comma inside a function are fine.
        assert!(parse_select("SELECT a FROM \"t\" WHERE b > \"and\"").is_ok());
        assert!(parse_select("SELECT concat(a, b) AS c, d FROM \"t\" WHERE x > 1 AND y < 2").is_ok());
        assert!(parse_select("SELECT * FROM \"t\" WHERE x * 2 > 1").is_ok());
    }

    #[test]
    fn errors_have_positions_and_hints() {
        let e = parse_select("SELECT a,\n order FROM \"t\"").unwrap_err();
        assert_eq!((e.line, e.col), (2, 2));
        assert!(e.hint.unwrap().contains("\"order\""), "{}", e.message);
        let e = parse_select("SELECT a FROM \"t\"; SELECT b FROM \"u\"").unwrap_err();
        assert!(e.message.contains("exactly one"));
        let e = parse_select("SELECT a FROM \"t\" ORDER BY a").unwrap_err();
        assert!(e.message.contains("ORDER BY"));
        let e = parse_select("SELECT limit FROM \"t\"").unwrap_err();
        assert!(e.hint.unwrap().contains("\"limit\""));
        let e = parse_select("SELECT a FROM \"t\" WHERE\n  a >").unwrap_err();
        assert_eq!((e.line, e.col), (2, 6), "{e:?}");
        let e = parse_select("-- only a comment").unwrap_err();
        assert!(e.message.contains("no SQL"));
        let e = parse_select("DELETE FROM t").unwrap_err();
        assert!(e.message.contains("only SELECT"));
        let deep = format!("SELECT {}1{} FROM \"t\"", "(".repeat(500), ")".repeat(500));
        assert!(parse_select(&deep).is_err());
    }
}
