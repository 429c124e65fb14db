//! Which regular expressions a route may carry: what Envoy's RE2 compiles within its default
//! program-size limit. A regex Envoy refuses makes it reject the whole RouteConfiguration
//! it sits in, and the outbound route is shared by every Service, so one bad pattern would
//! freeze every sidecar: such a route is refused where it is read, never translated.
//!
//! RE2's syntax is checked on the parsed pattern with an allow-list of what RE2 knows
//! (regex-syntax accepts more: class set operations, `\<`, `(?x)`, `\u`). Its program size
//! is bounded from above by counting instructions the way RE2 compiles them, calibrated
//! against `envoy --mode validate`: a literal byte or a class range is one, a capture two,
//! each repetition copy its body, an optional copy one more. Perl classes are ASCII in RE2,
//! so the count reads the pattern without Unicode; Unicode classes (`\pL`) are refused,
//! since their size in RE2 cannot be told from here.

use regex_syntax::ast::{self, Ast, ClassSet, ClassSetItem, Flag, FlagsItemKind, GroupKind, LiteralKind};
use regex_syntax::hir::{Class, Hir, HirKind};

/// Envoy's default `re2.max_program_size.error_level`.
pub const MAX_PROGRAM_SIZE: u64 = 100;
/// What RE2 adds to every program (its match and unanchored prefix), as measured.
const PROGRAM_BASE: u64 = 4;
/// RE2's largest repetition count.
const MAX_REPEAT: u32 = 1000;
/// Nesting deeper than this is refused before it costs anything to walk.
const MAX_NESTING: u32 = 32;

/// `Ok` when Envoy's RE2 takes `pattern`; otherwise why not.
pub fn check(pattern: &str) -> Result<(), String> {
    let parsed = ast::parse::ParserBuilder::new()
        .nest_limit(MAX_NESTING)
        .build()
        .parse(pattern)
        .map_err(|e| format!("not a regular expression: {}", e.kind()))?;
    re2_syntax(&parsed)?;
    let hir = regex_syntax::hir::translate::TranslatorBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .translate(pattern, &parsed)
        .map_err(|e| format!("not a regular expression: {}", e.kind()))?;
    let size = PROGRAM_BASE.saturating_add(program_size(&hir));
    if size > MAX_PROGRAM_SIZE {
        return Err(format!(
            "too large for Envoy's RE2: about {size} instructions, at most {MAX_PROGRAM_SIZE} (shorten repetitions)"
        ));
    }
    Ok(())
}

fn re2_syntax(node: &Ast) -> Result<(), String> {
    match node {
        Ast::Empty(_) | Ast::Dot(_) | Ast::ClassPerl(_) => Ok(()),
        Ast::Flags(set) => flags(&set.flags),
        Ast::Literal(literal) => re2_literal(literal),
        Ast::Assertion(assertion) => {
            use ast::AssertionKind::*;
            match assertion.kind {
                StartLine | EndLine | StartText | EndText | WordBoundary | NotWordBoundary => Ok(()),
                _ => Err("only ^, $, \\A, \\z, \\b and \\B assertions are RE2".into()),
            }
        }
        Ast::ClassUnicode(_) => Err(unicode_class()),
        Ast::ClassBracketed(class) => class_set(&class.kind),
        Ast::Repetition(repetition) => {
            if let ast::RepetitionKind::Range(range) = &repetition.op.kind {
                let largest = match *range {
                    ast::RepetitionRange::Exactly(n) | ast::RepetitionRange::AtLeast(n) => n,
                    ast::RepetitionRange::Bounded(low, high) => low.max(high),
                };
                if largest > MAX_REPEAT {
                    return Err(format!("repetition count {largest}: RE2 allows at most {MAX_REPEAT}"));
                }
            }
            re2_syntax(&repetition.ast)
        }
        Ast::Group(group) => {
            match &group.kind {
                GroupKind::CaptureIndex(_) => {}
                GroupKind::CaptureName { name, .. } => {
                    if !name.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!("capture name {:?}: RE2 takes letters, digits and _", name.name));
                    }
                }
                GroupKind::NonCapturing(set) => flags(set)?,
            }
            re2_syntax(&group.ast)
        }
        Ast::Alternation(alternation) => alternation.asts.iter().try_for_each(re2_syntax),
        Ast::Concat(concat) => concat.asts.iter().try_for_each(re2_syntax),
    }
}

fn flags(set: &ast::Flags) -> Result<(), String> {
    set.items.iter().try_for_each(|item| match item.kind {
        FlagsItemKind::Negation
        | FlagsItemKind::Flag(Flag::CaseInsensitive | Flag::MultiLine | Flag::DotMatchesNewLine | Flag::SwapGreed) => {
            Ok(())
        }
        FlagsItemKind::Flag(_) => Err("only the i, m, s and U flags are RE2".into()),
    })
}

