//! Unit tests of `alertmanager`: the webhook's reading of a request, and its config.

use super::*;

fn read(raw: &str) -> io::Result<Vec<u8>> {
    read_request(&mut raw.as_bytes())
}

#[test]
fn a_post_s_body_is_read_by_its_length_or_its_chunks() {
    let body = r#"{"status":"firing","alerts":[]}"#;
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(read(&raw).unwrap(), body.as_bytes());
    let raw = format!(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        10,
        &body[..10],
        body.len() - 10,
        &body[10..]
    );
    assert_eq!(read(&raw).unwrap(), body.as_bytes());
}

#[test]
fn anything_else_is_refused() {
    for raw in [
        "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\n\r\n{}",
        "POST / HTTP/1.1\r\nContent-Length: nine\r\n\r\n{}",
        "POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{}",
        "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}",
        "POST / HTTP/1.1\r\nno colon\r\n\r\n{}",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\n",
        "",
    ] {
        assert!(read(raw).is_err(), "{raw:?} was read");
    }
}

#[test]
fn the_config_sends_each_alert_quickly_with_its_resolution() {
    let c = config(4242);
    for line in [
        "group_by: ['...']",
        "group_wait: 1s",
        "group_interval: 1s",
        "repeat_interval: 1h",
        "url: http://127.0.0.1:4242/",
        "send_resolved: true",
    ] {
        assert!(c.contains(line), "{line} missing from:\n{c}");
    }
}
