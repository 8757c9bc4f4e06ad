//! Naming rules: turn a file's path inside an inbox into the `plugin_name` and `business_type`
//! the upload needs.
//!
//! A watch has an ordered list of rules, each a template (`{plugin_name}__{business_type}.zip`)
//! or a regex with named groups. Invariants this module keeps:
//!
//! - Every [`Rule`] is compiled once, at configuration time, into one `regex::Regex` whose
//!   compiled size is bounded ([`REGEX_SIZE_LIMIT`]), so a hostile configuration cannot blow
//!   memory. A rule that can never yield a `plugin_name` or a business type is rejected then,
//!   not discovered file by file.
//! - [`RuleSet::derive`] is pure and total: it never panics and always answers with a
//!   [`Derivation`] whose reasons are single sentences for the operator.
//! - The first rule that *matches* decides. If its values are unacceptable the answer is
//!   [`Derivation::Invalid`]; later rules are not consulted, so a file is never named by a rule
//!   the operator did not mean for it.
//! - A [`Derivation::Named`] always carries a `plugin_name` of 1–50 `A-Z a-z 0-9 _ -` and a
//!   `business_type` spelled exactly as in the watch's `business_types` list.

use std::fmt;

use regex::{Captures, Regex, RegexBuilder};

/// Upper bound, in bytes, on the compiled size of one rule's regex.
///
/// Room for what an operator plausibly writes (`\w{1,50}`, Unicode-aware, needs about 4 MiB),
/// yet a rule such as `\w{1000}` is refused at start-up instead of eating memory.
pub const REGEX_SIZE_LIMIT: usize = 8 << 20;

/// Upper bound, in bytes, on the lazy DFA cache a rule's regex may grow while matching (the
/// regex crate's own default, stated here so it cannot silently change).
const REGEX_DFA_CACHE_LIMIT: usize = 2 << 20;

/// Longest accepted `plugin_name`, in characters (SPEC §5).
pub const PLUGIN_NAME_MAX_LEN: usize = 50;

/// How a rule's pattern was written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// A `template = "..."` with `{plugin_name}`, `{business_type}`, `{version}` and `*`.
    Template(String),
    /// A `regex = '...'` using the named groups `plugin_name`, `business_type`, `version`.
    Regex(String),
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Template(t) => write!(f, "template \"{t}\""),
            Pattern::Regex(r) => write!(f, "regex '{r}'"),
        }
    }
}

/// Why a rule from the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The regex does not parse.
    #[error("regex '{regex}' is not valid: {message}")]
    InvalidRegex {
        /// The regex as written.
        regex: String,
        /// The regex engine's explanation.
        message: String,
    },
    /// The pattern compiles to more than [`REGEX_SIZE_LIMIT`] bytes.
    #[error(
        "{pattern} is too complex: compiled it would exceed the limit of {limit} bytes; \
         simplify it (for example [A-Za-z0-9_] instead of \\w, or fewer repetitions)"
    )]
    TooComplex {
        /// The pattern, described as in the configuration.
        pattern: String,
        /// The size limit in bytes.
        limit: usize,
    },
    /// A `{...}` in a template names no known placeholder.
    #[error(
        "template \"{template}\" uses the unknown placeholder {{{name}}}; \
         the placeholders are {{plugin_name}}, {{business_type}} and {{version}}"
    )]
    UnknownPlaceholder {
        /// The template as written.
        template: String,
        /// The text between the braces.
        name: String,
    },
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("template \"{template}\" has an unmatched \"{brace}\" at character {position}")]
    UnbalancedBrace {
        /// The template as written.
        template: String,
        /// The offending brace.
        brace: char,
        /// 1-based character position of the brace.
        position: usize,
    },
    /// The same placeholder appears twice.
    #[error("template \"{template}\" uses {{{name}}} more than once")]
    DuplicatePlaceholder {
        /// The template as written.
        template: String,
        /// The repeated placeholder's name.
        name: String,
    },
    /// Two placeholders with nothing between them, so the name cannot be split reliably.
    #[error(
        "template \"{template}\" puts {{{first}}} and {{{second}}} side by side; \
         put a separator such as \"__\" or \"-\" between them"
    )]
    AdjacentPlaceholders {
        /// The template as written.
        template: String,
        /// The earlier placeholder's name.
        first: String,
        /// The later placeholder's name.
        second: String,
    },
    /// A template without `{plugin_name}`.
    #[error(
        "template \"{template}\" can never yield a plugin_name: it has no {{plugin_name}} placeholder"
    )]
    NoPluginNamePlaceholder {
        /// The template as written.
        template: String,
    },
    /// A regex without a `plugin_name` group.
    #[error("regex '{regex}' can never yield a plugin_name: it has no (?P<plugin_name>...) group")]
    NoPluginNameGroup {
        /// The regex as written.
        regex: String,
    },
    /// A template without `{business_type}` and without a constant.
    #[error(
        "template \"{template}\" gives no business type: add a {{business_type}} placeholder \
         or a constant business_type = \"...\" to the rule"
    )]
    NoBusinessTypePlaceholder {
        /// The template as written.
        template: String,
    },
    /// A regex without a `business_type` group and without a constant.
    #[error(
        "regex '{regex}' gives no business type: add a (?P<business_type>...) group \
         or a constant business_type = \"...\" to the rule"
    )]
    NoBusinessTypeGroup {
        /// The regex as written.
        regex: String,
    },
    /// A named group other than the three this module reads; almost always a typo.
    #[error(
        "regex '{regex}' has a group named \"{name}\", but only plugin_name, business_type \
         and version are used; rename it or write (?:...) for a group that only groups"
    )]
    UnknownGroup {
        /// The regex as written.
        regex: String,
        /// The unexpected group name.
        name: String,
    },
    /// `business_type = ""`.
    #[error("the rule's constant business_type is empty")]
    EmptyBusinessType,
}

