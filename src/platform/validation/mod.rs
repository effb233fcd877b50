//! Pure checks of everything a user sends: names, quantities, image references, specs.
//!
//! Each check names the offending field so the API can answer with `{"error", "field"}` and
//! the form can mark the input. Nothing here touches the store.

use super::model::{FieldError, FunctionSpec, Language, ServiceKind};
use crate::platform::model::Named;

/// Longest function name: leaves room in 63-character Kubernetes names for `-{user}` and a hash.
pub const MAX_FUNCTION_NAME: usize = 40;
/// Longest user name; user names appear in gateway paths and object names.
pub const MAX_USER_NAME: usize = 20;
/// Largest accepted source, in bytes.
pub const MAX_SOURCE_BYTES: usize = 512 * 1024;
/// Largest accepted requirements/package.json, in bytes.
pub const MAX_REQUIREMENTS_BYTES: usize = 64 * 1024;
/// Most environment variables per function.
pub const MAX_ENV_VARS: usize = 100;
/// Largest value of one environment variable, in bytes.
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// Most replicas one instance may scale to.
pub const MAX_REPLICAS: u32 = 100;
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in bytes (hashing cost grows with length).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Environment variable names the runtime sets itself and a function may not override.
const RESERVED_ENV: &[&str] = &["PORT", "HOSTNAME"];
const RESERVED_ENV_PREFIX: &str = "KUBEFN_";

/// Whether `text` is a DNS-1123 label: lowercase letters, digits and `-`, starting with a
/// letter (so it never looks like a number) and ending with a letter or digit.
pub fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Checks a function or user name: a DNS-1123 label of at most `max` characters.
pub fn check_name(field: &str, text: &str, max: usize) -> Result<(), FieldError> {
    if text.is_empty() {
        return Err(FieldError::new(field, format!("{field} is required")));
    }
    if text.len() > max {
        return Err(FieldError::new(field, format!("{field} must be at most {max} characters (got {})", text.len())));
    }
    if !is_dns_label(text) {
        return Err(FieldError::new(
            field,
            format!(
                "{field} must be lowercase letters, digits and '-', start with a letter and end with a letter or digit (got {text:?})"
            ),
        ));
    }
    Ok(())
}

/// Checks a password's length without ever echoing it.
pub fn check_password(password: &str) -> Result<(), FieldError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(FieldError::new("password", format!("password must be at least {MIN_PASSWORD_CHARS} characters")));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(FieldError::new("password", format!("password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// Whether `text` is a portable environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 255
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Whether `text` is a handler name: an identifier, or dotted identifiers (`module.function`).
pub fn is_handler_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_' || bytes[0] == b'$')
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$')
        })
}

/// Whether `text` is a DNS name of dot-separated labels (for `ExternalName` services).
fn is_dns_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Checks a whole function spec and returns every problem found, in field order.
pub fn check_function_spec(spec: &FunctionSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Err(e) = check_name("name", &spec.name, MAX_FUNCTION_NAME) {
        errors.push(e);
    }
    check_code(spec, &mut errors);
    check_env(spec, &mut errors);
    secrets::check_secrets(spec, &mut errors);
    check_resources(spec, &mut errors);
    check_scaling(spec, &mut errors);
    check_service(spec, &mut errors);
    if !(1..=MAX_TIMEOUT_S).contains(&spec.timeout_s) {
        errors.push(FieldError::new(
            "timeout_s",
            format!("timeout_s must be between 1 and {MAX_TIMEOUT_S} seconds (got {})", spec.timeout_s),
        ));
    }
    if !(1..=MAX_BODY_BYTES).contains(&spec.invoke.max_body_bytes) {
        errors.push(FieldError::new(
            "invoke.max_body_bytes",
            format!(
                "invoke.max_body_bytes must be between 1 and {MAX_BODY_BYTES} (1 GiB) (got {})",
                spec.invoke.max_body_bytes
            ),
        ));
    }
    if spec.invoke.max_in_flight_per_replica > MAX_IN_FLIGHT_PER_REPLICA {
        errors.push(FieldError::new(
            "invoke.max_in_flight_per_replica",
            format!(
                "invoke.max_in_flight_per_replica must be at most {MAX_IN_FLIGHT_PER_REPLICA}, or 0 for no limit (got {})",
                spec.invoke.max_in_flight_per_replica
            ),
        ));
    }
    errors
}