fn re2_literal(literal: &ast::Literal) -> Result<(), String> {
    match &literal.kind {
        LiteralKind::Verbatim | LiteralKind::Meta | LiteralKind::HexFixed(ast::HexLiteralKind::X) => Ok(()),
        LiteralKind::HexBrace(ast::HexLiteralKind::X) => Ok(()),
        // RE2 takes any escaped ASCII punctuation as itself.
        LiteralKind::Superfluous if literal.c.is_ascii_punctuation() => Ok(()),
        LiteralKind::Special(kind) if *kind != ast::SpecialLiteralKind::Space => Ok(()),
        _ => Err(format!("the escape for {:?} is not RE2", literal.c)),
    }
}

fn class_set(set: &ClassSet) -> Result<(), String> {
    match set {
        ClassSet::BinaryOp(_) => Err("class set operations (&&, --, ~~) are not RE2".into()),
        ClassSet::Item(item) => class_item(item),
    }
}

fn class_item(item: &ClassSetItem) -> Result<(), String> {
    match item {
        ClassSetItem::Empty(_) | ClassSetItem::Ascii(_) | ClassSetItem::Perl(_) => Ok(()),
        ClassSetItem::Literal(literal) => re2_literal(literal),
        ClassSetItem::Range(range) => re2_literal(&range.start).and_then(|()| re2_literal(&range.end)),
        ClassSetItem::Unicode(_) => Err(unicode_class()),
        ClassSetItem::Bracketed(_) => Err("nested classes are not RE2".into()),
        ClassSetItem::Union(union) => union.items.iter().try_for_each(class_item),
    }
}

fn unicode_class() -> String {
    "Unicode classes (\\p, \\P) are not supported in routes: their size in Envoy's RE2 is unbounded here".into()
}

/// An upper bound of the instructions RE2 compiles `hir` to (without its fixed base).
fn program_size(hir: &Hir) -> u64 {
    match hir.kind() {
        HirKind::Empty => 0,
        HirKind::Literal(literal) => literal.0.len() as u64,
        HirKind::Class(Class::Bytes(class)) => class.ranges().len() as u64,
        HirKind::Class(Class::Unicode(class)) => class.ranges().len() as u64,
        HirKind::Look(_) => 1,
        HirKind::Capture(capture) => program_size(&capture.sub).saturating_add(2),
        HirKind::Repetition(repetition) => {
            let body = program_size(&repetition.sub);
            let min = u64::from(repetition.min);
            // An optional copy is its body and a branch; an unbounded tail loops on the last
            // copy with one branch, or is one optional copy when none is required.
            let tail = match repetition.max {
                Some(max) => u64::from(max).saturating_sub(min).saturating_mul(body.saturating_add(1)),
                None if min == 0 => body.saturating_add(1),
                None => 1,
            };
            body.saturating_mul(min).saturating_add(tail)
        }
        HirKind::Concat(parts) => parts.iter().map(program_size).fold(0, u64::saturating_add),
        HirKind::Alternation(branches) => {
            branches.iter().map(program_size).fold(branches.len().saturating_sub(1) as u64, u64::saturating_add)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_envoy_takes_are_taken() {
        for pattern in [
            "^/api/v[0-9]+/users/[^/]+/orders$",
            "/[^/]+/Where",
            "(?i)^bearer .+",
            r"\d{3}-\w+\.json",
            "a{96}",
            "(?P<id>[0-9]+)|(?<name>[a-z]+)",
            r"\/x\-y[[:alpha:]]\x41\x{42}\t",
            "",
        ] {
            assert_eq!(check(pattern), Ok(()), "{pattern}");
        }
    }

    /// Each was measured against `envoy --mode validate` (Envoy 1.40), which refuses it.
    #[test]
    fn patterns_envoy_refuses_are_refused_with_why() {
        for (pattern, why) in [
            ("(", "not a regular expression"),
            ("(?=a)", "not a regular expression"),
            ("a{97}", "too large"),
            ("a{101}", "too large"),
            ("(a{10}){10}", "too large"),
            (".{90}", "too large"),
            ("[a-z]{99}", "too large"),
            ("a{1001}", "at most 1000"),
            (r"\<a", "assertions"),
            ("(?x)a b", "flags"),
            (r"\u0041", "escape"),
            ("[a&&b]", "set operations"),
            ("[a[b]]", "nested"),
            (r"\pL+", "Unicode classes"),
        ] {
            let refused = check(pattern).expect_err(pattern);
            assert!(refused.contains(why), "{pattern}: {refused}");
        }
    }
}
