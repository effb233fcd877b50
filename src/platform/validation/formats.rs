//! Formats users write: CPU and memory quantities as Kubernetes reads them, and image references.

/// Parses a Kubernetes CPU quantity (`250m`, `0.5`, `2`) into millicores.
pub fn parse_cpu_millis(text: &str) -> Option<u64> {
    if let Some(millis) = text.strip_suffix('m') {
        return parse_plain_digits(millis);
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || (whole.is_empty() && fraction.is_empty()) {
        return None;
    }
    let whole = if whole.is_empty() { 0 } else { parse_plain_digits(whole)? };
    let fraction_millis =
        if fraction.is_empty() { 0 } else { parse_plain_digits(fraction)? * 10u64.pow(3 - fraction.len() as u32) };
    whole.checked_mul(1000)?.checked_add(fraction_millis)
}

/// Parses a Kubernetes memory quantity (`128Mi`, `1G`, `1048576`) into bytes.
pub fn parse_memory_bytes(text: &str) -> Option<u64> {
    const SUFFIXES: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|d| (d, *factor)))
        .unwrap_or((text, 1));
    parse_plain_digits(digits)?.checked_mul(factor)
}

pub(super) fn parse_plain_digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether `text` is a container image reference: `[host[:port]/]path[:tag][@sha256:hex]`.
pub fn is_image_reference(text: &str) -> bool {
    if text.is_empty() || text.len() > 255 || text.chars().any(|c| c.is_whitespace()) {
        return false;
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    if let Some(digest) = digest {
        let Some(hex) = digest.strip_prefix("sha256:") else { return false };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return false;
        }
    }
    // A tag is after the last ':' that follows the last '/', so `host:5000/app` has none.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let valid_tag = !tag.is_empty()
            && tag.len() <= 128
            && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.as_bytes()[0] == b'_')
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid_tag {
            return false;
        }
    }
    let mut components: Vec<&str> = path.split('/').collect();
    let first = components[0];
    let has_host = components.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        let (host, port) = first.split_once(':').unwrap_or((first, ""));
        let valid_host = !host.is_empty()
            && host.split('.').all(|part| {
                !part.is_empty()
                    && !part.starts_with('-')
                    && !part.ends_with('-')
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        // An empty port (`host:/app`) fails the digit check too.
        if !valid_host || (first.contains(':') && parse_plain_digits(port).is_none()) {
            return false;
        }
        components.remove(0);
    }
    !components.is_empty() && components.iter().all(|c| is_image_path_component(c))
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
pub(super) fn is_image_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut previous_separator: Option<u8> = None;
    let mut separator_run = 0;
    for &b in bytes {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            previous_separator = None;
            separator_run = 0;
        } else if b"._-".contains(&b) {
            separator_run += 1;
            let allowed = match (previous_separator, b) {
                (None, _) => true,
                (Some(b'_'), b'_') => separator_run == 2,
                (Some(b'-'), b'-') => true,
                _ => false,
            };
            if !allowed {
                return false;
            }
            previous_separator = Some(b);
        } else {
            return false;
        }
    }
    true
}
