//! Which names get a series of their own: label values that churn (a veth per pod, a transient
//! scope per session or job) would make a new series for every one that ever existed; those
//! that match an exclude pattern are counted together under one bounded value instead.

/// `exclude` patterns, with `include` as exceptions to them; `*` matches any run of characters
/// (`/` too) and `?` any one character.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl LabelFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        Self { include: include.to_vec(), exclude: exclude.to_vec() }
    }

    /// Whether `name` is a series of its own (else it is counted in the aggregate).
    pub fn keeps(&self, name: &str) -> bool {
        !self.exclude.iter().any(|p| matches(p, name)) || self.include.iter().any(|p| matches(p, name))
    }
}

/// Glob match of `pattern` against all of `text`: `*` any run, `?` any one character.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with backtracking to the last `*` only: linear in practice, never
    // exponential, whatever the name (names are chosen by tenants).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if *c == '?' || *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(matches("veth*", "veth1a2b3c"));
        assert!(matches("veth*", "veth"));
        assert!(!matches("veth*", "xveth0"));
        assert!(matches("/system.slice/run-*.scope", "/system.slice/run-r3b2.scope"));
        assert!(!matches("/system.slice/run-*.scope", "/system.slice/run-r3b2.service"));
        assert!(matches("/user.slice/*.scope", "/user.slice/user-0.slice/session-4.scope"));
        assert!(matches("eth?", "eth0") && !matches("eth?", "eth10"));
        assert!(matches("*", "") && !matches("?", ""));
        assert!(matches("a*b*c", "aXXbYYbZc") && !matches("a*b*c", "aXXbYY"));
        // Backtracking is bounded: a long name against many stars answers at once.
        let long = "a".repeat(10_000);
        assert!(!matches("*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn include_patterns_are_exceptions_to_exclude_ones() {
        let filter = LabelFilter::new(&["veth-keep*".into()], &["veth*".into(), "cali*".into()]);
        assert!(filter.keeps("eth0") && filter.keeps("veth-keep0"));
        assert!(!filter.keeps("veth12ab") && !filter.keeps("cali0ff"));
        assert!(LabelFilter::default().keeps("veth0"));
    }
}
