//! Joins a board to the station: samples the button every 10 ms, acts on presses, and
//! drives the LED from the station's state. Runs on a thread of its own, so a busy async
//! runtime never delays a press or a blink.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::button::{Button, ButtonEvent, Press};
use super::led::{Led, Overlay};
use super::Board;
use crate::station::Station;

/// How often the contact is sampled: well under the 30 ms debounce.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How often the network interfaces are looked at.
const NETWORK_EVERY: Duration = Duration::from_secs(1);

/// What the very long press does; `run` passes one that resets the configuration.
pub type ResetAction = Box<dyn Fn() + Send>;

/// Starts the runner thread; it lives as long as the process.
pub fn spawn(
    board: Box<dyn Board>,
    station: Arc<Station>,
    reset: ResetAction,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    station.attach_board(board.kind(), board.virtual_button());
    std::thread::Builder::new()
        .name("board".into())
        .spawn(move || run(board, &station, reset))
}

fn run(mut board: Box<dyn Board>, station: &Arc<Station>, reset: ResetAction) {
    let mut button = Button::new();
    let mut led = Led::new(Instant::now());
    let mut lit = None;
    let mut network = (false, Instant::now() - NETWORK_EVERY);
    let mut warned = false;
    loop {
        let now = Instant::now();
        let down = board.button_down().unwrap_or_else(|e| {
            if !warned {
                tracing::warn!("cannot read the button: {e}");
                warned = true;
            }
            false
        });
        if let Some(ev) = button.sample(now, down) {
            on_button(ev, now, station, &mut led, &reset);
        }
        if now.duration_since(network.1) >= NETWORK_EVERY {
            network = (!addresses().is_empty(), now);
        }
        if let Some(o) = station.take_led_request() {
            led.show(now, o);
        }
        led.update(now, &station.led_inputs(network.0));
        let level = led.level(now);
        if lit != Some(level) {
            if let Err(e) = board.set_led(level) {
                tracing::warn!("cannot set the LED: {e}");
            }
            lit = Some(level);
        }
        station.show_led(led.view(now));
        let wake = led.next_change(now).min(now + SAMPLE_EVERY);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
}

fn on_button(
    ev: ButtonEvent,
    now: Instant,
    station: &Arc<Station>,
    led: &mut Led,
    reset: &ResetAction,
) {
    match ev {
        ButtonEvent::Reached(Press::Long) => led.show(now, Overlay::LongReached),
        ButtonEvent::Reached(Press::VeryLong) => led.show(now, Overlay::VeryLongReached),
        ButtonEvent::Reached(Press::Short) => {}
        ButtonEvent::Released(press) => {
            led.clear_overlay();
            tracing::info!(?press, "button");
            station.audit(
                crate::audit::Record::new("button", "box button")
                    .detail(format!("{press:?} press")),
            );
            match press {
                Press::Short => {
                    // Opening a camera can take a while: not on this thread.
                    let st = station.clone();
                    std::thread::spawn(move || {
                        let want = !st.is_live();
                        if let Err(e) = st.set_live(want) {
                            tracing::warn!("button: cannot go live: {e}");
                        }
                    });
                }
                Press::Long => {
                    let digits = announced_digits(&addresses());
                    tracing::info!(?digits, "button: announcing the address by LED");
                    led.show(now, Overlay::Digits(digits));
                }
                Press::VeryLong => reset(),
            }
        }
    }
}

/// The box's addresses other than loopback and IPv6 link-local, IPv4 first.
pub fn addresses() -> Vec<IpAddr> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = ifaddrs
        .filter(|i| {
            i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
                && !i
                    .flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|i| {
            let a = i.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
            IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    out.sort_by_key(|ip| ip.is_ipv6());
    out
}

/// The digits a long press blinks: the last number of the first IPv4 address (a person
/// who knows the LAN's prefix can then open `http://<prefix>.<digits>:8080`); a single 0
/// (ten flashes) when the box has no IPv4 address.
pub fn announced_digits(addrs: &[IpAddr]) -> Vec<u8> {
    let Some(v4) = addrs.iter().find_map(|a| match a {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    }) else {
        return vec![0];
    };
    v4.octets()[3]
        .to_string()
        .bytes()
        .map(|b| b - b'0')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_ipv4_number_is_announced() {
        let a: Vec<IpAddr> = vec!["fd00::5".parse().unwrap(), "192.168.1.107".parse().unwrap()];
        assert_eq!(announced_digits(&a), vec![1, 0, 7]);
        assert_eq!(announced_digits(&a[..1]), vec![0]);
        assert_eq!(announced_digits(&[]), vec![0]);
    }
}
