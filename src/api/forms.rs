//! The register/edit form as the pages submit it (every input is text), and its parsing into a
//! [`FunctionSpec`] with every invalid field named.

use crate::platform::model::Named;
use crate::platform::model::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT_S, FieldError, FunctionSpec, InvokeAccess, InvokePolicy, Language,
    Resources, ScalingPolicy, SecretUse, ServiceKind, ServiceSpec, Visibility,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The register/edit form as the browser submits it: every input is text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionForm {
    /// Function name.
    pub name: String,
    /// `python`, `node` or `image`.
    pub runtime: String,
    /// Entry point, empty to detect one.
    #[serde(default)]
    pub handler: String,
    /// Source code.
    #[serde(default)]
    pub source: String,
    /// requirements.txt or package.json.
    #[serde(default)]
    pub requirements: String,
    /// Container image, for image functions.
    #[serde(default)]
    pub image: String,
    /// Image functions: the secret with the registry credentials to pull the image with.
    #[serde(default)]
    pub registry_secret: String,
    /// One `NAME=value` per line.
    #[serde(default)]
    pub env: String,
    /// One secret per line: its name, or its name and an environment variable (`db-password DB_PASSWORD`).
    #[serde(default)]
    pub secrets: String,
    /// `public` or `private`.
    #[serde(default)]
    pub visibility: String,
    /// CPU request.
    #[serde(default)]
    pub cpu: String,
    /// Memory request.
    #[serde(default)]
    pub memory: String,
    /// CPU limit.
    #[serde(default)]
    pub cpu_limit: String,
    /// Memory limit.
    #[serde(default)]
    pub memory_limit: String,
    /// Fewest replicas.
    #[serde(default)]
    pub min: String,
    /// Most replicas.
    #[serde(default)]
    pub max: String,
    /// CPU target in percent, empty for none.
    #[serde(default)]
    pub target_cpu_percent: String,
    /// Memory target in percent, empty for none.
    #[serde(default)]
    pub target_memory_percent: String,
    /// Requests in flight per replica to aim for, empty for none.
    #[serde(default)]
    pub target_requests_in_flight: String,
    /// Idle seconds before scaling to zero, empty for never.
    #[serde(default)]
    pub scale_to_zero_after_s: String,
    /// Service type.
    #[serde(default)]
    pub service_type: String,
    /// Invocation timeout in seconds.
    #[serde(default)]
    pub timeout_s: String,
    /// `owner`, `token` or `public`.
    #[serde(default)]
    pub invoke_access: String,
    /// Request body limit in bytes, empty for the default.
    #[serde(default)]
    pub max_body_bytes: String,
    /// Requests in flight per replica, empty or 0 for no limit.
    #[serde(default)]
    pub max_in_flight_per_replica: String,
}

impl FunctionForm {
    /// The form pre-filled from a spec (the edit page).
    pub fn from_spec(spec: &FunctionSpec) -> FunctionForm {
        let optional = |value: Option<String>| value.unwrap_or_default();
        FunctionForm {
            name: spec.name.clone(),
            runtime: spec.runtime.as_str().into(),
            handler: optional(spec.handler.clone()),
            source: spec.source.clone(),
            requirements: spec.requirements.clone(),
            image: optional(spec.image.clone()),
            registry_secret: optional(spec.registry_secret.clone()),
            env: spec.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect(),
            secrets: spec
                .secrets
                .iter()
                .map(|secret| match &secret.env {
                    Some(env) => format!("{} {env}\n", secret.name),
                    None => format!("{}\n", secret.name),
                })
                .collect(),
            visibility: spec.visibility.as_str().into(),
            cpu: spec.resources.cpu.clone(),
            memory: spec.resources.memory.clone(),
            cpu_limit: spec.resources.cpu_limit.clone(),
            memory_limit: spec.resources.memory_limit.clone(),
            min: spec.scaling.min.to_string(),
            max: spec.scaling.max.to_string(),
            target_cpu_percent: optional(spec.scaling.target_cpu_percent.map(|p| p.to_string())),
            target_memory_percent: optional(spec.scaling.target_memory_percent.map(|p| p.to_string())),
            target_requests_in_flight: optional(spec.scaling.target_requests_in_flight.map(|n| n.to_string())),
            scale_to_zero_after_s: optional(spec.scaling.scale_to_zero_after_s.map(|s| s.to_string())),
            service_type: spec.service.kind.as_str().into(),
            timeout_s: spec.timeout_s.to_string(),
            invoke_access: spec.invoke.access.as_str().into(),
            max_body_bytes: spec.invoke.max_body_bytes.to_string(),
            max_in_flight_per_replica: spec.invoke.max_in_flight_per_replica.to_string(),
        }
    }

    /// The defaults a new function starts from.
    pub fn blank() -> FunctionForm {
        FunctionForm::from_spec(&FunctionSpec {
            handler: Some("handle".into()),
            visibility: Visibility::Private,
            ..FunctionSpec::new("", Language::Python, "def handle(req):\n    return \"Hello, \" + (req or \"world\")\n")
        })
    }