/// The largest request body limit a function may set.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// The highest in-flight limit per replica a function may set.
pub const MAX_IN_FLIGHT_PER_REPLICA: u32 = 100_000;

/// The longest invocation timeout, as AWS Lambda's.
pub const MAX_TIMEOUT_S: u32 = 900;

fn check_code(spec: &FunctionSpec, errors: &mut Vec<FieldError>) {
    if let Some(handler) = &spec.handler
        && !is_handler_name(handler)
    {
        errors.push(FieldError::new(
                "handler",
                format!("handler must be an identifier such as handle or main.handler (got {handler:?}); leave it empty to detect one"),
            ));
    }
    match spec.runtime {
        Language::Python | Language::Node => {
            if spec.source.trim().is_empty() {
                errors.push(FieldError::new(
                    "source",
                    format!("source is required for a {} function", spec.runtime.as_str()),
                ));
            } else if spec.source.len() > MAX_SOURCE_BYTES {
                errors.push(FieldError::new(
                    "source",
                    format!(
                        "source must be at most {} KiB (got {} KiB)",
                        MAX_SOURCE_BYTES / 1024,
                        spec.source.len().div_ceil(1024)
                    ),
                ));
            }
            if spec.image.is_some() {
                errors.push(FieldError::new(
                    "image",
                    "image is only for functions with runtime \"image\"; remove it or change the runtime",
                ));
            }
            if spec.service.port.is_some() {
                errors.push(FieldError::new(
                    "service.port",
                    "service.port is only for image functions; source functions listen on the bootstrap's port",
                ));
            }
        }
        Language::Image => {
            match &spec.image {
                None => {
                    errors.push(FieldError::new("image", "image is required for a function with runtime \"image\""))
                }
                Some(image) if !is_image_reference(image) => errors.push(FieldError::new(
                    "image",
                    format!("image must be a reference such as registry.example.com/team/app:1.2 (got {image:?})"),
                )),
                Some(_) => {}
            }
            if !spec.source.is_empty() {
                errors.push(FieldError::new(
                    "source",
                    "source must be empty for an image function; the image carries the code",
                ));
            }
            if !spec.requirements.is_empty() {
                errors.push(FieldError::new(
                    "requirements",
                    "requirements must be empty for an image function; the image carries its dependencies",
                ));
            }
            if spec.service.port == Some(0) {
                errors.push(FieldError::new("service.port", "service.port must be between 1 and 65535"));
            }
        }
    }
    if spec.requirements.len() > MAX_REQUIREMENTS_BYTES {
        errors.push(FieldError::new(
            "requirements",
            format!("requirements must be at most {} KiB", MAX_REQUIREMENTS_BYTES / 1024),
        ));
    }
    let refused = match spec.runtime {
        Language::Python => check_python_requirements(&spec.requirements),
        Language::Node if !spec.requirements.trim().is_empty() => check_package_json(&spec.requirements),
        _ => Ok(()),
    };
    if let Err(message) = refused {
        errors.push(FieldError::new("requirements", message));
    }
}

