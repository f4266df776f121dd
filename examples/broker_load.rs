//! Load driver for `scripts/bench` (not a test): N concurrent clients ask the
//! broker for a token over its unix socket, one request per connection (as the
//! helper does), for a fixed time; reports requests per second and latency.
//!
//! Std only, threads and blocking sockets, so the driver itself is cheap next
//! to the broker it measures.
//!
//! Usage: broker_load --socket PATH --registry HOST [--clients 64] [--seconds 10]
//! Prints one JSON line: {"clients":..,"requests":..,"errors":..,"rps":..,"p50_us":..,"p99_us":..}

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut socket, mut registry, mut clients, mut seconds) =
        (String::new(), String::new(), 64usize, 10u64);
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--socket", Some(v)) => socket = v.clone(),
            ("--registry", Some(v)) => registry = v.clone(),
            ("--clients", Some(v)) => clients = v.parse().expect("--clients N"),
            ("--seconds", Some(v)) => seconds = v.parse().expect("--seconds N"),
            (other, _) => panic!("unknown option {other}"),
        }
    }
    let request = format!(
        "GET /v1/token?registry={registry} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    );
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (socket, request) = (socket.clone(), request.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut buf = Vec::with_capacity(8192);
                while Instant::now() < until {
                    let t = Instant::now();
                    buf.clear();
                    let ok = UnixStream::connect(&socket)
                        .and_then(|mut s| {
                            s.write_all(request.as_bytes())?;
                            s.read_to_end(&mut buf)
                        })
                        .is_ok()
                        && buf.starts_with(b"HTTP/1.1 200");
                    if ok {
                        lat.push(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().expect("client thread");
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"clients\":{clients},\"requests\":{},\"errors\":{errors},\"rps\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}
