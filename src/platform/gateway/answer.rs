//! A function's answer as the gateway hands it on: its body, counted into the metrics when it ends,
//! and the start of it that callers who keep only so much read.

use super::*;

/// A function's answer on its way back; keeps the invocation counted as in flight until the
/// body is sent (or dropped).
pub struct Answer {
    pub(super) body: Incoming,
    pub(super) _in_flight: InFlight,
    /// Counts the request on its replica (and the instance's traffic) until the answer ends.
    pub(super) _outstanding: Option<Outstanding>,
}

impl hyper::body::Body for Answer {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Answer {
    /// Reads the answer's first `keep` bytes and no more (the rest is never buffered: the
    /// connection is dropped), and whether there was more. Whatever kubefn keeps of an answer
    /// (a trigger run, a queued call's result, the invoke panel) is read this way, so a function
    /// streaming gigabytes costs kubefn `keep` bytes.
    pub async fn read_start(mut self, keep: usize) -> Result<AnswerStart, hyper::Error> {
        let mut bytes = Vec::new();
        while let Some(frame) = self.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            let room = keep - bytes.len();
            if data.len() > room {
                bytes.extend_from_slice(&data[..room]);
                return Ok(AnswerStart { bytes, cut: true });
            }
            bytes.extend_from_slice(&data);
        }
        Ok(AnswerStart { bytes, cut: false })
    }
}

/// The start of a function's answer, as [`Answer::read_start`] read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerStart {
    /// At most the bytes asked for.
    pub bytes: Vec<u8>,
    /// Whether the answer went on past them.
    pub cut: bool,
}

impl AnswerStart {
    /// The bytes as text (invalid UTF-8 replaced), ending in `…` when the answer was cut.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.cut {
            text.push('…');
        }
        text
    }
}
