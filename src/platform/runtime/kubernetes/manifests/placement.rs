//! Where an instance's pods may run: node selector and tolerations, parsed from kubefn's flags.

use super::*;

/// Which nodes function pods may run on, as OpenFaaS's constraints and Knative's node
/// selectors offer: a dedicated node pool is selected by its labels and its taints tolerated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Labels a node must carry.
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Taints the pods tolerate.
    pub tolerations: Vec<Toleration>,
}

/// One tolerated taint: `key`, `key=value` or either with `:Effect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    /// The taint's key.
    pub key: String,
    /// Its value; `None` tolerates any value.
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; `None` tolerates every effect.
    pub effect: Option<String>,
}

/// A placement setting that cannot be read; the message names the setting and the form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{setting}: {text:?} is not {form}")]
pub struct PlacementError {
    setting: &'static str,
    text: String,
    form: &'static str,
}

impl Placement {
    /// Reads `key=value,…` labels.
    pub fn parse_node_selector(text: &str) -> Result<std::collections::BTreeMap<String, String>, PlacementError> {
        let wrong =
            || PlacementError { setting: "node selector", text: text.into(), form: "a list of key=value labels" };
        text.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.trim().to_string())),
                _ => Err(wrong()),
            })
            .collect()
    }

    /// Reads `key[=value][:Effect],…` tolerations.
    pub fn parse_tolerations(text: &str) -> Result<Vec<Toleration>, PlacementError> {
        let wrong = || PlacementError {
            setting: "tolerations",
            text: text.into(),
            form: "a list of key[=value][:NoSchedule|PreferNoSchedule|NoExecute]",
        };
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let (taint, effect) = match item.rsplit_once(':') {
                    Some((taint, effect)) if ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) => {
                        (taint, Some(effect.to_string()))
                    }
                    Some(_) => return Err(wrong()),
                    None => (item, None),
                };
                let (key, value) = match taint.split_once('=') {
                    Some((key, value)) => (key, Some(value.to_string())),
                    None => (taint, None),
                };
                if key.is_empty() {
                    return Err(wrong());
                }
                Ok(Toleration { key: key.to_string(), value, effect })
            })
            .collect()
    }

    pub(super) fn apply_to(&self, pod: &mut Value) {
        if !self.node_selector.is_empty() {
            pod["nodeSelector"] = json!(self.node_selector);
        }
        if !self.tolerations.is_empty() {
            let tolerations: Vec<Value> = self
                .tolerations
                .iter()
                .map(|t| {
                    let mut toleration =
                        json!({ "key": t.key, "operator": if t.value.is_some() { "Equal" } else { "Exists" } });
                    if let Some(value) = &t.value {
                        toleration["value"] = json!(value);
                    }
                    if let Some(effect) = &t.effect {
                        toleration["effect"] = json!(effect);
                    }
                    toleration
                })
                .collect();
            pod["tolerations"] = json!(tolerations);
        }
    }
}
