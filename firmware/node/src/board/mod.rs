//! The box's own I/O: the push button and the status LED. The logic ([`button`], [`led`])
//! is pure, with time passed in; a [`Board`] reads the contact and lights the LED, and the
//! [`runner`] joins them to the station.
//!
//! Two boards: GPIO on a Raspberry Pi (`rpi` feature, through `rppal`, which is retired
//! upstream; only [`rpi`] names it, so another GPIO crate can replace it there) and a
//! simulated board whose button is pressed through the API and the page.

pub mod button;
pub mod led;
#[cfg(feature = "rpi")]
pub mod rpi;
pub mod runner;
pub mod sim;

/// Where the button and the LED are.
pub trait Board: Send + std::fmt::Debug {
    /// "simulated" or "gpio", for the status.
    fn kind(&self) -> &'static str;
    /// True while the button is held down (the raw contact, bounce and all).
    fn button_down(&mut self) -> std::io::Result<bool>;
    fn set_led(&mut self, on: bool) -> std::io::Result<()>;
    /// The button a person presses through the API, on boards without a real one.
    fn virtual_button(&self) -> Option<sim::VirtualButton> {
        None
    }
}

/// GPIO pins (BCM numbering) of the button and the LED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pins {
    /// To ground, with the internal pull-up: reads low while pressed.
    pub button: u8,
    /// Through a resistor to ground: high lights it.
    pub led: u8,
}

impl Default for Pins {
    fn default() -> Self {
        Self {
            button: 17,
            led: 27,
        }
    }
}

/// The board this build and configuration ask for: GPIO when `gpio` is set (which needs
/// the `rpi` feature), the simulated one otherwise.
pub fn open(gpio: Option<Pins>) -> anyhow::Result<Box<dyn Board>> {
    match gpio {
        None => Ok(Box::new(sim::SimBoard::new())),
        #[cfg(feature = "rpi")]
        Some(pins) => Ok(Box::new(rpi::GpioBoard::open(pins)?)),
        #[cfg(not(feature = "rpi"))]
        Some(_) => anyhow::bail!(
            "GPIO needs cargo feature 'rpi', which this build does not have; \
             use board = \"simulated\""
        ),
    }
}