/// One compiled naming rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pattern: Pattern,
    regex: Regex,
    constant_business_type: Option<String>,
    has_business_type: bool,
    needs_subfolders: bool,
}

impl Rule {
    /// Compiles a rule from the configuration.
    ///
    /// `constant_business_type` is the rule's `business_type = "..."` key. It is used only when
    /// the name yields no business type: a captured `{business_type}` (or group) wins over the
    /// constant, because the file's own name is the more specific statement.
    pub fn compile(
        pattern: Pattern,
        constant_business_type: Option<String>,
    ) -> Result<Rule, RuleError> {
        if constant_business_type.as_deref() == Some("") {
            return Err(RuleError::EmptyBusinessType);
        }
        let has_constant = constant_business_type.is_some();
        let (source, has_business_type, needs_subfolders) = match &pattern {
            Pattern::Template(template) => {
                let tokens = parse_template(template)?;
                let has = |p: Placeholder| tokens.contains(&Token::Placeholder(p));
                if !has(Placeholder::PluginName) {
                    return Err(RuleError::NoPluginNamePlaceholder {
                        template: template.clone(),
                    });
                }
                let has_business_type = has(Placeholder::BusinessType);
                if !has_business_type && !has_constant {
                    return Err(RuleError::NoBusinessTypePlaceholder {
                        template: template.clone(),
                    });
                }
                let needs_subfolders = tokens
                    .iter()
                    .any(|t| matches!(t, Token::Literal(l) if l.contains('/')));
                (
                    template_to_regex(&tokens),
                    has_business_type,
                    needs_subfolders,
                )
            }
            Pattern::Regex(regex) => (regex.clone(), false, regex_requires_slash(regex)),
        };

        let regex = RegexBuilder::new(&source)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_CACHE_LIMIT)
            .build()
            .map_err(|err| match err {
                regex::Error::CompiledTooBig(limit) => RuleError::TooComplex {
                    pattern: pattern.to_string(),
                    limit,
                },
                other => RuleError::InvalidRegex {
                    regex: source.clone(),
                    message: other.to_string(),
                },
            })?;

        let has_business_type = match &pattern {
            Pattern::Template(_) => has_business_type,
            Pattern::Regex(text) => {
                let mut has_plugin_name = false;
                let mut has_business_type = false;
                for name in regex.capture_names().flatten() {
                    match name {
                        PLUGIN_NAME => has_plugin_name = true,
                        BUSINESS_TYPE => has_business_type = true,
                        VERSION => {}
                        other => {
                            return Err(RuleError::UnknownGroup {
                                regex: text.clone(),
                                name: other.to_owned(),
                            });
                        }
                    }
                }
                if !has_plugin_name {
                    return Err(RuleError::NoPluginNameGroup {
                        regex: text.clone(),
                    });
                }
                if !has_business_type && !has_constant {
                    return Err(RuleError::NoBusinessTypeGroup {
                        regex: text.clone(),
                    });
                }
                has_business_type
            }
        };

        Ok(Rule {
            pattern,
            regex,
            constant_business_type,
            has_business_type,
            needs_subfolders,
        })
    }

    /// One line for `extdrop check` and `explain`, e.g.
    /// `template "{plugin_name}__{business_type}.zip"` or
    /// `regex '^(?P<plugin_name>...)\.zip$', business_type = "Normal"`.
    pub fn describe(&self) -> String {
        match &self.constant_business_type {
            Some(constant) => format!("{}, business_type = \"{constant}\"", self.pattern),
            None => self.pattern.to_string(),
        }
    }

    /// True when every path this rule can match contains a `/`, i.e. the rule only makes sense
    /// for a watch with `recursive = true`.
    ///
    /// Exact for templates. For a regex it is answered conservatively: true only when the
    /// regex has a mandatory `/` at its top level (no top-level `|`, no verbose mode); a
    /// regex this cannot prove anything about answers false.
    pub fn needs_subfolders(&self) -> bool {
        self.needs_subfolders
    }

    /// The pattern as written in the configuration.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// The rule's `business_type = "..."` constant, so configuration checks can verify it is
    /// one of the watch's `business_types`.
    pub fn constant_business_type(&self) -> Option<&str> {
        self.constant_business_type.as_deref()
    }

    /// True when the pattern itself can capture a business type (template placeholder or regex
    /// group); a constant is then only the fallback.
    pub fn captures_business_type(&self) -> bool {
        self.has_business_type
    }
}