/// requirements.txt may name packages from the index with versions, extras, markers and
/// `--hash` pins, nothing else: options (`-r`, `-e`, `--index-url`, …) would point pip at
/// files, indexes or code of the author's choosing, and so would paths and URLs.
pub fn check_python_requirements(text: &str) -> Result<(), String> {
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.split(" #").next().unwrap_or_default().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('-') {
            let option = line.split([' ', '=']).next().unwrap_or(line);
            return Err(format!(
                "requirements line {number}: the option {option} is not allowed; list packages by name and version (indexes are kubefn's to choose)"
            ));
        }
        if line.contains(['\\', '$']) {
            return Err(format!("requirements line {number}: line continuations and variables are not allowed"));
        }
        // `pkg==1.0 --hash=sha256:…` pins are fine; any other trailing option is not.
        let (requirement, options) = line.split_at(line.find(" -").unwrap_or(line.len()));
        if let Some(option) = options.split_whitespace().find(|option| !option.starts_with("--hash=")) {
            return Err(format!("requirements line {number}: only --hash may follow a requirement (got {option:?})"));
        }
        let before_markers = requirement.split(';').next().unwrap_or(requirement);
        let requirement = before_markers.trim();
        let name_ok = requirement.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !name_ok || before_markers.contains(['/', '@', ':']) {
            return Err(format!(
                "requirements line {number}: {requirement:?} is not a package name with an optional version; local paths and URLs are not allowed"
            ));
        }
    }
    Ok(())
}

/// package.json must be an object whose dependencies come from the registry: `file:`,
/// `link:`, git, GitHub shorthands, URLs and workspaces would install files or code of the
/// author's choosing. (Install scripts never run: npm runs with `--ignore-scripts`.)
pub fn check_package_json(text: &str) -> Result<(), String> {
    let package: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("requirements of a node function must be a package.json object: {e}"))?;
    if package.contains_key("workspaces") {
        return Err("requirements: workspaces are not allowed in package.json".into());
    }
    for section in ["dependencies", "optionalDependencies", "peerDependencies", "devDependencies", "overrides"] {
        let Some(entries) = package.get(section) else { continue };
        let entries = entries
            .as_object()
            .ok_or_else(|| format!("requirements: {section} must be an object of package names and versions"))?;
        for (name, version) in entries {
            let version =
                version.as_str().ok_or_else(|| format!("requirements: {section}.{name} must be a version string"))?;
            let spec = version.trim();
            let target = spec.strip_prefix("npm:").unwrap_or(spec);
            let local_or_remote = [
                "file:",
                "link:",
                "git",
                "github:",
                "gitlab:",
                "bitbucket:",
                "gist:",
                "http:",
                "https:",
                ".",
                "/",
                "~/",
            ]
            .iter()
            .any(|prefix| target.starts_with(prefix));
            // `user/repo` is GitHub; a scoped alias (`npm:@scope/pkg@1`) is the registry's.
            let shorthand = target.contains('/') && !target.starts_with('@');
            if local_or_remote || shorthand || target.contains("://") {
                return Err(format!(
                    "requirements: {section}.{name} = {version:?} is not a registry version; file:, link:, git, URL and path dependencies are not allowed"
                ));
            }
        }
    }
    Ok(())
}

fn check_env(spec: &FunctionSpec, errors: &mut Vec<FieldError>) {
    if spec.env.len() > MAX_ENV_VARS {
        errors.push(FieldError::new(
            "env",
            format!("env may hold at most {MAX_ENV_VARS} variables (got {})", spec.env.len()),
        ));
    }
    for (name, value) in &spec.env {
        let field = format!("env.{name}");
        if !is_env_name(name) {
            errors.push(FieldError::new(
                field,
                format!(
                    "environment variable name {name:?} must be letters, digits and '_', not starting with a digit"
                ),
            ));
        } else if RESERVED_ENV.contains(&name.as_str()) || name.starts_with(RESERVED_ENV_PREFIX) {
            errors.push(FieldError::new(
                field,
                format!("environment variable {name} is set by kubefn itself and cannot be overridden"),
            ));
        } else if value.len() > MAX_ENV_VALUE_BYTES {
            errors.push(FieldError::new(
                field,
                format!("environment variable {name} must be at most {} KiB", MAX_ENV_VALUE_BYTES / 1024),
            ));
        }
    }
}

