//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) at the gateway: an invocation
//! continues the caller's trace when its `traceparent` is valid and starts one otherwise. The
//! gateway is a hop of its own, so the function receives a `traceparent` naming the gateway's
//! span as its parent, and the invocation log names the trace.

use super::*;

/// The `traceparent` header.
pub(super) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header: vendors' data, passed on only with a valid `traceparent`.
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// One invocation's place in a trace: the trace, the gateway's own span and the caller's span
/// (none when the gateway started the trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace's id, never zero.
    pub trace_id: u128,
    /// The gateway's span for this invocation, the function's parent, never zero.
    pub span_id: u64,
    /// The caller's span, when the caller sent a valid `traceparent`.
    pub parent_id: Option<u64>,
    /// The trace flags (bit 0: sampled); a trace the gateway starts is sampled.
    pub flags: u8,
}

impl TraceContext {
    /// The caller's trace continued from `headers`, or a new one; the headers then carry the
    /// gateway's span as the function's parent (a `tracestate` goes with an invalid or missing
    /// `traceparent`, as the specification asks).
    pub fn stamp(headers: &mut HeaderMap) -> TraceContext {
        let span_id = nonzero(fastrand::u64(..));
        let trace = match headers.get(TRACEPARENT).and_then(|value| parse(value.as_bytes())) {
            Some((trace_id, parent_id, flags)) => TraceContext { trace_id, span_id, parent_id: Some(parent_id), flags },
            None => {
                headers.remove(TRACESTATE);
                TraceContext { trace_id: nonzero(fastrand::u128(..)), span_id, parent_id: None, flags: 1 }
            }
        };
        if let Ok(value) = HeaderValue::from_bytes(&trace.traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
        trace
    }

    /// The `traceparent` the function receives: version 00, this trace, the gateway's span
    /// (written in place: this runs on every call).
    pub fn traceparent(&self) -> [u8; 55] {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&mut text[3..35], self.trace_id);
        write_hex(&mut text[36..52], u128::from(self.span_id));
        write_hex(&mut text[53..55], u128::from(self.flags));
        text
    }
}

/// The `tracing` target of the invocation log: one line per invocation the function answered
/// (or failed to), with its trace. At `info` for answers, at `warn` for 5xx and failures; the
/// default log filter (`KUBEFN_LOG`) keeps only the warnings, `invocations=info` adds the rest.
pub const INVOCATION_LOG: &str = "invocations";

/// Writes the invocation log line of one call: the function's status, or why it gave none.
pub(super) fn log_invocation(
    trace: &TraceContext,
    target: (&str, &str),
    elapsed: Duration,
    outcome: Result<http::StatusCode, &GatewayError>,
) {
    let (user, function) = target;
    let trace_id = LowerHex32(trace.trace_id);
    let span_id = LowerHex16(trace.span_id);
    let ms = elapsed.as_secs_f64() * 1000.0;
    match outcome {
        Ok(status) if !status.is_server_error() => {
            let status = status.as_u16();
            tracing::info!(target: INVOCATION_LOG, %trace_id, %span_id, user, function, status, ms, "invoked");
        }
        Ok(status) => {
            let status = status.as_u16();
            tracing::warn!(target: INVOCATION_LOG, %trace_id, %span_id, user, function, status, ms, "invoked");
        }
        Err(error) => {
            tracing::warn!(target: INVOCATION_LOG, %trace_id, %span_id, user, function, ms, %error, "invocation failed");
        }
    }
}

/// A trace id as Trace Context writes it, formatted only when the line is written.
struct LowerHex32(u128);

impl std::fmt::Display for LowerHex32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A span id as Trace Context writes it.
struct LowerHex16(u64);

impl std::fmt::Display for LowerHex16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Writes the low `4 * into.len()` bits of `value` into `into` as lowercase hex.
fn write_hex(into: &mut [u8], mut value: u128) {
    for digit in into.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// A random id that is not zero (zero means "invalid" in Trace Context).
fn nonzero<T: PartialEq + From<u8>>(id: T) -> T {
    if id == T::from(0) { T::from(1) } else { id }
}

/// Reads `version-traceid-parentid-flags`: lowercase hex of 2, 32, 16 and 2 digits; version `ff`
/// is invalid, version 00 is exactly 55 characters, and a later version may append `-…` fields;
/// all-zero ids are invalid.
fn parse(text: &[u8]) -> Option<(u128, u64, u8)> {
    let text = std::str::from_utf8(text).ok()?;
    let version = text.get(..2)?;
    if !is_lower_hex(version) || version == "ff" || text.len() < 55 || (version == "00" && text.len() != 55) {
        return None;
    }
    if text.len() > 55 && text.as_bytes()[55] != b'-' {
        return None;
    }
    let fields = (text.get(2..3)?, text.get(3..35)?, text.get(35..36)?, text.get(36..52)?, text.get(52..53)?);
    let (dash1, trace_id, dash2, parent_id, dash3) = fields;
    let flags = text.get(53..55)?;
    if [dash1, dash2, dash3] != ["-"; 3] || ![trace_id, parent_id, flags].iter().all(|field| is_lower_hex(field)) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace_id, 16).ok().filter(|id| *id != 0)?;
    let parent_id = u64::from_str_radix(parent_id, 16).ok().filter(|id| *id != 0)?;
    Some((trace_id, parent_id, u8::from_str_radix(flags, 16).ok()?))
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::super::tests::header_map;
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_the_gateway_as_the_new_parent() {
        let mut h = header_map(&[("traceparent", CALLER), ("tracestate", "vendor=x")]);
        let trace = TraceContext::stamp(&mut h);
        assert_eq!(trace.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(trace.parent_id, Some(0x00f067aa0ba902b7));
        assert_eq!(trace.flags, 1);
        let sent = h.get(TRACEPARENT).and_then(|v| v.to_str().ok()).expect("traceparent");
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{sent}");
        assert_ne!(&sent[36..52], "00f067aa0ba902b7", "the gateway's own span");
        assert_eq!(h.get(TRACESTATE).and_then(|v| v.to_str().ok()), Some("vendor=x"));
        // Unsampled stays unsampled; a later version's extra fields are ignored.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes-next";
        let trace = TraceContext::stamp(&mut header_map(&[("traceparent", later)]));
        assert_eq!((trace.flags, trace.parent_id), (0, Some(0x00f067aa0ba902b7)));
    }

    #[test]
    fn without_a_valid_traceparent_a_sampled_trace_starts_and_tracestate_goes() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for text in bad {
            let mut h = header_map(&[("traceparent", text), ("tracestate", "vendor=x")]);
            let trace = TraceContext::stamp(&mut h);
            assert_eq!((trace.parent_id, trace.flags), (None, 1), "{text:?}");
            assert_ne!(trace.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736, "{text:?}");
            assert!(h.get(TRACESTATE).is_none(), "{text:?}");
            let sent = h.get(TRACEPARENT).and_then(|v| v.to_str().ok()).expect("traceparent");
            assert_eq!(parse(sent.as_bytes()), Some((trace.trace_id, trace.span_id, 1)), "{sent}");
            assert_eq!(sent, format!("00-{:032x}-{:016x}-01", trace.trace_id, trace.span_id));
        }
        let mut none = HeaderMap::new();
        let first = TraceContext::stamp(&mut none);
        let second = TraceContext::stamp(&mut HeaderMap::new());
        assert_ne!(first.trace_id, second.trace_id, "every call starts its own trace");
    }
}
