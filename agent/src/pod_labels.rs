//! Pod labels as Prometheus labels (`metadata.pod_labels`): the name each is exported under,
//! and the check that an allowlist gives valid, distinct names.

use std::collections::HashMap;

/// The longest pod label key Kubernetes accepts: a 253-byte DNS prefix, `/`, a 63-byte name.
pub const MAX_POD_LABEL_KEY_BYTES: usize = 317;
/// Kubernetes label values are at most 63 bytes; a longer one (a sandbox made without kubelet)
/// is cut there so that no series carries more.
pub const MAX_POD_LABEL_VALUE_BYTES: usize = 63;

/// A Prometheus label name for a pod label: `label_` and the name with every character outside
/// `[a-zA-Z0-9_]` turned into `_` (a leading digit or `__` stay behind the prefix, so the name
/// is always valid and never one of Prometheus' reserved `__` names).
pub fn label_name(pod_label: &str) -> String {
    let cleaned: String =
        pod_label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("label_{cleaned}")
}

/// Checks `metadata.pod_labels`: keys Kubernetes could have, and no two exported under one
/// label name (`a.b` and `a_b` are both `label_a_b`), which would repeat a label in a series.
pub fn check_pod_labels(keys: &[String]) -> Result<(), String> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for key in keys {
        if key.is_empty() || key.len() > MAX_POD_LABEL_KEY_BYTES {
            return Err(format!(
                "metadata.pod_labels: {key:?} is no Kubernetes label key (1 to {MAX_POD_LABEL_KEY_BYTES} bytes)"
            ));
        }
        let name = label_name(key);
        if let Some(other) = seen.insert(name.clone(), key) {
            return Err(format!(
                "metadata.pod_labels: {other:?} and {key:?} are both exported as {name}: keep one"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid Prometheus label name that is not reserved.
    fn valid(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__")
    }

    #[test]
    fn hostile_pod_label_keys_become_valid_bounded_label_names() {
        let long = format!("{}/{}", "d".repeat(253), "n".repeat(63));
        for (key, expected) in [
            ("app.kubernetes.io/name", "label_app_kubernetes_io_name".to_owned()),
            ("名前/ß-é", format!("label_{}", "_".repeat(6))),
            ("1st", "label_1st".to_owned()),
            ("__name__", "label___name__".to_owned()),
            ("__meta_kubernetes_pod", "label___meta_kubernetes_pod".to_owned()),
            ("le", "label_le".to_owned()),
            ("a\"b\nc}", "label_a_b_c_".to_owned()),
            (long.as_str(), format!("label_{}_{}", "d".repeat(253), "n".repeat(63))),
        ] {
            let name = label_name(key);
            assert_eq!(name, expected, "{key:?}");
            assert!(valid(&name), "{name:?}");
            assert!(name.len() <= "label_".len() + MAX_POD_LABEL_KEY_BYTES);
        }
        assert_eq!(check_pod_labels(&[long.clone(), "app".into()]), Ok(()));
        let too_long = format!("{long}x");
        assert!(check_pod_labels(&[too_long]).unwrap_err().contains("no Kubernetes label key"));
        assert!(check_pod_labels(&[String::new()]).is_err());
        let clash = check_pod_labels(&["app.name".into(), "app_name".into()]).unwrap_err();
        assert!(clash.contains("label_app_name"), "{clash}");
        assert!(check_pod_labels(&["é".into(), "ü".into()]).is_err(), "both label__");
    }
}
