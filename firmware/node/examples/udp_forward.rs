//! The reference for the relay-cost benchmark (scripts/bench): the cheapest possible
//! relay, plain UDP datagrams forwarded by a socket2 socket, plus a paced sender and a sink.
//!
//!   udp_forward relay LISTEN TO        forward every datagram from LISTEN to TO
//!   udp_forward send TO KBITS SECONDS  send 1200-byte datagrams at KBITS kbit/s
//!   udp_forward sink LISTEN            receive and count until killed

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

fn socket(bind: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(4 << 20)?;
    s.bind(&bind.into())?;
    Ok(s.into())
}

fn addr(s: Option<&String>) -> SocketAddr {
    s.and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage("an address like 127.0.0.1:5000"))
}

fn usage(what: &str) -> ! {
    eprintln!("udp_forward: expected {what}; usage: relay LISTEN TO | send TO KBITS SECONDS | sink LISTEN");
    std::process::exit(2)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut buf = vec![0u8; 65536];
    match args.first().map(String::as_str) {
        Some("relay") => {
            let s = socket(addr(args.get(1)))?;
            let to = addr(args.get(2));
            loop {
                let n = s.recv(&mut buf)?;
                s.send_to(&buf[..n], to)?;
            }
        }
        Some("send") => {
            let to = addr(args.get(1));
            let kbits: u64 = args
                .get(2)
                .and_then(|k| k.parse().ok())
                .filter(|k| *k > 0)
                .unwrap_or_else(|| usage("KBITS > 0"));
            let secs: u64 = args
                .get(3)
                .and_then(|k| k.parse().ok())
                .unwrap_or_else(|| usage("SECONDS"));
            let s = socket(
                "127.0.0.1:0"
                    .parse()
                    .unwrap_or_else(|_| usage("an address")),
            )?;
            let per_packet = Duration::from_secs_f64(1200.0 * 8.0 / (kbits as f64 * 1000.0));
            let start = Instant::now();
            let mut sent = 0u32;
            while start.elapsed() < Duration::from_secs(secs) {
                s.send_to(&buf[..1200], to)?;
                sent += 1;
                let due = per_packet * sent;
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(())
        }
        Some("sink") => {
            let s = socket(addr(args.get(1)))?;
            loop {
                s.recv(&mut buf)?;
            }
        }
        _ => usage("a mode"),
    }
}