/// The rules of one watch together with the business types it accepts.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    business_types: Vec<String>,
}

/// What the rules say about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Derivation {
    /// A rule matched and its values are acceptable.
    Named {
        /// Index of the rule that matched, in configuration order.
        rule: usize,
        /// 1–50 of `A-Z a-z 0-9 _ -`.
        plugin_name: String,
        /// Spelled as in the watch's `business_types`.
        business_type: String,
        /// The `{version}` placeholder or `version` group, when the rule has one and it took
        /// part in the match. Informational; the package check validates the real version.
        version: Option<String>,
    },
    /// A rule matched but its values are not acceptable; later rules were not tried.
    Invalid {
        /// Index of the rule that matched, in configuration order.
        rule: usize,
        /// One sentence for the operator, e.g. `plugin_name "a b" is not 1-50 of ...`.
        reason: String,
    },
    /// No rule matched.
    NoMatch {
        /// One sentence for the operator.
        reason: String,
    },
}

impl RuleSet {
    /// Bundles a watch's rules (tried in order) with its accepted business types.
    ///
    /// `business_types` is the watch's accepted list in canonical spelling (e.g. `"Build"`,
    /// `"Gate"`, `"Deploy"`, `"Test"`, `"Normal"`); a derived business type is compared with it
    /// case-insensitively and replaced by the spelling found here.
    pub fn new(rules: Vec<Rule>, business_types: Vec<String>) -> RuleSet {
        RuleSet {
            rules,
            business_types,
        }
    }

