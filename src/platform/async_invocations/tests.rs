//! Unit tests of the parent module.

use super::*;

#[test]
fn failures_worth_retrying_are_retried_with_doubling_waits_until_the_last_attempt() {
    let now = Utc::now();
    let answered =
        |status: u16| Ok(Answered { status, body: b"body".to_vec(), content_type: Some("text/plain".into()) });
    let ok = attempt_result(1, answered(200), now);
    assert_eq!((ok.state, ok.status, ok.finished_at), (AsyncState::Succeeded, Some(200), Some(now)));
    let crashed = attempt_result(1, answered(500), now);
    assert_eq!(crashed.state, AsyncState::Queued);
    assert_eq!(crashed.next_attempt_at, Some(now + chrono::Duration::seconds(1)));
    assert_eq!(attempt_result(3, answered(429), now).next_attempt_at, Some(now + chrono::Duration::seconds(4)));
    let unavailable = attempt_result(2, Err(NoAnswer::new(true, "the instance is Paused")), now);
    assert_eq!(
        (unavailable.state, unavailable.next_attempt_at),
        (AsyncState::Queued, Some(now + chrono::Duration::seconds(2)))
    );
    assert!(unavailable.error.contains("attempt 2: the instance is Paused"));
    assert_eq!(attempt_result(MAX_ATTEMPTS, answered(503), now).state, AsyncState::Failed, "the last attempt");
    let refused = attempt_result(1, answered(400), now);
    assert_eq!(
        (refused.state, refused.next_attempt_at),
        (AsyncState::Failed, None),
        "a 4xx will not change by retrying"
    );
    assert_eq!(attempt_result(1, Err(NoAnswer::new(false, "gone")), now).state, AsyncState::Failed);
}

#[test]
fn callback_urls_are_absolute_http() {
    assert!(check_callback_url("http://127.0.0.1:9000/done?x=1").is_ok());
    for bad in ["https://example.com/", "/relative", "ftp://x/", "not a url", "http://"] {
        let error = check_callback_url(bad).expect_err(bad);
        assert_eq!(error.field, "X-Callback-Url");
    }
}
