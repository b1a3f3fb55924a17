//! Unit tests of `fetch`.

use super::*;

/// A server that sends more than the bound is refused, not read whole.
#[test]
fn an_answer_past_the_bound_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = [0u8; 256];
            let _ = s.read(&mut head).await;
            let body = vec![b'x'; 4096];
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            let _ = s.write_all(&body).await;
        });
        let e = request_at_most(addr, "h", "/", Duration::from_secs(5), 1024).await;
        let e = e.err().expect("refused");
        assert!(e.to_string().contains("larger than 1024 bytes"), "{e}");
        let _ = server.await;
    });
}

fn parts(url: &str) -> (String, u16, String) {
    split_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[test]
fn urls() {
    assert_eq!(parts("http://127.0.0.1:9473"), ("127.0.0.1".into(), 9473, String::new()));
    assert_eq!(parts("http://127.0.0.1:9473/"), ("127.0.0.1".into(), 9473, String::new()));
    assert_eq!(parts("127.0.0.1:1"), ("127.0.0.1".into(), 1, String::new()));
    assert_eq!(parts("HTTP://[::1]:9/agent/"), ("::1".into(), 9, "/agent".into()));
    assert_eq!(parts("http://localhost"), ("localhost".into(), 80, String::new()));
    assert_eq!(parts("http://prom:9090/prometheus"), ("prom".into(), 9090, "/prometheus".into()));
    for bad in ["https://x:1", "http://:1", "http://x:port", "http://[::1:9"] {
        assert!(split_url(bad).is_err(), "{bad}");
    }
}

/// A server that answers one request with `raw`, and the request it read.
fn serve_once(raw: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = vec![0u8; 4096];
        let n = s.read(&mut req).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        String::from_utf8_lossy(&req[..n]).into_owned()
    });
    (addr, t)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn answers_of_any_status() {
    let (addr, t) = serve_once("HTTP/1.1 400 Bad Request\r\nX: y\r\n\r\n{\"status\":\"error\"}");
    let a = rt()
        .block_on(request(addr, "prom:9090", "/api/v1/query?query=up", Duration::from_secs(5)))
        .unwrap();
    assert_eq!((a.status, a.status_line.as_str()), (400, "HTTP/1.1 400 Bad Request"));
    assert_eq!(a.body, "{\"status\":\"error\"}");
    assert_eq!(t.join().unwrap(), "GET /api/v1/query?query=up HTTP/1.0\r\nHost: prom:9090\r\n\r\n");

    let (addr, _t) = serve_once("HTTP/1.0 404 Not Found\r\n\r\nno");
    let e = rt().block_on(get(addr, "/metrics", Duration::from_secs(5))).unwrap_err();
    assert_eq!(e.to_string(), "answered `HTTP/1.0 404 Not Found`: no", "with its sentence");
    let (addr, _t) = serve_once("HTTP/1.0 200 OK\r\n\r\nbody");
    assert_eq!(rt().block_on(get(addr, "/metrics", Duration::from_secs(5))).unwrap(), "body");
    let (addr, _t) = serve_once("");
    let e = rt().block_on(get(addr, "/metrics", Duration::from_secs(5))).unwrap_err();
    assert_eq!(e.to_string(), "answered `nothing`");
}
