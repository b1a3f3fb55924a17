//! Unit tests of `http`.

use super::*;

fn headers(values: &[&str]) -> header::HeaderMap {
    let mut h = header::HeaderMap::new();
    for v in values {
        h.append(header::ACCEPT_ENCODING, header::HeaderValue::from_str(v).unwrap());
    }
    h
}

/// Prometheus with `--enable-feature=native-histograms` gets the protobuf form, gzipped
/// as it asks; every other scraper the text.
#[test]
fn the_protobuf_form_when_the_accept_header_asks_for_it() {
    let mut h = header::HeaderMap::new();
    assert_eq!(Asked::of(&h), Asked { form: Form::Text, gzip: false });
    h.insert(
        header::ACCEPT,
        header::HeaderValue::from_static(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
             encoding=delimited;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ),
    );
    h.insert(header::ACCEPT_ENCODING, header::HeaderValue::from_static("gzip"));
    let asked = Asked::of(&h);
    assert_eq!(asked, Asked { form: Form::Native, gzip: true });
    assert!(asked.content_type().starts_with("application/vnd.google.protobuf"));
    h.insert(header::ACCEPT, header::HeaderValue::from_static("text/plain;version=0.0.4"));
    assert_eq!(Asked::of(&h).form, Form::Text);
}

#[test]
fn gzip_when_asked_for_and_not_refused() {
    assert!(accepts_gzip(&headers(&["gzip"])));
    assert!(accepts_gzip(&headers(&["identity, GZIP;q=0.5"])));
    assert!(accepts_gzip(&headers(&["br", "gzip"])));
    assert!(!accepts_gzip(&headers(&[])));
    assert!(!accepts_gzip(&headers(&["br, deflate"])));
    assert!(!accepts_gzip(&headers(&["gzip;q=0"])));
    assert!(!accepts_gzip(&headers(&["xgzip"])));
}

/// Endpoints that count their renders, each taking a while.
struct Slow(std::sync::atomic::AtomicUsize);

impl Endpoints for Slow {
    fn metrics(&self, _: Form, out: &mut dyn std::io::Write) -> Result<(), String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        out.write_all(b"cellwatch_x 1\n").map_err(|e| e.to_string())
    }
    fn connections(&self, _: &Query) -> Result<String, Unanswered> {
        Ok("[]".into())
    }
    fn violations(&self, _: &Query) -> Result<String, Unanswered> {
        Ok("[]".into())
    }
}

/// Scrapes that arrive together share one render per encoding, whatever their number.
#[test]
fn scrapes_that_arrive_together_share_one_render() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = Arc::new(Server {
        endpoints: Arc::new(Slow(std::sync::atomic::AtomicUsize::new(0))),
        ready: Arc::new(AtomicBool::new(true)),
        renders: Renders::default(),
    });
    let bodies = rt.block_on(async {
        let mut all = JoinSet::new();
        for i in 0..20 {
            let s = server.clone();
            all.spawn(async move {
                let form = if i % 4 < 2 { Form::Text } else { Form::Native };
                s.render(Asked { form, gzip: i % 2 == 0 }).await
            });
        }
        let mut bodies = Vec::new();
        while let Some(b) = all.join_next().await {
            bodies.push(b.unwrap().unwrap());
        }
        bodies
    });
    assert_eq!(bodies.len(), 20);
    assert_eq!(server.endpoints.0.load(Ordering::SeqCst), 4, "one render per form and encoding");
    // A later scrape renders anew.
    rt.block_on(server.render(Asked { form: Form::Text, gzip: false })).unwrap();
    assert_eq!(server.endpoints.0.load(Ordering::SeqCst), 5);
}

/// A client that stops reading: the write that waits for it fails after the limit,
/// instead of holding the connection (a real TCP pair on loopback).
#[test]
fn a_write_to_a_client_that_stopped_reading_times_out() {
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (stream, _) = l.accept().await.unwrap();
        let mut w = Timed::new(stream, Duration::from_millis(300));
        let chunk = vec![0u8; 1 << 20];
        let started = std::time::Instant::now();
        let mut failed = None;
        // Bounded: at most 256 MiB, far past any socket buffers.
        for _ in 0..256 {
            if let Err(e) = w.write_all(&chunk).await {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("the writes never stalled");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        drop(client);
    });
}

/// Endpoints whose exposition is one line written many times, in pieces.
struct Repeat(&'static str, usize);

impl Endpoints for Repeat {
    fn metrics(&self, _: Form, out: &mut dyn std::io::Write) -> Result<(), String> {
        for _ in 0..self.1 {
            out.write_all(self.0.as_bytes()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    fn connections(&self, _: &Query) -> Result<String, Unanswered> {
        Ok("[]".into())
    }
    fn violations(&self, _: &Query) -> Result<String, Unanswered> {
        Ok("[]".into())
    }
}

#[test]
fn a_compressed_exposition_inflates_to_the_plain_one() {
    use std::io::Read;
    let e = Repeat("cellwatch_connections_opened_total{src_cell=\"a\"} 1\n", 1000);
    let plain = exposition(&e, Asked { form: Form::Text, gzip: false }).unwrap();
    let gz = exposition(&e, Asked { form: Form::Text, gzip: true }).unwrap();
    assert_eq!(plain.len(), e.0.len() * 1000);
    assert!(gz.len() < plain.len() / 10);
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
    assert_eq!(back, plain);
}