    /// Names a file from its path relative to the inbox, with `/` separators (`"name.zip"` at
    /// the top level, `"sub/dir/name.zip"` below it).
    pub fn derive(&self, rel_path: &str) -> Derivation {
        for (index, rule) in self.rules.iter().enumerate() {
            if let Some(captures) = rule.regex.captures(rel_path) {
                return self.judge(index, rule, &captures);
            }
        }
        let reason = match self.rules.as_slice() {
            [] => format!("{rel_path:?} cannot be named: this watch has no rules"),
            [only] => format!(
                "{rel_path:?} does not match the only rule of this watch ({})",
                only.describe()
            ),
            rules => format!(
                "{rel_path:?} matches none of the {} rules of this watch",
                rules.len()
            ),
        };
        Derivation::NoMatch { reason }
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The accepted business types, in canonical spelling.
    pub fn business_types(&self) -> &[String] {
        &self.business_types
    }

    /// The canonical spelling of `business_type`, if the watch accepts it.
    ///
    /// Case-insensitive by Unicode lowercase, so that `deploy` and `DEPLOY` both become
    /// `Deploy`; operators type names by hand and the server wants one spelling.
    pub fn canonical_business_type(&self, business_type: &str) -> Option<&str> {
        let wanted = business_type.to_lowercase();
        self.business_types
            .iter()
            .find(|accepted| accepted.to_lowercase() == wanted)
            .map(String::as_str)
    }

    fn judge(&self, rule_index: usize, rule: &Rule, captures: &Captures<'_>) -> Derivation {
        let invalid = |reason: String| Derivation::Invalid {
            rule: rule_index,
            reason,
        };
        let Some(plugin_name) = captures.name(PLUGIN_NAME).map(|m| m.as_str()) else {
            // Only reachable for a regex whose plugin_name group is optional.
            return invalid(
                "the name matched, but the rule's plugin_name group captured nothing".into(),
            );
        };
        if !is_valid_plugin_name(plugin_name) {
            return invalid(format!(
                "plugin_name {plugin_name:?} is not 1-{PLUGIN_NAME_MAX_LEN} of A-Z a-z 0-9 _ -"
            ));
        }
        let business_type = match (
            captures.name(BUSINESS_TYPE),
            rule.constant_business_type.as_deref(),
        ) {
            (Some(captured), _) => captured.as_str(),
            (None, Some(constant)) => constant,
            (None, None) => {
                return invalid(
                    "the name matched, but the rule captured no business type and has no \
                     constant business_type"
                        .into(),
                );
            }
        };
        let Some(canonical) = self.canonical_business_type(business_type) else {
            return invalid(if self.business_types.is_empty() {
                format!(
                    "business type {business_type:?} is not accepted: this watch lists no business_types"
                )
            } else {
                format!(
                    "business type {business_type:?} is not one of {}",
                    self.business_types.join(", ")
                )
            });
        };
        Derivation::Named {
            rule: rule_index,
            plugin_name: plugin_name.to_owned(),
            business_type: canonical.to_owned(),
            version: captures.name(VERSION).map(|m| m.as_str().to_owned()),
        }
    }
}

/// Whether `name` is an acceptable `plugin_name`: 1–50 of `A-Z a-z 0-9 _ -` (SPEC §5).
pub fn is_valid_plugin_name(name: &str) -> bool {
    (1..=PLUGIN_NAME_MAX_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const PLUGIN_NAME: &str = "plugin_name";
const BUSINESS_TYPE: &str = "business_type";
const VERSION: &str = "version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    PluginName,
    BusinessType,
    Version,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Placeholder> {
        match name {
            PLUGIN_NAME => Some(Placeholder::PluginName),
            BUSINESS_TYPE => Some(Placeholder::BusinessType),
            VERSION => Some(Placeholder::Version),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Placeholder::PluginName => PLUGIN_NAME,
            Placeholder::BusinessType => BUSINESS_TYPE,
            Placeholder::Version => VERSION,
        }
    }

    /// The regex for this placeholder.
    ///
    /// Placeholders stay within one path segment and take any non-empty text, so that a
    /// malformed value is reported as `Invalid` with the value in the reason rather than as a
    /// silent `NoMatch`. Where a literal separator could split the name in several places
    /// (`{plugin_name}__{business_type}.zip` against `my__task__Deploy.zip`), plugin_name is
    /// greedy and business_type lazy: the plugin_name gets the longest text that lets the rest
    /// match, because business types never contain separators while plugin names often do.
    /// That gives `my__task` + `Deploy` here, and `Deploy` + `my__task` for the mirrored
    /// template `{business_type}__{plugin_name}.zip`.
    fn regex(self) -> &'static str {
        match self {
            Placeholder::PluginName => "(?P<plugin_name>[^/]+)",
            Placeholder::BusinessType => "(?P<business_type>[^/]+?)",
            // ASCII digits only: `\d` would also accept other scripts' digits.
            Placeholder::Version => r"(?P<version>[0-9]+\.[0-9]+\.[0-9]+)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Placeholder(Placeholder),
    /// `*`: any run of characters within one path segment, possibly empty. Lazy, so it never
    /// takes text a placeholder could have.
    Star,
}

fn parse_template(template: &str) -> Result<Vec<Token>, RuleError> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut literal = String::new();
    let mut chars = template.chars().enumerate();
    while let Some((position, c)) = chars.next() {
        match c {
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for (_, n) in chars.by_ref() {
                    match n {
                        '}' => {
                            closed = true;
                            break;
                        }
                        // A second '{' before any '}' means the first one was never closed.
                        '{' => break,
                        other => name.push(other),
                    }
                }
                if !closed {
                    return Err(RuleError::UnbalancedBrace {
                        template: template.to_owned(),
                        brace: '{',
                        position: position + 1,
                    });
                }
                let Some(placeholder) = Placeholder::from_name(&name) else {
                    return Err(RuleError::UnknownPlaceholder {
                        template: template.to_owned(),
                        name,
                    });
                };
                if tokens.contains(&Token::Placeholder(placeholder)) {
                    return Err(RuleError::DuplicatePlaceholder {
                        template: template.to_owned(),
                        name,
                    });
                }
                if literal.is_empty() {
                    if let Some(Token::Placeholder(previous)) = tokens.last() {
                        return Err(RuleError::AdjacentPlaceholders {
                            template: template.to_owned(),
                            first: previous.name().to_owned(),
                            second: name,
                        });
                    }
                } else {
                    tokens.push(Token::Literal(std::mem::take(&mut literal)));
                }
                tokens.push(Token::Placeholder(placeholder));
            }
            '}' => {
                return Err(RuleError::UnbalancedBrace {
                    template: template.to_owned(),
                    brace: '}',
                    position: position + 1,
                });
            }
            '*' => {
                if !literal.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut literal)));
                }
                tokens.push(Token::Star);
            }
            other => literal.push(other),
        }
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    Ok(tokens)
}

fn template_to_regex(tokens: &[Token]) -> String {
    // Anchored at both ends: a template describes the whole relative path.
    let mut source = String::from(r"\A");
    for token in tokens {
        match token {
            Token::Literal(text) => source.push_str(&regex::escape(text)),
            Token::Placeholder(p) => source.push_str(p.regex()),
            Token::Star => source.push_str("[^/]*?"),
        }
    }
    source.push_str(r"\z");
    source
}