fn check_resources(spec: &FunctionSpec, errors: &mut Vec<FieldError>) {
    let r = &spec.resources;
    let cpu = [("resources.cpu", &r.cpu), ("resources.cpu_limit", &r.cpu_limit)].map(|(field, text)| {
        let parsed = parse_cpu_millis(text).filter(|m| *m > 0);
        if parsed.is_none() {
            errors.push(FieldError::new(
                field,
                format!("{field} must be a CPU quantity above zero such as 100m or 0.5 (got {text:?})"),
            ));
        }
        parsed
    });
    if let [Some(request), Some(limit)] = cpu
        && request > limit
    {
        errors.push(FieldError::new(
            "resources.cpu",
            format!("resources.cpu ({}) must not exceed resources.cpu_limit ({})", r.cpu, r.cpu_limit),
        ));
    }
    let memory = [("resources.memory", &r.memory), ("resources.memory_limit", &r.memory_limit)].map(|(field, text)| {
        let parsed = parse_memory_bytes(text).filter(|b| *b >= 4 << 20);
        if parsed.is_none() {
            errors.push(FieldError::new(
                field,
                format!("{field} must be a memory quantity of at least 4Mi such as 128Mi or 1Gi (got {text:?})"),
            ));
        }
        parsed
    });
    if let [Some(request), Some(limit)] = memory
        && request > limit
    {
        errors.push(FieldError::new(
            "resources.memory",
            format!("resources.memory ({}) must not exceed resources.memory_limit ({})", r.memory, r.memory_limit),
        ));
    }
}

fn check_scaling(spec: &FunctionSpec, errors: &mut Vec<FieldError>) {
    let s = &spec.scaling;
    if s.max == 0 || s.max > MAX_REPLICAS {
        errors.push(FieldError::new(
            "scaling.max",
            format!("scaling.max must be between 1 and {MAX_REPLICAS} (got {})", s.max),
        ));
    }
    if s.min > s.max {
        errors.push(FieldError::new(
            "scaling.min",
            format!("scaling.min ({}) must not exceed scaling.max ({})", s.min, s.max),
        ));
    }
    for (field, target) in [
        ("scaling.target_cpu_percent", s.target_cpu_percent),
        ("scaling.target_memory_percent", s.target_memory_percent),
    ] {
        if let Some(percent) = target
            && (percent == 0 || percent > 1000)
        {
            errors.push(FieldError::new(
                field,
                format!("{field} must be between 1 and 1000 percent of the request (got {percent})"),
            ));
        }
    }
    if let Some(target) = s.target_requests_in_flight
        && !(1..=10_000).contains(&target)
    {
        errors.push(FieldError::new(
            "scaling.target_requests_in_flight",
            format!("scaling.target_requests_in_flight must be between 1 and 10000 (got {target})"),
        ));
    }
    if let Some(idle) = s.scale_to_zero_after_s {
        if !(10..=7 * 24 * 3600).contains(&idle) {
            errors.push(FieldError::new(
                "scaling.scale_to_zero_after_s",
                format!("scaling.scale_to_zero_after_s must be between 10 and 604800 seconds (got {idle})"),
            ));
        }
        if s.min > 0 {
            errors.push(FieldError::new("scaling.min", "scaling.min must be 0 when scale_to_zero_after_s is set"));
        }
    }
}

fn check_service(spec: &FunctionSpec, errors: &mut Vec<FieldError>) {
    match (spec.service.kind, &spec.service.external_name) {
        (ServiceKind::ExternalName, None) => errors.push(FieldError::new(
            "service.external_name",
            "service.external_name is required for an ExternalName service",
        )),
        (ServiceKind::ExternalName, Some(name)) if !is_dns_name(name) => errors.push(FieldError::new(
            "service.external_name",
            format!("service.external_name must be a DNS name such as api.example.com (got {name:?})"),
        )),
        (ServiceKind::ExternalName, Some(_)) => {}
        (_, Some(_)) => errors.push(FieldError::new(
            "service.external_name",
            "service.external_name is only for the ExternalName service type",
        )),
        (_, None) => {}
    }
}

mod formats;
mod secrets;
pub use secrets::MAX_SECRETS_PER_FUNCTION;

pub use formats::{MILLICORE, is_image_reference, parse_cpu_millis, parse_memory_bytes, quantity_in};

#[cfg(test)]
mod tests;