    /// Parses the text inputs into a spec, naming every input that is not understood.
    /// Semantic checks (ranges, quantities) are the platform's validation, not this.
    pub fn into_spec(self) -> Result<FunctionSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        let runtime = Language::parse(self.runtime.trim()).unwrap_or_else(|| {
            errors.push(FieldError::new("runtime", "runtime must be python, node or image"));
            Language::Python
        });
        let visibility = match self.visibility.trim() {
            "" => Visibility::Private,
            text => Visibility::parse(text).unwrap_or_else(|| {
                errors.push(FieldError::new("visibility", "visibility must be public or private"));
                Visibility::Private
            }),
        };
        let kind = match self.service_type.trim() {
            "" => ServiceKind::NodePort,
            text => ServiceKind::parse(text).unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "service.type",
                    "service type must be NodePort, ClusterIP, LoadBalancer or ExternalName",
                ));
                ServiceKind::NodePort
            }),
        };
        let access = match self.invoke_access.trim() {
            "" => InvokeAccess::Owner,
            text => InvokeAccess::parse(text).unwrap_or_else(|| {
                errors.push(FieldError::new("invoke.access", "invoke.access must be owner, token or public"));
                InvokeAccess::Owner
            }),
        };
        let mut env = BTreeMap::new();
        for (index, line) in self.env.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((name, value)) => {
                    env.insert(name.trim().to_string(), value.to_string());
                }
                None => errors.push(FieldError::new(
                    "env",
                    format!("env line {} must look like NAME=value (got {line:?})", index + 1),
                )),
            }
        }
        let mut secrets = Vec::new();
        for (index, line) in self.secrets.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                [name] => secrets.push(SecretUse { name: name.to_string(), env: None }),
                [name, env] => secrets.push(SecretUse { name: name.to_string(), env: Some(env.to_string()) }),
                _ => errors.push(FieldError::new(
                    "secrets",
                    format!(
                        "secrets line {} must be a name, or a name and an environment variable (got {line:?})",
                        index + 1
                    ),
                )),
            }
        }
        let mut number = |field: &str, text: &str| -> Option<u64> {
            let text = text.trim();
            if text.is_empty() {
                return None;
            }
            text.parse::<u64>()
                .map_err(|_| {
                    errors.push(FieldError::new(field, format!("{field} must be a whole number (got {text:?})")))
                })
                .ok()
        };
        let min = number("scaling.min", &self.min);
        let max = number("scaling.max", &self.max);
        let target = number("scaling.target_cpu_percent", &self.target_cpu_percent);
        let memory_target = number("scaling.target_memory_percent", &self.target_memory_percent);
        let in_flight_target = number("scaling.target_requests_in_flight", &self.target_requests_in_flight);
        let timeout = number("timeout_s", &self.timeout_s);
        let idle = number("scaling.scale_to_zero_after_s", &self.scale_to_zero_after_s);
        let max_body = number("invoke.max_body_bytes", &self.max_body_bytes);
        let max_in_flight = number("invoke.max_in_flight_per_replica", &self.max_in_flight_per_replica);
        let defaults = ScalingPolicy::default();
        let to_u32 =
            |value: Option<u64>, fallback: u32| value.map_or(fallback, |v| u32::try_from(v).unwrap_or(u32::MAX));
        let or_default =
            |text: String, fallback: String| if text.trim().is_empty() { fallback } else { text.trim().to_string() };
        let default_resources = Resources::default();
        let spec = FunctionSpec {
            name: self.name.trim().to_string(),
            runtime,
            handler: Some(self.handler.trim().to_string()).filter(|h| !h.is_empty()),
            source: if runtime == Language::Image { String::new() } else { self.source },
            requirements: if runtime == Language::Image { String::new() } else { self.requirements },
            image: if runtime == Language::Image {
                Some(self.image.trim().to_string()).filter(|i| !i.is_empty())
            } else {
                None
            },
            registry_secret: Some(self.registry_secret.trim().to_string())
                .filter(|name| runtime == Language::Image && !name.is_empty()),
            env,
            visibility,
            resources: Resources {
                cpu: or_default(self.cpu, default_resources.cpu),
                memory: or_default(self.memory, default_resources.memory),
                cpu_limit: or_default(self.cpu_limit, default_resources.cpu_limit),
                memory_limit: or_default(self.memory_limit, default_resources.memory_limit),
            },
            scaling: ScalingPolicy {
                min: to_u32(min, defaults.min),
                max: to_u32(max, defaults.max),
                target_cpu_percent: target.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
                target_memory_percent: memory_target.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
                target_requests_in_flight: in_flight_target.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
                scale_to_zero_after_s: idle,
            },
            service: ServiceSpec { kind, external_name: None, port: None },
            timeout_s: to_u32(timeout, DEFAULT_TIMEOUT_S),
            invoke: InvokePolicy {
                access,
                max_body_bytes: max_body.unwrap_or(DEFAULT_MAX_BODY_BYTES),
                max_in_flight_per_replica: to_u32(max_in_flight, 0),
            },
            secrets,
        };
        if errors.is_empty() { Ok(spec) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_blank_form_parses_to_a_spec_with_defaults() {
        let mut form = FunctionForm::blank();
        form.name = "hello".into();
        let spec = form.into_spec().expect("parses");
        assert_eq!(spec.runtime, Language::Python);
        assert_eq!(spec.resources, Resources::default());
        assert_eq!(spec.scaling, ScalingPolicy::default());
    }

    #[test]
    fn a_spec_survives_the_form_round_trip() {
        let mut form = FunctionForm::blank();
        form.name = "echo".into();
        form.env = "A=1\nB=two=2\n".into();
        form.scale_to_zero_after_s = "60".into();
        form.min = "0".into();
        let spec = form.into_spec().expect("parses");
        assert_eq!(spec.env.get("B").map(String::as_str), Some("two=2"));
        assert_eq!(FunctionForm::from_spec(&spec).into_spec(), Ok(spec));
    }

    #[test]
    fn unreadable_inputs_are_named() {
        let form = FunctionForm {
            runtime: "ruby".into(),
            env: "NOEQUALS".into(),
            min: "one".into(),
            service_type: "Ingress".into(),
            ..FunctionForm::blank()
        };
        let fields: Vec<String> = form.into_spec().expect_err("invalid").into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["runtime", "service.type", "env", "scaling.min"]);
    }
}