/// Whether every match of this (already valid) regex must contain a `/`.
///
/// A sound under-approximation: it looks only for a `/` (or `\/`) at nesting depth 0, outside
/// character classes, not followed by a quantifier that allows zero repetitions, in a regex
/// with no top-level alternation and no verbose mode (where `#` starts a comment).
fn regex_requires_slash(source: &str) -> bool {
    let chars: Vec<char> = source.chars().collect();
    let mut depth = 0usize;
    let mut class_depth = 0usize;
    let mut found = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut slash_at_top = false;
        match c {
            '\\' => {
                if chars.get(i + 1) == Some(&'/') && depth == 0 && class_depth == 0 {
                    slash_at_top = true;
                }
                i += 1;
            }
            '[' => {
                class_depth += 1;
                // A ']' right after '[' or '[^' is a literal, not the end of the class.
                if chars.get(i + 1) == Some(&'^') {
                    i += 1;
                }
                if chars.get(i + 1) == Some(&']') {
                    i += 1;
                }
            }
            ']' if class_depth > 0 => class_depth -= 1,
            _ if class_depth > 0 => {}
            '(' => {
                if chars.get(i + 1) == Some(&'?') {
                    let flags: String = chars[i + 2..]
                        .iter()
                        .take_while(|f| f.is_ascii_alphabetic() || **f == '-')
                        .collect();
                    if flags.contains('x') && !flags.starts_with('P') {
                        return false;
                    }
                }
                depth += 1;
            }
            ')' => depth = depth.saturating_sub(1),
            '|' if depth == 0 => return false,
            '/' if depth == 0 => slash_at_top = true,
            _ => {}
        }
        if slash_at_top && !matches!(chars.get(i + 1), Some('?' | '*' | '{')) {
            found = true;
        }
        i += 1;
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its message
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn types() -> Vec<String> {
        ["Build", "Gate", "Deploy", "Test", "Normal"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn template(t: &str) -> Rule {
        Rule::compile(Pattern::Template(t.into()), None).unwrap()
    }

    fn set(rules: Vec<Rule>) -> RuleSet {
        RuleSet::new(rules, types())
    }

    fn named(plugin_name: &str, business_type: &str, rule: usize) -> Derivation {
        Derivation::Named {
            rule,
            plugin_name: plugin_name.into(),
            business_type: business_type.into(),
            version: None,
        }
    }

    const SPEC_REGEX: &str =
        r"^(?P<plugin_name>[A-Za-z0-9_-]{1,50})-(?P<version>\d+\.\d+\.\d+)\.zip$";

    fn spec_rules() -> RuleSet {
        set(vec![
            template("{plugin_name}__{business_type}.zip"),
            template("{business_type}/{plugin_name}.zip"),
            Rule::compile(Pattern::Regex(SPEC_REGEX.into()), Some("Normal".into())).unwrap(),
        ])
    }

    #[test]
    fn template_names_a_file() {
        assert_eq!(
            spec_rules().derive("demo_task__Deploy.zip"),
            named("demo_task", "Deploy", 0)
        );
    }

    #[test]
    fn separator_inside_plugin_name_goes_to_plugin_name() {
        assert_eq!(
            spec_rules().derive("my__task__Deploy.zip"),
            named("my__task", "Deploy", 0)
        );
        let mirrored = set(vec![template("{business_type}__{plugin_name}.zip")]);
        assert_eq!(
            mirrored.derive("Deploy__my__task.zip"),
            named("my__task", "Deploy", 0)
        );
    }

    #[test]
    fn recursive_template_uses_folder_as_business_type() {
        assert_eq!(
            spec_rules().derive("Deploy/my_task.zip"),
            named("my_task", "Deploy", 1)
        );
        assert!(template("{business_type}/{plugin_name}.zip").needs_subfolders());
        assert!(!template("{plugin_name}__{business_type}.zip").needs_subfolders());
    }

    #[test]
    fn placeholders_stay_within_one_segment() {
        let rules = set(vec![template("{plugin_name}__{business_type}.zip")]);
        assert!(matches!(
            rules.derive("sub/x__Deploy.zip"),
            Derivation::NoMatch { .. }
        ));
    }

    #[test]
    fn spec_regex_with_constant_business_type() {
        assert_eq!(
            spec_rules().derive("my-ext-1.2.3.zip"),
            Derivation::Named {
                rule: 2,
                plugin_name: "my-ext".into(),
                business_type: "Normal".into(),
                version: Some("1.2.3".into()),
            }
        );
    }

    #[test]
    fn business_type_is_case_insensitive_and_canonicalised() {
        assert_eq!(
            spec_rules().derive("x__deploy.zip"),
            named("x", "Deploy", 0)
        );
        assert_eq!(spec_rules().derive("TEST/x.zip"), named("x", "Test", 1));
    }

    #[test]
    fn constant_is_canonicalised_too() {
        let rules = set(vec![
            Rule::compile(
                Pattern::Template("{plugin_name}.zip".into()),
                Some("gate".into()),
            )
            .unwrap(),
        ]);
        assert_eq!(rules.derive("x.zip"), named("x", "Gate", 0));
    }

    #[test]
    fn captured_business_type_wins_over_constant() {
        let rule = Rule::compile(
            Pattern::Template("{plugin_name}__{business_type}.zip".into()),
            Some("Normal".into()),
        )
        .unwrap();
        assert!(rule.captures_business_type());
        assert_eq!(
            set(vec![rule]).derive("x__Build.zip"),
            named("x", "Build", 0)
        );
    }

    #[test]
    fn optional_regex_group_falls_back_to_constant() {
        let rule = Rule::compile(
            Pattern::Regex(
                r"^(?P<plugin_name>[a-z]+)(?:__(?P<business_type>[A-Za-z]+))?\.zip$".into(),
            ),
            Some("Normal".into()),
        )
        .unwrap();
        let rules = set(vec![rule]);
        assert_eq!(rules.derive("x__Build.zip"), named("x", "Build", 0));
        assert_eq!(rules.derive("y.zip"), named("y", "Normal", 0));
    }

    #[test]
    fn star_matches_within_a_segment() {
        let rules = set(vec![template("*-{plugin_name}__{business_type}-*.zip")]);
        assert_eq!(
            rules.derive("20260101-my-task__Build-build42.zip"),
            named("my-task", "Build", 0)
        );
        assert_eq!(rules.derive("-x__Build-.zip"), named("x", "Build", 0));
        assert!(matches!(
            rules.derive("a/b-x__Build-c.zip"),
            Derivation::NoMatch { .. }
        ));
    }

    #[test]
    fn version_placeholder() {
        let rules = set(vec![template(
            "{business_type}/{plugin_name}-{version}.zip",
        )]);
        assert_eq!(
            rules.derive("Build/my-task-1.20.3.zip"),
            Derivation::Named {
                rule: 0,
                plugin_name: "my-task".into(),
                business_type: "Build".into(),
                version: Some("1.20.3".into()),
            }
        );
        assert!(matches!(
            rules.derive("Build/my-task-1.2.zip"),
            Derivation::NoMatch { .. }
        ));
    }

    #[test]
    fn template_is_anchored_and_literal() {
        let rules = set(vec![template("{plugin_name}.{business_type}.zip")]);
        assert!(matches!(
            rules.derive("x.Build.zip.part"),
            Derivation::NoMatch { .. }
        ));
        assert!(matches!(
            rules.derive("prefix/x.Build.zip"),
            Derivation::NoMatch { .. }
        ));
        // '.' is literal, not "any character".
        assert!(matches!(
            rules.derive("xaBuildazip"),
            Derivation::NoMatch { .. }
        ));
        assert_eq!(rules.derive("x.Build.zip"), named("x", "Build", 0));
    }

    #[test]
    fn bad_plugin_name_is_invalid_not_no_match() {
        let d = spec_rules().derive("a b__Deploy.zip");
        assert_eq!(
            d,
            Derivation::Invalid {
                rule: 0,
                reason: r#"plugin_name "a b" is not 1-50 of A-Z a-z 0-9 _ -"#.into()
            }
        );
        let long = format!("{}__Build.zip", "a".repeat(51));
        assert!(matches!(
            spec_rules().derive(&long),
            Derivation::Invalid { rule: 0, .. }
        ));
        let fifty = format!("{}__Build.zip", "a".repeat(50));
        assert!(matches!(
            spec_rules().derive(&fifty),
            Derivation::Named { .. }
        ));
    }

    #[test]
    fn bad_business_type_is_invalid_and_does_not_fall_through() {
        // Rule 1 alone would name this file; rule 0 matched first, so its verdict stands.
        let rules = set(vec![
            template("{plugin_name}__{business_type}.zip"),
            Rule::compile(
                Pattern::Template("{plugin_name}__*.zip".into()),
                Some("Build".into()),
            )
            .unwrap(),
        ]);
        assert_eq!(
            rules.derive("x__Foo.zip"),
            Derivation::Invalid {
                rule: 0,
                reason: r#"business type "Foo" is not one of Build, Gate, Deploy, Test, Normal"#
                    .into()
            }
        );
    }

    #[test]
    fn no_business_types_configured() {
        let rules = RuleSet::new(vec![template("{plugin_name}__{business_type}.zip")], vec![]);
        let Derivation::Invalid { reason, .. } = rules.derive("x__Build.zip") else {
            panic!("expected Invalid");
        };
        assert!(reason.contains("lists no business_types"), "{reason}");
    }

    #[test]
    fn no_match_reasons() {
        assert_eq!(
            spec_rules().derive("x.txt"),
            Derivation::NoMatch {
                reason: r#""x.txt" matches none of the 3 rules of this watch"#.into()
            }
        );
        assert_eq!(
            set(vec![template("{plugin_name}__{business_type}.zip")]).derive("x.txt"),
            Derivation::NoMatch {
                reason: r#""x.txt" does not match the only rule of this watch (template "{plugin_name}__{business_type}.zip")"#.into()
            }
        );
        assert_eq!(
            set(vec![]).derive("x.txt"),
            Derivation::NoMatch {
                reason: r#""x.txt" cannot be named: this watch has no rules"#.into()
            }
        );
    }

    #[test]
    fn regex_is_anchored_only_as_written() {
        let rules = set(vec![
            Rule::compile(
                Pattern::Regex(r"(?P<plugin_name>[a-z]+)_(?P<business_type>[A-Za-z]+)".into()),
                None,
            )
            .unwrap(),
        ]);
        assert_eq!(rules.derive("00-abc_Build.zip"), named("abc", "Build", 0));
    }

    #[test]
    fn regex_plugin_name_is_validated_too() {
        let rules = set(vec![
            Rule::compile(
                Pattern::Regex(r"^(?P<plugin_name>.*)\.zip$".into()),
                Some("Test".into()),
            )
            .unwrap(),
        ]);
        assert!(matches!(
            rules.derive("a.b.zip"),
            Derivation::Invalid { .. }
        ));
        assert!(matches!(rules.derive(".zip"), Derivation::Invalid { .. }));
    }

    #[test]
    fn optional_plugin_name_group_that_did_not_take_part_is_invalid() {
        let rules = set(vec![
            Rule::compile(
                Pattern::Regex(r"^(?:(?P<plugin_name>[a-z]+)_)?x\.zip$".into()),
                Some("Test".into()),
            )
            .unwrap(),
        ]);
        assert_eq!(rules.derive("a_x.zip"), named("a", "Test", 0));
        assert!(matches!(
            rules.derive("x.zip"),
            Derivation::Invalid { rule: 0, .. }
        ));
    }

    #[test]
    fn describe() {
        assert_eq!(
            template("{plugin_name}__{business_type}.zip").describe(),
            r#"template "{plugin_name}__{business_type}.zip""#
        );
        let rule = Rule::compile(Pattern::Regex(SPEC_REGEX.into()), Some("Normal".into())).unwrap();
        assert_eq!(
            rule.describe(),
            format!("regex '{SPEC_REGEX}', business_type = \"Normal\"")
        );
        assert_eq!(rule.constant_business_type(), Some("Normal"));
    }

    fn compile_err(p: Pattern, constant: Option<&str>) -> RuleError {
        Rule::compile(p, constant.map(String::from)).unwrap_err()
    }

    #[test]
    fn template_compile_errors() {
        use Pattern::Template as T;
        assert!(matches!(
            compile_err(T("{plugin}__{business_type}.zip".into()), None),
            RuleError::UnknownPlaceholder { name, .. } if name == "plugin"
        ));
        assert!(matches!(
            compile_err(T("{}{plugin_name}".into()), None),
            RuleError::UnknownPlaceholder { name, .. } if name.is_empty()
        ));
        assert!(matches!(
            compile_err(T("{plugin_name__{business_type}.zip".into()), None),
            RuleError::UnbalancedBrace {
                brace: '{',
                position: 1,
                ..
            }
        ));
        assert!(matches!(
            compile_err(T("{plugin_name}}.zip".into()), Some("Build")),
            RuleError::UnbalancedBrace {
                brace: '}',
                position: 14,
                ..
            }
        ));
        assert!(matches!(
            compile_err(T("x{plugin_name".into()), None),
            RuleError::UnbalancedBrace {
                brace: '{',
                position: 2,
                ..
            }
        ));
        assert!(matches!(
            compile_err(T("{plugin_name}-{plugin_name}".into()), Some("Build")),
            RuleError::DuplicatePlaceholder { name, .. } if name == "plugin_name"
        ));
        assert!(matches!(
            compile_err(T("{plugin_name}{business_type}.zip".into()), None),
            RuleError::AdjacentPlaceholders { .. }
        ));
        assert!(matches!(
            compile_err(T("{business_type}.zip".into()), None),
            RuleError::NoPluginNamePlaceholder { .. }
        ));
        assert!(matches!(
            compile_err(T("".into()), Some("Build")),
            RuleError::NoPluginNamePlaceholder { .. }
        ));
        assert!(matches!(
            compile_err(T("{plugin_name}.zip".into()), None),
            RuleError::NoBusinessTypePlaceholder { .. }
        ));
        assert_eq!(
            compile_err(T("{plugin_name}.zip".into()), Some("")),
            RuleError::EmptyBusinessType
        );
    }

    #[test]
    fn regex_compile_errors() {
        use Pattern::Regex as R;
        let err = compile_err(R("(?P<plugin_name>[a-z".into()), Some("Build"));
        assert!(matches!(&err, RuleError::InvalidRegex { .. }));
        assert!(
            err.to_string().contains("unclosed character class"),
            "{err}"
        );
        assert!(matches!(
            compile_err(R(r"^(?P<name>\w+)\.zip$".into()), Some("Build")),
            RuleError::UnknownGroup { name, .. } if name == "name"
        ));
        assert!(matches!(
            compile_err(R(r"^(\w+)\.zip$".into()), Some("Build")),
            RuleError::NoPluginNameGroup { .. }
        ));
        assert!(matches!(
            compile_err(R(r"^(?P<plugin_name>\w+)\.zip$".into()), None),
            RuleError::NoBusinessTypeGroup { .. }
        ));
        assert!(matches!(
            compile_err(R(r"(?P<plugin_name>\w{1000}){1000}".into()), Some("Build")),
            RuleError::TooComplex { .. }
        ));
    }

    #[test]
    fn error_messages_read_as_sentences() {
        let err = compile_err(Pattern::Template("{plugin_name}.zip".into()), None);
        assert_eq!(
            err.to_string(),
            r#"template "{plugin_name}.zip" gives no business type: add a {business_type} placeholder or a constant business_type = "..." to the rule"#
        );
        let err = compile_err(Pattern::Template("{nme}.zip".into()), None);
        assert_eq!(
            err.to_string(),
            "template \"{nme}.zip\" uses the unknown placeholder {nme}; the placeholders are \
             {plugin_name}, {business_type} and {version}"
        );
    }

    #[test]
    fn spec_regex_compiles_within_limit_and_unicode_word_class_too() {
        Rule::compile(Pattern::Regex(SPEC_REGEX.into()), Some("Normal".into())).unwrap();
        Rule::compile(
            Pattern::Regex(r"^(?P<plugin_name>\w{1,50})__(?P<business_type>\w+)\.zip$".into()),
            None,
        )
        .unwrap();
    }

    /// Regression (found by fuzzing the rules): `(?i)` was refused, for want of the regex
    /// crate's case tables.
    #[test]
    fn a_case_insensitive_regex_compiles_and_matches() {
        let rule = Rule::compile(
            Pattern::Regex(r"(?i)^(?P<plugin_name>[a-z_]+)\.ZIP$".into()),
            Some("Build".into()),
        )
        .unwrap();
        assert_eq!(
            set(vec![rule]).derive("My_Task.zip"),
            named("My_Task", "Build", 0)
        );
    }

    #[test]
    fn regex_needs_subfolders_is_conservative() {
        let needs = |r: &str| {
            Rule::compile(Pattern::Regex(r.into()), Some("Build".into()))
                .unwrap()
                .needs_subfolders()
        };
        assert!(needs(r"^(?P<business_type>\w+)/(?P<plugin_name>\w+)\.zip$"));
        assert!(needs(r"^[a-z]+\/(?P<plugin_name>\w+)"));
        assert!(!needs(SPEC_REGEX));
        assert!(!needs(r"^a/(?P<plugin_name>\w+)|^(?P<business_type>b)"));
        assert!(!needs(r"^a/?(?P<plugin_name>\w+)"));
        assert!(!needs(r"^(a/)?(?P<plugin_name>\w+)"));
        assert!(!needs(r"^[/a](?P<plugin_name>\w+)"));
        assert!(!needs(r"^[]/](?P<plugin_name>\w+)"));
        assert!(!needs(r"(?x) (?P<plugin_name>\w+) \# /"));
        assert!(needs(r"(?P<plugin_name>[a-z]+)(?i:/)?/"));
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9_./{}* -]{0,60}",
            "(Build|deploy|GATE|Foo|/|_|__|\\.|zip|\\{|\\}|[a-z]{1,8}|[0-9]{1,3}|é|\u{0}){0,12}",
        ]
    }

    fn template_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(\\{plugin_name\\}|\\{business_type\\}|\\{version\\}|\\{|\\}|\\*|/|__|\\.zip|[a-z]{1,4}|\\\\|\\(|\\[|\\$){0,10}",
        ]
    }

    proptest! {
        #[test]
        fn derive_never_panics_and_named_is_always_valid(name in name_strategy()) {
            let mut rules = spec_rules().rules().to_vec();
            rules.push(template("*{plugin_name}*.{business_type}*"));
            rules.push(
                Rule::compile(Pattern::Regex(r"(?P<plugin_name>.*)".into()), Some("build".into()))
                    .unwrap(),
            );
            let rules = set(rules);
            match rules.derive(&name) {
                Derivation::Named { plugin_name, business_type, rule, .. } => {
                    prop_assert!(is_valid_plugin_name(&plugin_name));
                    prop_assert!(types().contains(&business_type));
                    prop_assert!(rule < rules.rules().len());
                }
                Derivation::Invalid { reason, rule } => {
                    prop_assert!(!reason.is_empty());
                    prop_assert!(rule < rules.rules().len());
                }
                Derivation::NoMatch { reason } => prop_assert!(!reason.is_empty()),
            }
        }

        #[test]
        fn compile_never_panics(t in template_strategy(), constant in proptest::option::of("[A-Za-z]{0,6}")) {
            if let Ok(rule) = Rule::compile(Pattern::Template(t.clone()), constant.clone()) {
                // Whatever compiled must also be usable.
                let _ = set(vec![rule]).derive(&t);
            }
            let _ = Rule::compile(Pattern::Regex(t), constant);
        }

        #[test]
        fn templates_round_trip(
            plugin_name in "[A-Za-z0-9_-]{1,50}",
            business_type in proptest::sample::select(types()),
        ) {
            let forward = set(vec![template("{plugin_name}__{business_type}.zip")]);
            prop_assert_eq!(
                forward.derive(&format!("{plugin_name}__{business_type}.zip")),
                named(&plugin_name, &business_type, 0)
            );
            let mirrored = set(vec![template("{business_type}__{plugin_name}.zip")]);
            prop_assert_eq!(
                mirrored.derive(&format!("{business_type}__{plugin_name}.zip")),
                named(&plugin_name, &business_type, 0)
            );
            let folder = set(vec![template("{business_type}/{plugin_name}.zip")]);
            prop_assert_eq!(
                folder.derive(&format!("{}/{plugin_name}.zip", business_type.to_uppercase())),
                named(&plugin_name, &business_type, 0)
            );
        }
    }
}
