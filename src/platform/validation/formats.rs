//! Formats users write: CPU and memory quantities as Kubernetes reads them, and image references.

/// A CPU quantity as Kubernetes reads it (`250m`, `0.5`, `2`, `1e3`) in millicores, a fraction of
/// a millicore rounded up as the API server rounds it.
pub fn parse_cpu_millis(text: &str) -> Option<u64> {
    quantity_in(text, MILLICORE).and_then(round_up)
}

/// A memory quantity as Kubernetes reads it (`128Mi`, `1.5Gi`, `1G`, `1e9`, `1048576`) in bytes,
/// a fraction of a byte rounded up.
pub fn parse_memory_bytes(text: &str) -> Option<u64> {
    quantity_in(text, 1.0).and_then(round_up)
}

/// One millicore, in cores: the unit [`quantity_in`] takes for CPU.
pub const MILLICORE: f64 = 1e-3;

/// A non-negative Kubernetes quantity in multiples of `unit` (1 for bytes, [`MILLICORE`] for
/// millicores), unrounded: metrics report CPU in nanocores (`12345678n`).
///
/// The parsing is [`kube_quantity`]'s. It reads the number with a float parser, which also takes
/// what the API server refuses, so those shapes are refused here first: no digit at all (`Ki`),
/// `inf` or `nan`, a sign other than `+` before the number, and an exponent followed by a suffix
/// (`1e3Ki`).
pub fn quantity_in(text: &str, unit: f64) -> Option<f64> {
    let number = text.strip_prefix('+').unwrap_or(text);
    if !number.starts_with(|c: char| c.is_ascii_digit() || c == '.') || !number.contains(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let has_exponent = number.char_indices().any(|(i, c)| {
        matches!(c, 'e' | 'E') && number[i + 1..].starts_with(|d: char| d.is_ascii_digit() || d == '+' || d == '-')
    });
    if has_exponent && !number.ends_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let quantity = kube_quantity::ParsedQuantity::try_from(number).ok()?;
    let value = quantity.to_bytes_f64()? / unit;
    (value.is_finite() && value >= 0.0).then_some(value)
}

/// `value` rounded up to a whole unit, as Kubernetes rounds a quantity finer than its unit; the
/// float noise of a decimal scaled by a power of ten (`4.35` cores is 4350 millicores, not 4351)
/// is not a fraction. `None` past 2^53, where whole numbers stop being exact in an `f64`.
fn round_up(value: f64) -> Option<u64> {
    const EXACT_INTEGERS: f64 = (1u64 << 53) as f64;
    let nearest = value.round();
    let whole = if (value - nearest).abs() <= value * 1e-12 { nearest } else { value.ceil() };
    (whole <= EXACT_INTEGERS).then_some(whole as u64)
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
