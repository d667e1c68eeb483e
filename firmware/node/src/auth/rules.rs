//! Who may watch a stream: a list of rules, any one of which lets a person in. The origin
//! box names them for its stream (`watch` in its cambox.toml) and they travel with the
//! stream's catalog entry, so whichever box serves a viewer checks the origin's rule; a
//! stream whose origin names none falls back to the mesh-wide default (`watch_default`,
//! the same on every card), and that to everybody who logs in.

use super::sessions::Person;

/// Whether every rule is one cambox understands.
pub fn check(rules: &[String]) -> Result<(), String> {
    for r in rules {
        let ok = r == "*"
            || ["site:", "group:", "user:"].iter().any(|p| {
                r.strip_prefix(p)
                    .is_some_and(|v| !v.is_empty() && !v.contains(','))
            });
        if !ok {
            return Err(format!(
                "'{r}' is not a rule: use *, site:NAME, group:NAME or user:NAME"
            ));
        }
    }
    Ok(())
}

/// Whether `person`, served by a box of `site`, may watch a stream with `rule` (comma
/// separated; empty: `default`, and an empty default lets everybody in).
pub fn allows(rule: &str, default: &str, person: &Person, site: &str) -> bool {
    let rules = if rule.is_empty() { default } else { rule };
    if rules.is_empty() {
        return true;
    }
    rules.split(',').map(str::trim).any(|r| {
        r == "*"
            || r.strip_prefix("site:") == Some(site)
            || r.strip_prefix("user:") == Some(person.name.as_str())
            || r.strip_prefix("group:")
                .is_some_and(|g| person.groups.iter().any(|x| x == g))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::accounts::Role;

    fn person(name: &str, groups: &[&str]) -> Person {
        Person {
            name: name.into(),
            role: Role::Viewer,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            via: "local",
        }
    }

    #[test]
    fn any_rule_lets_in_and_an_empty_rule_falls_back_to_the_default() {
        let bob = person("bob", &["staff"]);
        assert!(allows("", "", &bob, "berlin"));
        assert!(allows("*", "group:none", &bob, "berlin"));
        assert!(allows("group:ops,site:berlin", "", &bob, "berlin"));
        assert!(!allows("group:ops,site:munich", "", &bob, "berlin"));
        assert!(allows("group:staff", "", &bob, "munich"));
        assert!(allows("user:bob", "", &bob, "munich"));
        assert!(!allows("user:bobby", "", &bob, "munich"));
        assert!(!allows("", "group:ops", &bob, "berlin"));
        assert!(allows(
            "",
            "group:ops",
            &person("carol", &["ops"]),
            "berlin"
        ));
    }

    #[test]
    fn rules_are_checked_when_configured() {
        let ok = ["*", "site:berlin", "group:ops", "user:alice"].map(String::from);
        assert!(check(&ok).is_ok());
        for bad in ["", "site:", "team:ops", "group:a,b"] {
            assert!(check(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }
}
